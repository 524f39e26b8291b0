"""An annotation session: several objects on one image, each segmented from clicks.

::

    session = AnnotationSession.from_model(model, image, image_info={"name": "cat"})
    session.add_click(120, 200)                  # positive click on object 1 -> bool mask
    session.add_click(40, 10, positive=False)
    session.undo()
    session.next_object()                        # object 2 starts
    session.add_click(300, 50)
    files = session.export("annotations/")       # PNG per object, COCO JSON (RLE), click JSON

    again = AnnotationSession.from_model(model, image)
    again.load_clicks(files.clicks)              # replays the clicks: the same masks

The session drives one :class:`~icmformer.evaluation.predictor.Predictor`: the image is set once,
so its encoding is reused by every click of every object (a new encoding happens only when the
zoom-in crop changes; :attr:`AnnotationSession.encode_count` counts them).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from icmformer.evaluation.clicker import Click
from icmformer.interactive.io import check_clicks_inside, clicks_document, parse_objects, read_clicks_file
from icmformer.interactive.io import model_info as describe_model


@dataclass
class AnnotatedObject:
    """One object: its clicks, current mask and probability map, and the seconds each click took."""

    clicks: list[Click] = field(default_factory=list)
    mask: np.ndarray | None = None
    prob: np.ndarray | None = None
    latencies_s: list[float] = field(default_factory=list)

    @property
    def num_clicks(self) -> int:
        return len(self.clicks)

    @property
    def area(self) -> int:
        return 0 if self.mask is None else int(self.mask.sum())


@dataclass
class ExportedFiles:
    """Paths written by :meth:`AnnotationSession.export`."""

    masks: list[Path]
    coco: Path
    clicks: Path

    def all(self) -> list[Path]:
        return [*self.masks, self.coco, self.clicks]


def _safe_stem(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name)).strip("._")
    return keep or "image"


class AnnotationSession:
    """Click-to-segment annotation of several objects on one image.

    Args:
        predictor: an :class:`~icmformer.evaluation.predictor.Predictor` (any object with
            ``set_image``, ``add_click(y, x, positive) -> (mask, prob)``, ``undo()``, ``reset()``,
            ``last_latency_s``).
        image: ``H x W x 3`` uint8 RGB.
        image_info: where the image came from (``file``, ``name``, ``dataset``, ``index``); written
            to the click file; ``name`` is the default stem of exported files.
        model_info: written to the click file (default: from ``predictor.model``).
    """

    def __init__(self, predictor, image: np.ndarray, image_info: dict | None = None, model_info: dict | None = None) -> None:
        self.predictor = predictor
        predictor.set_image(image)
        self.image = image
        self.image_info = dict(image_info or {})
        model = getattr(predictor, "model", None)
        self.model_info = dict(model_info) if model_info is not None else (describe_model(model) if model is not None else {})
        self.objects: list[AnnotatedObject] = [AnnotatedObject()]
        self.current_index = 0
        self._written: set[Path] = set()

    @classmethod
    def from_model(
        cls,
        model,
        image: np.ndarray,
        image_info: dict | None = None,
        device: str | None = None,
        zoom_in: bool = True,
        flip: bool = True,
        target_size: int | None = None,
    ) -> "AnnotationSession":
        """A session on a new :class:`~icmformer.evaluation.predictor.Predictor` for ``model``."""
        from icmformer.evaluation.predictor import Predictor

        return cls(Predictor(model, device=device, zoom_in=zoom_in, flip=flip, target_size=target_size), image, image_info)

    # ------------------------------------------------------------------------ state
    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def current(self) -> AnnotatedObject:
        return self.objects[self.current_index]

    @property
    def annotated(self) -> list[AnnotatedObject]:
        """The objects that have at least one click (what export writes)."""
        return [o for o in self.objects if o.clicks]

    @property
    def masks(self) -> list[np.ndarray]:
        """One bool ``H x W`` mask per annotated object."""
        return [o.mask for o in self.annotated]

    @property
    def last_latency_s(self) -> float | None:
        """Seconds the last click took (prediction only), ``None`` before the first click."""
        return getattr(self.predictor, "last_latency_s", None)

    @property
    def encode_count(self) -> int | None:
        """How many times the image branch was encoded so far (one per distinct zoom-in crop)."""
        n = getattr(self.predictor, "encode_count", None)
        return None if n is None else int(n)

    @property
    def predictor_info(self) -> dict:
        return dict(getattr(self.predictor, "settings", {}))

    def label_map(self) -> np.ndarray:
        """``H x W`` int32: 0 background, ``k`` where annotated object ``k`` (1-based) is; later
        objects overwrite earlier ones where they overlap."""
        out = np.zeros(self.image_size, np.int32)
        for k, m in enumerate(self.masks, start=1):
            out[m] = k
        return out

    def summary(self) -> str:
        """One line: the current object, its clicks, the last latency and the encode count."""
        obj = self.current
        npos = sum(c.is_positive for c in obj.clicks)
        parts = [
            f"object {self.current_index + 1} of {len(self.objects)}",
            f"{obj.num_clicks} click{'s' if obj.num_clicks != 1 else ''} ({npos}+ {obj.num_clicks - npos}-)",
            f"mask {obj.area} px",
        ]
        if obj.latencies_s:
            parts.append(f"last click {obj.latencies_s[-1]:.3f} s")
        if self.encode_count is not None:
            parts.append(f"image encodings {self.encode_count}")
        return " | ".join(parts)

    # ------------------------------------------------------------------------ editing
    def add_click(self, y: int, x: int, positive: bool = True) -> np.ndarray:
        """Add a click to the current object; returns its new bool mask."""
        mask, prob = self.predictor.add_click(y, x, positive)
        obj = self.current
        clicks = getattr(self.predictor, "clicks", None)
        obj.clicks = list(clicks) if clicks is not None else obj.clicks + [Click(bool(positive), (int(y), int(x)), len(obj.clicks))]
        obj.mask, obj.prob = np.asarray(mask, bool), prob
        obj.latencies_s.append(float(self.last_latency_s or 0.0))
        return obj.mask

    def undo(self) -> np.ndarray | None:
        """Remove the current object's last click. On an empty object after the first, drop it
        and go back to the previous object (its clicks are replayed so undo continues there).
        Returns the current object's mask (``None`` without clicks)."""
        obj = self.current
        if obj.clicks:
            mask, prob = self.predictor.undo()
            obj.clicks.pop()
            obj.latencies_s.pop()
            obj.mask, obj.prob = (np.asarray(mask, bool), prob) if obj.clicks else (None, None)
        elif self.current_index > 0:
            del self.objects[self.current_index]
            self.current_index -= 1
            self._replay_current()
        return self.current.mask

    def reset(self) -> None:
        """Remove all clicks of the current object."""
        self.predictor.reset()
        obj = self.current
        obj.clicks, obj.mask, obj.prob, obj.latencies_s = [], None, None, []

    def next_object(self) -> int:
        """Finish the current object and start a new one (no-op if the current one has no click);
        returns the index of the current object."""
        if self.current.clicks:
            self.objects.append(AnnotatedObject())
            self.current_index = len(self.objects) - 1
            self.predictor.reset()
        return self.current_index

    def clear(self) -> None:
        """Forget every object (the image and its encoding stay)."""
        self.predictor.reset()
        self.objects = [AnnotatedObject()]
        self.current_index = 0

    def _replay_current(self) -> None:
        obj = self.current
        self.predictor.reset()
        mask = prob = None
        for c in obj.clicks:
            mask, prob = self.predictor.add_click(c.coords[0], c.coords[1], c.is_positive)
        obj.mask = None if mask is None else np.asarray(mask, bool)
        obj.prob = prob

    # ------------------------------------------------------------------------ replay / resume
    def replay(self, objects: Any) -> list[np.ndarray]:
        """Annotate from clicks: ``objects`` is anything :func:`~icmformer.interactive.io.parse_objects`
        accepts (one click list, one list per object, or a click file's dict). The objects are
        added after the existing ones; returns the session's masks."""
        objs = parse_objects(objects)
        for k, clicks in enumerate(objs):
            check_clicks_inside(clicks, self.image_size, f"object {k + 1}: click")
        for clicks in objs:
            if not clicks:
                continue
            self.next_object()
            for c in clicks:
                self.add_click(c.coords[0], c.coords[1], c.is_positive)
        return self.masks

    def load_clicks(self, path: str | Path) -> list[np.ndarray]:
        """Resume from a click file written by :meth:`export`: forget the current objects, replay
        the file's objects (the image size must match) and continue with a new empty object."""
        doc = read_clicks_file(path)
        info = doc.get("image") or {}
        if "height" in info and "width" in info and (int(info["height"]), int(info["width"])) != self.image_size:
            raise ValueError(
                f"{path}: the clicks were made on a {info['height']}x{info['width']} (HxW) image, "
                f"this image is {self.image_size[0]}x{self.image_size[1]}"
            )
        self.clear()
        masks = self.replay(doc)
        self.next_object()
        return masks

    # ------------------------------------------------------------------------ export
    def to_clicks_document(self, mask_files: Sequence[str] | None = None) -> dict:
        """The click file's content for the annotated objects."""
        extra = []
        for k, o in enumerate(self.annotated):
            e: dict[str, Any] = {"area": o.area, "latency_s": [round(t, 6) for t in o.latencies_s]}
            if mask_files is not None:
                e["mask_file"] = mask_files[k]
            extra.append(e)
        return clicks_document(
            [o.clicks for o in self.annotated], self.image_size, self.image_info, self.model_info, self.predictor_info, extra
        )

    def to_coco(self, file_name: str | None = None, category: str = "object") -> dict:
        """A COCO-style dict: one image, one annotation per object with an RLE ``segmentation``
        (pycocotools ``mask.encode``; ``counts`` as a str), ``area``, ``bbox`` ``[x, y, w, h]``."""
        from pycocotools import mask as mask_utils

        h, w = self.image_size
        name = file_name or self.image_info.get("file") or self.image_info.get("name") or "image"
        anns = []
        for k, o in enumerate(self.annotated, start=1):
            rle = mask_utils.encode(np.asfortranarray(o.mask.astype(np.uint8)))
            anns.append({
                "id": k, "image_id": 1, "category_id": 1, "iscrowd": 0,
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": int(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "num_clicks": o.num_clicks,
            })  # fmt: skip
        return {
            "info": {"description": "icmformer interactive annotation", "model": self.model_info},
            "images": [{"id": 1, "file_name": str(Path(str(name)).name), "height": h, "width": w}],
            "annotations": anns,
            "categories": [{"id": 1, "name": category}],
        }

    def export(self, out_dir: str | Path, stem: str | None = None, overwrite: bool = False) -> ExportedFiles:
        """Write ``<stem>_object_<k>.png`` (0/255, one per annotated object), ``<stem>_coco.json``
        and ``<stem>_clicks.json`` to ``out_dir``.

        Files this session wrote before are replaced (a re-export; stale object PNGs of an earlier
        export are removed); other existing files raise ``FileExistsError`` unless ``overwrite``.
        """
        from PIL import Image

        if not self.annotated:
            raise ValueError("nothing to export: no object has a click yet")
        out_dir = Path(out_dir)
        stem = _safe_stem(stem or self.image_info.get("name") or "image")
        masks = [out_dir / f"{stem}_object_{k}.png" for k in range(1, len(self.annotated) + 1)]
        coco, clicks = out_dir / f"{stem}_coco.json", out_dir / f"{stem}_clicks.json"
        targets = [*masks, coco, clicks]
        clash = [p for p in targets if p.exists() and p.resolve() not in self._written]
        if clash and not overwrite:
            raise FileExistsError(
                f"not overwriting existing {', '.join(str(p) for p in clash)}; choose another output "
                "directory or stem, or pass overwrite=True"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        for p, o in zip(masks, self.annotated):
            Image.fromarray(o.mask.astype(np.uint8) * 255).save(p)
        coco.write_text(json.dumps(self.to_coco(), indent=1))
        clicks.write_text(json.dumps(self.to_clicks_document([p.name for p in masks]), indent=1))
        new = {p.resolve() for p in targets}
        for stale in self._written - new:
            if stale.name.startswith(f"{stem}_object_") and stale.exists():
                stale.unlink()
        self._written = (self._written - {s for s in self._written if not s.exists()}) | new
        return ExportedFiles(masks, coco, clicks)
