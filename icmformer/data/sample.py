"""The record every dataset reader returns: one image with its instance masks."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Sample:
    """One image and the masks of its annotated objects.

    Attributes:
        image: ``H x W x 3`` ``uint8`` RGB.
        masks: one ``H x W`` ``int32`` mask per object: ``1`` object, ``0`` background,
            ``-1`` ignore (never counted in IoU, never clicked).
        name: a stable identifier of the image inside its dataset (file stem or id).
        image_path: where the image came from (for error messages and records).
        mask_paths: where each mask came from (same order as ``masks``; may repeat a path when
            one file holds several instances).
        instance_ids: a stable id per object (e.g. ``"2008_000123#2"``), same order as ``masks``.
    """

    image: np.ndarray
    masks: list[np.ndarray]
    name: str
    image_path: Path | None = None
    mask_paths: list[Path] = field(default_factory=list)
    instance_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"{self.image_path or self.name}: image must be H x W x 3 uint8, "
                f"got shape {self.image.shape} dtype {self.image.dtype}"
            )
        h, w = self.image.shape[:2]
        for i, m in enumerate(self.masks):
            if m.shape != (h, w):
                src = self.mask_paths[i] if i < len(self.mask_paths) else f"mask {i}"
                raise ValueError(
                    f"{src}: mask size {m.shape[1]}x{m.shape[0]} (WxH) differs from its image "
                    f"{self.image_path or self.name} ({w}x{h})"
                )
        if not self.instance_ids:
            self.instance_ids = [f"{self.name}#{i}" for i in range(len(self.masks))]
        elif len(self.instance_ids) != len(self.masks):
            raise ValueError(f"{self.name}: {len(self.instance_ids)} instance ids for {len(self.masks)} masks")
