"""params.yaml is composed from ``conf/`` (Hydra), as ``dvc exp run -S ...`` does; notebook
parameters are read with :func:`as_bool` / :func:`as_list`.

``python -m icmformer.pipeline.params [profile=paper] [key=value ...]`` rewrites params.yaml;
the committed params.yaml is the composition with the default profile (a test keeps them equal).
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def as_bool(value, default: bool | None = None) -> bool | None:
    """A notebook parameter as a bool: ``True``/``False`` or the words papermill and dvc pass
    (true/false, yes/no, on/off, 1/0, any case); ``None`` or ``""`` give ``default``. Anything
    else raises ``ValueError`` naming the value (no silent ``False``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, yes/no, on/off, 1/0), got {value!r}")


def as_list(value) -> list[str]:
    """A comma-separated notebook parameter as a list of stripped, non-empty strings."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [t.strip() for t in str(value or "").split(",") if t.strip()]


HEADER = (
    "# GENERATED from conf/ (Hydra): edit conf/config.yaml and conf/profile/*.yaml, then run\n"
    "#   python -m icmformer.pipeline.params            (default profile: demo)\n"
    "# `dvc exp run -S profile=paper` composes it the same way.\n"
)


def compose(overrides: list[str] | None = None, conf_dir: str | Path = "conf") -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
    return OmegaConf.to_container(cfg, resolve=True)


def main(argv: list[str] | None = None) -> int:
    params = compose(sys.argv[1:] if argv is None else argv)
    Path("params.yaml").write_text(HEADER + yaml.safe_dump(params, sort_keys=False))
    print(f"wrote params.yaml (profile {params.get('profile')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
