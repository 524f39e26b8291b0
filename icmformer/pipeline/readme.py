"""Refresh the README's results section from the regenerated tables.

``python -m icmformer.pipeline.readme`` replaces the text between ``<!-- results:start -->`` and
``<!-- results:end -->`` in README.md with ``results/tables/table{1..5}.md`` (what the last
``dvc repro`` wrote) and links to the figures. ``tests/test_pipeline.py`` fails when the README
and the tables disagree, so the README never shows stale numbers.
"""
from __future__ import annotations

import sys
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"
TABLES = ["table1", "table2", "table3", "table4", "table5"]
FIGURES = [
    ("fig4_miou_vs_clicks.png", "Fig. 4: mIoU vs clicks"),
    ("noc_distribution.png", "NoC@90 per instance"),
    ("fig5_click_by_click.png", "Fig. 5: click by click"),
    ("fig6_multi_part.png", "Fig. 6: objects with disconnected parts"),
    ("attention_maps.png", "cross-attention of the click token"),
]


def render(results: str | Path = "results") -> str:
    results = Path(results)
    parts = [START, ""]
    for t in TABLES:
        path = results / "tables" / f"{t}.md"
        if path.exists():
            parts += [path.read_text().replace("## ", "#### ", 1).rstrip(), ""]
    for name, caption in FIGURES:
        if (results / "figures" / name).exists():
            parts += [f"![{caption}](results/figures/{name})", ""]
    parts.append(END)
    return "\n".join(parts)


def refresh(readme: str | Path = "README.md", results: str | Path = "results") -> bool:
    """Rewrite the block; returns True if README.md changed."""
    readme = Path(readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + render(results) + tail
    if new != text:
        readme.write_text(new)
        return True
    return False


if __name__ == "__main__":
    changed = refresh()
    print("README.md updated" if changed else "README.md already up to date")
    sys.exit(0)
