"""The pipeline's ``data`` stage: make sure the datasets and weights a profile needs are there.

For each dataset the profile needs, in order:

1. it is already under the data root (``data/<Name>``): use it;
2. a local mirror holds it (``mirrors`` in params.yaml, e.g. ``../shared/data`` on CI): link
   ``data/<Name>`` to it (a relative symlink; nothing is copied);
3. ``download: true`` and a public archive exists: download and unpack it into the data root;
4. otherwise the stage stops **before any long work** with one message listing every missing
   dataset / weights file, where it was expected and where to get it.

Then every dataset is read with its reader (counts of images and instances, checked against the
public release where known) and fingerprinted: when the set ships a ``MANIFEST.txt``
(``sha256  size  path``) every file is checked against it, otherwise a SHA-256 over the sorted
file list and contents is computed. The result is the stage's output ``manifest.json``; the
later stages depend on it, so a changed dataset re-runs the evaluation.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

#: the public archives (RITM's README, "Datasets")
ARCHIVES = {
    "GrabCut": "https://github.com/saic-vul/fbrs_interactive_segmentation/releases/download/v1.0/GrabCut.zip",
    "Berkeley": "https://github.com/saic-vul/fbrs_interactive_segmentation/releases/download/v1.0/Berkeley.zip",
    "DAVIS": "https://github.com/saic-vul/fbrs_interactive_segmentation/releases/download/v1.0/DAVIS.zip",
    "COCO_MVal": "https://github.com/saic-vul/fbrs_interactive_segmentation/releases/download/v1.0/COCO_MVal.zip",
}
MANUAL = {
    "SBD": "http://home.bharathh.info/pubs/codes/SBD/download.html (unpack benchmark.tgz so that data/SBD/dataset/{img,inst,train.txt,val.txt} exist)",
    "PascalVOC": "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (JPEGImages, SegmentationObject, ImageSets/Segmentation/val.txt)",
    "cocolvis": "COCO 2017 train/val images + RITM's cocolvis_annotation.tar.gz "
    "(https://github.com/saic-vul/ritm_interactive_segmentation/releases/download/v1.0/cocolvis_annotation.tar.gz)",
}
#: (images, instances) of the public releases
EXPECTED_COUNTS = {"GrabCut": (50, 50), "Berkeley": (100, 100), "DAVIS": (345, 345), "COCO_MVal": (800, 800)}
#: weights files the paper profile needs (data/weights/...), and where they come from
WEIGHTS_SOURCES = {
    "mae_pretrain_vit_base.pth": "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
    "swin_base_patch4_window12_384_22k.pth": "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_base_patch4_window12_384_22k.pth",
    "swin_small_patch4_window7_224.pth": "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_small_patch4_window7_224.pth",
}


def _how_to_get(name: str) -> str:
    if name in ARCHIVES:
        return f"download {ARCHIVES[name]} and unzip it into the data root (or set data.download: true)"
    return MANUAL.get(name, "see data/README.md")


def _link(target: Path, source: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(source.resolve(), target.parent.resolve())
    target.symlink_to(rel, target_is_directory=True)


def _download(name: str, root: Path, progress: bool = True) -> None:
    url = ARCHIVES[name]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / f"{name}.zip"
        print(f"downloading {url}")
        with urllib.request.urlopen(url, timeout=60) as r, open(archive, "wb") as f:  # noqa: S310 (fixed https URLs)
            shutil.copyfileobj(r, f)
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ValueError(f"{url}: refusing unsafe path {member!r} in the archive")
            z.extractall(tmp)
        unpacked = next((p for p in Path(tmp).iterdir() if p.is_dir() and p.name.lower() == name.lower()), None)
        if unpacked is None:
            raise ValueError(f"{url}: the archive holds no {name}/ folder")
        unpacked.rename(root / name)


def fingerprint(folder: Path, max_content_bytes: int = 2 * 2**30) -> dict:
    """Check ``MANIFEST.txt`` when present, else hash the folder's files (sorted by path); sets
    larger than ``max_content_bytes`` (COCO+LVIS) are fingerprinted by paths and sizes."""
    manifest = folder / "MANIFEST.txt"
    if manifest.is_file():
        bad = []
        n = 0
        for line in manifest.read_text().splitlines():
            if not line.strip():
                continue
            digest, _size, rel = line.split("  ", 2)
            path = folder / rel
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                bad.append(rel)
            n += 1
        if bad:
            raise ValueError(f"{folder}: {len(bad)} of {n} files differ from MANIFEST.txt (e.g. {', '.join(bad[:3])})")
        return {"method": "MANIFEST.txt verified", "files": n, "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    by_content = total <= max_content_bytes
    for p in files:
        h.update(str(p.relative_to(folder)).encode())
        h.update(p.read_bytes() if by_content else str(p.stat().st_size).encode())
    method = "sha256 of sorted paths and contents" if by_content else "sha256 of sorted paths and sizes (large set)"
    return {"method": method, "files": len(files), "bytes": total, "sha256": h.hexdigest()}


def prepare_data(datasets: list[str], root: str | Path = "data", mirrors: list[str] | None = None,
                 weights: list[str] | None = None, download: bool = False, verify: bool = True) -> dict:  # fmt: skip
    """Ensure ``datasets`` (and ``weights`` files under ``root/weights``) are available; return the manifest."""
    from icmformer.data.datasets import get_dataset

    root = Path(root)
    mirrors = [Path(m) for m in (mirrors or [])]
    missing: list[str] = []
    sources: dict[str, str] = {}
    for name in datasets:
        target = root / name
        if target.is_symlink() and not target.exists():
            target.unlink()  # a dangling link from an earlier run
        if not target.is_dir():
            mirror = next((m / name for m in mirrors if (m / name).is_dir()), None)
            if mirror is not None:
                _link(target, mirror)
            elif download and name in ARCHIVES:
                _download(name, root)
            else:
                missing.append(f"  - dataset {name}: expected at {target}; get it: {_how_to_get(name)}")
                continue
        # describe the state, not how we got there, so a re-run gives the same manifest
        sources[name] = f"link to {os.readlink(target)}" if target.is_symlink() else "folder in the data root"
    for w in weights or []:
        path = root / "weights" / w
        if not path.is_file():
            src = WEIGHTS_SOURCES.get(w, "see data/README.md")
            missing.append(f"  - weights {w}: expected at {path}; get it: {src}")
    if missing:
        where = ", ".join(str(m) for m in mirrors) or "none"
        raise FileNotFoundError(
            f"the pipeline needs data that is not under the data root {root} (mirrors searched: {where}):\n"
            + "\n".join(missing)
            + "\nSet data.root / data.mirrors in params.yaml (or `dvc exp run -S data.root=/path`), see data/README.md."
        )
    out = {"root": str(root), "datasets": {}, "weights": {}}
    from icmformer.data.datasets import list_datasets

    readers = {n.lower() for n in list_datasets()}
    for name in datasets:
        entry = {"source": sources[name]}
        if name.lower() not in readers:  # a training-only set (e.g. cocolvis): presence and fingerprint
            if verify:
                entry["fingerprint"] = fingerprint(root / name)
            out["datasets"][name] = entry
            continue
        ds = get_dataset(name, root)
        n_images, n_instances = len(ds), ds.num_instances
        entry.update(images=n_images, instances=n_instances)
        if name in EXPECTED_COUNTS and (n_images, n_instances) != EXPECTED_COUNTS[name]:
            raise ValueError(
                f"{root / name}: {n_images} images / {n_instances} instances, but the public release has "
                f"{EXPECTED_COUNTS[name][0]} / {EXPECTED_COUNTS[name][1]}: incomplete or different data"
            )
        if verify:
            entry["fingerprint"] = fingerprint(root / name)
        out["datasets"][name] = entry
    for w in weights or []:
        path = root / "weights" / w
        out["weights"][w] = {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return out
