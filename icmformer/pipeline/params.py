"""params.yaml is composed from ``conf/`` (Hydra), as ``dvc exp run -S ...`` does.

``python -m icmformer.pipeline.params [profile=paper] [key=value ...]`` rewrites params.yaml;
the committed params.yaml is the composition with the default profile (a test keeps them equal).
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

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
