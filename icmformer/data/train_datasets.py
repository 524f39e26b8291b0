"""Training datasets: (image, target mask, clicks) items of the training size.

Readers
    * :class:`SBDTrainDataset` -- SBD in RITM's layout: ``<root>/img/<name>.jpg``,
      ``<root>/inst/<name>.mat`` (``GTinst.Segmentation``, an instance-id map), ``<root>/<split>.txt``
      (``root`` may be the ``SBD`` folder or its ``dataset`` subfolder). As RITM, objects whose
      area is below ``buggy_mask_thresh`` (0.08) of their bounding box are dropped as annotation
      bugs. A value 255 in the map (VOC-style "void", not expected in SBD) would become ignore.
    * :class:`CocoLvisTrainDataset` -- RITM's combined COCO+LVIS form:
      ``<root>/<split>/images/<id>.jpg``, ``<root>/<split>/masks/<id>.pickle`` and
      ``<root>/<split>/hannotation.pickle`` (details below).
    * :class:`FolderTrainDataset` -- an evaluation-style folder (``img/`` + ``gt/``, one instance
      per mask file, paired by file stem, e.g. COCO_MVal); :class:`SampleTrainDataset` takes any
      indexable sequence of :class:`~icmformer.data.sample.Sample` instead.

RITM's COCO+LVIS format (as read here)
    ``hannotation.pickle``: ``{image_id: {"num_instance_masks": N, "hierarchy": {inst_id: None
    or {"parent": id | None, "children": [ids], ...}}}}``; entries are sorted by image id.
    ``masks/<image_id>.pickle``: ``(encoded_layers, objs_mapping)`` where ``encoded_layers`` is a
    list of PNG-encoded ``uint8`` arrays (``cv2.imencode``), each an id map, and
    ``objs_mapping[inst_id] = (layer_index, mask_id)``. Ids ``0..N-1`` are object instances
    (``hierarchy`` gives their parent/child relations); ids ``N..`` are "stuff" regions, which
    become target candidates with probability ``stuff_prob`` per image and are otherwise erased
    (turned into background). Only root objects (no parent) are targets (RITM without
    ``use_hierarchy``); children still count as annotated pixels for "other" negatives.
    **Security:** these are pickles, so they are read with :func:`load_restricted_pickle`, an
    unpickler that only resolves builtins containers/scalars and numpy arrays/dtypes/scalars and
    refuses any other global (so a crafted file cannot run code).

Sampling (RITM's ``ISDataset.__getitem__``)
    1. an image: uniformly at random when ``epoch_len > 0`` (the epoch is ``epoch_len`` draws),
       from the optional per-image weights (RITM's ``samples_scores_path``: probability
       ``(1 - score) ** gamma``), or item ``i`` = image ``i`` when ``epoch_len <= 0``;
    2. augmentation, repeated until at least one object has a pixel in the crop, or -- with
       probability ``keep_background_prob`` per try -- the empty crop is kept (after
       ``max_augment_tries`` tries the last crop is kept, with a warning and a count in
       ``self.stats``);
    3. objects smaller than ``min_object_area`` pixels *in the crop* stop being targets (their
       pixels remain "other object" pixels for negative clicks, as in RITM);
    4. :class:`~icmformer.data.points_sampler.MultiPointSampler` picks the target (possibly merged
       objects) and the clicks.

Determinism: each item uses ``numpy.random.default_rng([seed, epoch, index])`` (image choice,
stuff draw, augmentation seed, sampler), so an item depends only on ``(seed, epoch, index)``:
a resumed run, or any worker split, sees the same samples. Call :meth:`TrainDataset.set_epoch`
before iterating each epoch (a ``DataLoader`` copies the dataset into its workers when the
iterator is created, so do not use ``persistent_workers=True`` with changing epochs).

Items are dicts: ``image`` ``3 x H x W`` float32 in [0, 1]; ``gt`` ``1 x H x W`` float32 with
``1``/``0``/``-1``; ``clicks`` ``2P x 3`` float32 (layout of :mod:`icmformer.data.points_sampler`);
``image_index`` (int, the source image).
"""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from icmformer.data.augment import Augmenter
from icmformer.data.imageio import IMAGE_EXTENSIONS, ImageTooLargeError, probe_image, read_image, read_mask_raw
from icmformer.data.imageio import MASK_EXTENSIONS as _MASK_EXTENSIONS
from icmformer.data.points_sampler import MultiPointSampler
from icmformer.data.sample import Sample
from icmformer.safe_pickle import load_pickle

# one extension list for the package; JPEG masks are accepted for training (binarised at 128 with
# a LossyMaskWarning naming the file), never for evaluation
MASK_EXTENSIONS = _MASK_EXTENSIONS + (".jpg", ".jpeg")

# ----------------------------------------------------------------------------- restricted pickle
# One exact allowlist for every pickle the package reads (builtins containers, numpy arrays):
# icmformer.safe_pickle; a refused global raises ValueError naming it, nothing from the file runs.
load_restricted_pickle = load_pickle


# ----------------------------------------------------------------------------- reading helpers

def read_instance_mask(path: str | Path) -> np.ndarray:
    """One-instance mask file -> ``int32`` ``1``/``0``/``-1``: 0 background, 128 ignore (GrabCut), other values object.

    A lossy (JPEG) mask is binarised at 128 first, with a warning naming the file."""
    m = read_mask_raw(path, lossy="threshold")
    if m.ndim == 3:
        m = m.max(axis=2)
    out = (m > 0).astype(np.int32)
    out[m == 128] = -1
    return out


def _labels_with_sizes(layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, counts = np.unique(layer, return_counts=True)
    keep = ids != 0
    return ids[keep], counts[keep]


# ----------------------------------------------------------------------------- instance layers

@dataclass
class InstanceLayers:
    """The annotated objects of one training image (RITM's ``DSample``).

    Attributes:
        image: ``H x W x 3`` uint8 RGB.
        layers: ``H x W x L`` int32 id maps (0 = nothing); objects of one layer do not overlap.
        objects: ``obj_id -> {"mapping": (layer, value), "parent": id | None, "children": [ids],
            "ignore": (layer, value) | None, "area": int}``; ``ignore`` is an object's own ignore
            region (e.g. GrabCut's band), ``area`` is filled by :meth:`compute_areas`.
        ignore_regions: ``(layer, value)`` regions ignored for every object.
        name: identifier for messages.
        aux_regions: ``(layer, value)`` regions that are no object (the objects' own ignore
            regions); they do not count as annotated pixels in :meth:`background_mask`.
    """

    image: np.ndarray
    layers: np.ndarray
    objects: dict[int, dict[str, Any]]
    ignore_regions: list[tuple[int, int]] = field(default_factory=list)
    name: str = ""
    aux_regions: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.objects)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[:2])  # type: ignore[return-value]

    @property
    def root_objects(self) -> list[int]:
        return [k for k, v in self.objects.items() if v["parent"] is None]

    # -- construction
    @classmethod
    def from_sample(cls, sample: Sample) -> "InstanceLayers":
        """Pack a :class:`Sample`'s masks into layers (greedy: first layer without overlap)."""
        h, w = sample.image.shape[:2]
        layers: list[np.ndarray] = []
        next_ids: list[int] = []

        def place(region: np.ndarray) -> tuple[int, int]:
            for li, layer in enumerate(layers):
                if not layer[region].any():
                    v = next_ids[li]
                    next_ids[li] += 1
                    layer[region] = v
                    return li, v
            layers.append(np.zeros((h, w), np.int32))
            next_ids.append(2)
            layers[-1][region] = 1
            return len(layers) - 1, 1

        objects: dict[int, dict[str, Any]] = {}
        aux: list[tuple[int, int]] = []
        for i, m in enumerate(sample.masks):
            mapping = place(m == 1)
            ign = m == -1
            own_ignore = place(ign) if ign.any() else None
            if own_ignore is not None:
                aux.append(own_ignore)
            objects[i] = {"mapping": mapping, "parent": None, "children": [], "ignore": own_ignore}
        stack = np.stack(layers, axis=2) if layers else np.zeros((h, w, 1), np.int32)
        return cls(sample.image, stack, objects, [], sample.name, aux)

    # -- masks
    def _region(self, mapping: tuple[int, int]) -> np.ndarray:
        layer, value = mapping
        return self.layers[:, :, layer] == value

    def object_mask(self, obj_id: int) -> np.ndarray:
        """``H x W`` int32: ``1`` object, ``0`` background, ``-1`` ignored (own + global regions)."""
        obj = self.objects[obj_id]
        mask = self._region(obj["mapping"]).astype(np.int32)
        if obj.get("ignore") is not None:
            mask[self._region(obj["ignore"])] = -1
        for reg in self.ignore_regions:
            mask[self._region(reg)] = -1
        return mask

    def background_mask(self) -> np.ndarray:
        """Pixels covered by no object (RITM's ``get_background_mask``: no layer value, here not
        counting ignore regions; objects removed as too small still count, as in RITM)."""
        occupied = self.layers != 0
        for layer, value in list(self.ignore_regions) + list(self.aux_regions):
            occupied[:, :, layer] &= self.layers[:, :, layer] != value
        return ~occupied.any(axis=2)

    def ignore_mask(self) -> np.ndarray | None:
        """Union of the global ignore regions, or ``None``."""
        if not self.ignore_regions:
            return None
        out = np.zeros(self.shape, bool)
        for reg in self.ignore_regions:
            out |= self._region(reg)
        return out

    # -- bookkeeping (RITM's _compute_objects_areas / remove_small_objects)
    def compute_areas(self) -> None:
        counts: dict[tuple[int, int], int] = {}
        for li in range(self.layers.shape[2]):
            ids, sizes = _labels_with_sizes(self.layers[:, :, li])
            counts.update({(li, int(i)): int(s) for i, s in zip(ids, sizes)})
        for obj in self.objects.values():
            obj["area"] = counts.get(tuple(obj["mapping"]), 0)

    def remove_object(self, obj_id: int) -> None:
        obj = self.objects.pop(obj_id)
        parent = obj["parent"]
        for child in obj["children"]:
            if child in self.objects:
                self.objects[child]["parent"] = parent
        if parent is not None and parent in self.objects:
            kids = [c for c in self.objects[parent]["children"] if c != obj_id]
            self.objects[parent]["children"] = kids + list(obj["children"])

    def remove_small_objects(self, min_area: int) -> int:
        """Drop objects with fewer than ``min_area`` pixels (areas computed if missing); returns how many."""
        if any("area" not in o for o in self.objects.values()):
            self.compute_areas()
        small = [k for k, o in self.objects.items() if o["area"] < min_area]
        for k in small:
            self.remove_object(k)
        return len(small)

    def augmented(self, augmenter: Augmenter, seed: int) -> "InstanceLayers":
        """A new, augmented copy: objects without pixels left are removed (RITM's ``augment``)."""
        image, layers, filled = augmenter.augment(self.image, self.layers, seed=seed)
        if layers.ndim == 2:
            layers = layers[..., None]
        ignore_regions = list(self.ignore_regions)
        if augmenter.mask_pad_value == -1:
            # layers cannot hold -1 ids: padded pixels become a global ignore region instead
            layers[filled] = 0
            if filled.any():
                layers = np.concatenate([layers, filled[..., None].astype(np.int32)], axis=2)
                ignore_regions.append((layers.shape[2] - 1, 1))
        out = InstanceLayers(image, layers, deepcopy(self.objects), ignore_regions, self.name, list(self.aux_regions))
        for obj in out.objects.values():
            obj.pop("area", None)
        out.compute_areas()
        out.remove_small_objects(1)
        return out


class _RootMasks(Sequence):
    """Lazy sequence of the root objects' masks (the sampler reads only the ones it selects)."""

    def __init__(self, sample: InstanceLayers) -> None:
        self.sample = sample
        self.ids = sample.root_objects

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):  # type: ignore[override]
        return self.sample.object_mask(self.ids[i])


# ----------------------------------------------------------------------------- base dataset

class TrainDataset(Dataset):
    """Base of the training datasets (see the module docstring for the sampling steps).

    Subclasses implement :meth:`num_images` and :meth:`get_layers`.

    Args:
        augmenter: the training augmentation (it fixes the output size); ``None`` = none.
        points_sampler: click simulation (default: the official ``MultiPointSampler(24, ...)``).
        min_object_area: objects smaller than this (in the crop) are not targets.
        keep_background_prob: probability of keeping a crop without objects (``< 0``: always).
        epoch_len: items per epoch (images drawn at random); ``<= 0``: one item per image.
        seed: base seed of the per-item RNG.
        sample_weights: optional per-image weights (drawn with probability proportional to them).
        max_augment_tries: cap of the re-augmentation loop.
    """

    def __init__(
        self,
        *,
        augmenter: Augmenter | None = None,
        points_sampler: MultiPointSampler | None = None,
        min_object_area: int = 0,
        keep_background_prob: float = 0.0,
        epoch_len: int = -1,
        seed: int = 0,
        sample_weights: Sequence[float] | np.ndarray | None = None,
        max_augment_tries: int = 100,
    ) -> None:
        super().__init__()
        self.augmenter = augmenter
        self.points_sampler = points_sampler if points_sampler is not None else MultiPointSampler()
        self.min_object_area = int(min_object_area)
        self.keep_background_prob = float(keep_background_prob)
        self.epoch_len = int(epoch_len)
        self.seed = int(seed)
        self.epoch = 0
        self.max_augment_tries = int(max_augment_tries)
        self.stats: Counter = Counter()
        self._weights: np.ndarray | None = None
        if sample_weights is not None:
            self.set_sample_weights(sample_weights)

    # -- to implement
    def num_images(self) -> int:
        raise NotImplementedError

    def get_layers(self, index: int, rng: np.random.Generator) -> InstanceLayers:
        raise NotImplementedError

    # -- public
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose items ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def set_sample_weights(self, weights: Sequence[float] | np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.num_images(),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"sample_weights must be {self.num_images()} non-negative numbers with a positive sum, got shape {w.shape}"
            )
        self._weights = w / w.sum()

    def __len__(self) -> int:
        return self.epoch_len if self.epoch_len > 0 else self.num_images()

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get_item(index, self.epoch)

    def item_rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def get_item(self, index: int, epoch: int) -> dict[str, Any]:
        """The item ``index`` of ``epoch`` (a function of ``(seed, epoch, index)`` only)."""
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        if self.num_images() == 0:
            raise ValueError(f"{type(self).__name__}: the dataset has no images")
        rng = self.item_rng(index, epoch)
        if self._weights is not None:
            image_index = int(rng.choice(len(self._weights), p=self._weights))
        elif self.epoch_len > 0:
            image_index = int(rng.integers(self.num_images()))
        else:
            image_index = int(index)
        sample = self.get_layers(image_index, rng)
        sample = self._augment(sample, rng)
        sample.remove_small_objects(self.min_object_area)
        mask, clicks = self.points_sampler.sample(
            _RootMasks(sample), rng, background=sample.background_mask(), ignore=sample.ignore_mask(),
            num_objects=len(sample), shape=sample.shape,
        )
        image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1).float().div_(255.0)
        return {
            "image": image,
            "gt": torch.from_numpy(mask.astype(np.float32))[None],
            "clicks": torch.from_numpy(clicks),
            "image_index": image_index,
        }

    def _augment(self, sample: InstanceLayers, rng: np.random.Generator) -> InstanceLayers:
        if self.augmenter is None:
            sample.compute_areas()
            sample.remove_small_objects(1)
            return sample
        for _ in range(self.max_augment_tries):
            out = sample.augmented(self.augmenter, seed=int(rng.integers(0, 2**31 - 1)))
            keep = self.keep_background_prob < 0 or rng.random() < self.keep_background_prob
            if len(out) > 0 or keep:
                return out
        self.stats["augment_tries_exhausted"] += 1
        warnings.warn(
            f"{type(self).__name__}: no object left in {self.max_augment_tries} augmentations of "
            f"{sample.name or 'an image'}; keeping an empty crop "
            f"({self.stats['augment_tries_exhausted']} times so far)",
            RuntimeWarning,
            stacklevel=3,
        )
        return out


# ----------------------------------------------------------------------------- SBD

class SBDTrainDataset(TrainDataset):
    """SBD (RITM layout). Official settings: ``min_object_area=80, keep_background_prob=0.01``."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        buggy_mask_thresh: float = 0.08,
        samples_scores_path: str | Path | None = None,
        samples_scores_gamma: float = 1.25,
        **kwargs: Any,
    ) -> None:
        root = Path(root)
        if not (root / "img").is_dir() and (root / "dataset" / "img").is_dir():
            root = root / "dataset"
        self.root = root
        self.split = split
        self.buggy_mask_thresh = float(buggy_mask_thresh)
        list_path = root / f"{split}.txt"
        if not list_path.is_file():
            raise FileNotFoundError(f"{list_path}: SBD split list not found (expected <root>/{{img,inst}} and <root>/{split}.txt)")
        self.names = [x.strip() for x in list_path.read_text().splitlines() if x.strip()]
        self._buggy: dict[int, list[int]] = {}
        super().__init__(**kwargs)
        if samples_scores_path is not None:
            self.set_sample_weights(self._scores_to_weights(samples_scores_path, samples_scores_gamma))

    def _scores_to_weights(self, path: str | Path, gamma: float) -> np.ndarray:
        # RITM's sbd_samples_weights.pkl: a list of (image index, _, score); p ~ (1 - score) ** gamma
        rows = load_restricted_pickle(path)
        w = np.zeros(self.num_images())
        try:
            for row in rows:
                w[int(row[0])] = (1.0 - float(row[2])) ** gamma
        except (TypeError, IndexError, ValueError) as e:
            raise ValueError(f"{path}: expected a list of (image index, _, score) rows ({e})") from e
        return w

    def num_images(self) -> int:
        return len(self.names)

    def read_instance_map(self, index: int) -> np.ndarray:
        path = self.root / "inst" / f"{self.names[index]}.mat"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: SBD instance file not found")
        from scipy.io import loadmat

        mat = loadmat(str(path))
        try:
            gt = mat["GTinst"]
            seg = gt["Segmentation"][0][0] if gt.dtype.names and "Segmentation" in gt.dtype.names else gt[0][0][0]
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"{path}: expected a GTinst struct with a Segmentation field ({e})") from e
        return np.asarray(seg).astype(np.int32)

    def _remove_buggy(self, index: int, inst: np.ndarray) -> np.ndarray:
        if self.buggy_mask_thresh <= 0:
            return inst
        if index not in self._buggy:
            buggy = []
            ids, areas = _labels_with_sizes(inst)
            for obj_id, area in zip(ids, areas):
                if obj_id == 255:
                    continue
                ys, xs = np.nonzero(inst == obj_id)
                bbox_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
                if area / bbox_area < self.buggy_mask_thresh:
                    buggy.append(int(obj_id))
            self._buggy[index] = buggy
        for obj_id in self._buggy[index]:
            inst[inst == obj_id] = 0
        return inst

    def get_layers(self, index: int, rng: np.random.Generator) -> InstanceLayers:
        name = self.names[index]
        image = read_image(self.root / "img" / f"{name}.jpg")
        inst = self._remove_buggy(index, self.read_instance_map(index))
        if inst.shape != image.shape[:2]:
            raise ValueError(f"{self.root / 'inst' / (name + '.mat')}: size {inst.shape} differs from its image {image.shape[:2]}")
        ids, _ = _labels_with_sizes(inst)
        objects = {int(i): {"mapping": (0, int(i)), "parent": None, "children": [], "ignore": None} for i in ids if i != 255}
        ignore = [(0, 255)] if (ids == 255).any() else []
        return InstanceLayers(image, inst[..., None], objects, ignore, name)


# ----------------------------------------------------------------------------- COCO+LVIS

class CocoLvisTrainDataset(TrainDataset):
    """COCO+LVIS in RITM's packed form. Official: ``min_object_area=1000, keep_background_prob=0.05, stuff_prob=0.30``."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        stuff_prob: float = 0.0,
        anno_file: str = "hannotation.pickle",
        **kwargs: Any,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.split_path = self.root / split
        self.stuff_prob = float(stuff_prob)
        anno = load_restricted_pickle(self.split_path / anno_file)
        if not isinstance(anno, dict):
            raise ValueError(f"{self.split_path / anno_file}: expected a dict image_id -> annotation, got {type(anno).__name__}")
        self.samples = sorted(anno.items())
        super().__init__(**kwargs)

    def num_images(self) -> int:
        return len(self.samples)

    def get_layers(self, index: int, rng: np.random.Generator) -> InstanceLayers:
        image_id, info = self.samples[index]
        image = read_image(self.split_path / "images" / f"{image_id}.jpg")
        masks_path = self.split_path / "masks" / f"{image_id}.pickle"
        packed = load_restricted_pickle(masks_path)
        try:
            encoded_layers, objs_mapping = packed
            for x in encoded_layers:  # the pixel limit, from each layer's PNG header before decoding
                probe_image(np.asarray(x, dtype=np.uint8).tobytes(), f"mask layer of {masks_path}")
            layers = [cv2.imdecode(np.asarray(x, dtype=np.uint8), cv2.IMREAD_UNCHANGED) for x in encoded_layers]
        except ImageTooLargeError:
            raise
        except (TypeError, ValueError) as e:
            raise ValueError(f"{masks_path}: expected (encoded_layers, objs_mapping) ({e})") from e
        if not layers or any(x is None or x.shape != image.shape[:2] for x in layers):
            raise ValueError(f"{masks_path}: layers missing, undecodable or not of the image size {image.shape[:2]}")
        stack = np.stack(layers, axis=2).astype(np.int32)
        num_inst = int(info["num_instance_masks"])
        objects: dict[int, dict[str, Any]] = {}
        for inst_id, node in info["hierarchy"].items():
            node = node or {}
            objects[int(inst_id)] = {
                "mapping": tuple(int(v) for v in objs_mapping[int(inst_id)]),
                "parent": None if node.get("parent") is None else int(node["parent"]),
                "children": [int(c) for c in node.get("children", [])],
                "ignore": None,
            }
        stuff_ids = range(num_inst, len(objs_mapping))
        if self.stuff_prob > 0 and rng.random() < self.stuff_prob:
            for sid in stuff_ids:
                objects[sid] = {"mapping": tuple(int(v) for v in objs_mapping[sid]), "parent": None,
                                "children": [], "ignore": None}
        else:
            for sid in stuff_ids:
                li, mid = (int(v) for v in objs_mapping[sid])
                layer = stack[:, :, li]
                layer[layer == mid] = 0
        return InstanceLayers(image, stack, objects, [], str(image_id))


# ----------------------------------------------------------------------------- simple sets

class FolderSamples(Sequence):
    """An evaluation-style folder as a sequence of :class:`Sample` (one instance per mask file).

    ``<root>/gt/<stem>.<png|bmp|...>`` is paired with ``<root>/img/<stem>.<jpg|png|...>``; mask
    values: 0 background, 128 ignore, anything else object.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        img_dir, gt_dir = self.root / "img", self.root / "gt"
        if not img_dir.is_dir() or not gt_dir.is_dir():
            raise FileNotFoundError(f"{self.root}: expected the subfolders img/ and gt/")
        images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
        self.pairs: list[tuple[Path, Path]] = []
        missing = []
        for m in sorted(gt_dir.iterdir()):
            if m.suffix.lower() not in MASK_EXTENSIONS:
                continue
            if m.stem in images:
                self.pairs.append((images[m.stem], m))
            else:
                missing.append(m.name)
        if missing:
            warnings.warn(f"{gt_dir}: {len(missing)} masks without an image in img/ skipped (e.g. {missing[0]})", RuntimeWarning)
        if not self.pairs:
            raise ValueError(f"{self.root}: no (img, gt) pairs found")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):  # type: ignore[override]
        img_path, mask_path = self.pairs[i]
        return Sample(read_image(img_path), [read_instance_mask(mask_path)], mask_path.stem, img_path, [mask_path])


class SampleTrainDataset(TrainDataset):
    """Training items from any indexable sequence of :class:`Sample` (e.g. benchmark readers)."""

    def __init__(self, samples: Sequence[Sample], **kwargs: Any) -> None:
        self.samples = samples
        super().__init__(**kwargs)

    def num_images(self) -> int:
        return len(self.samples)

    def get_layers(self, index: int, rng: np.random.Generator) -> InstanceLayers:
        return InstanceLayers.from_sample(self.samples[index])


class FolderTrainDataset(SampleTrainDataset):
    """Training items from an evaluation-style ``img/`` + ``gt/`` folder (e.g. COCO_MVal)."""

    def __init__(self, root: str | Path, **kwargs: Any) -> None:
        self.root = Path(root)
        super().__init__(FolderSamples(root), **kwargs)


class MixedTrainDataset(TrainDataset):
    """Several training sets as one: images of source ``i`` are drawn with total probability
    ``weights[i] / sum(weights)`` (uniform within a source). The sources only provide images and
    instances (``get_layers``); augmentation, click sampling and epoch length are this dataset's."""

    def __init__(self, sources: Sequence[TrainDataset], weights: Sequence[float], **kwargs: Any) -> None:
        if not sources or len(sources) != len(weights):
            raise ValueError("MixedTrainDataset needs one weight per source and at least one source")
        self.sources = list(sources)
        self._offsets = np.cumsum([0] + [s.num_images() for s in self.sources])
        super().__init__(**kwargs)
        per_image = np.concatenate([
            np.full(s.num_images(), float(w) / max(s.num_images(), 1)) for s, w in zip(self.sources, weights)
        ])  # fmt: skip
        self.set_sample_weights(per_image)

    def num_images(self) -> int:
        return int(self._offsets[-1])

    def get_layers(self, index: int, rng: np.random.Generator) -> InstanceLayers:
        src = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return self.sources[src].get_layers(index - int(self._offsets[src]), rng)


# ----------------------------------------------------------------------------- builder

DATASET_KINDS = ("sbd", "cocolvis", "folder", "mixed")


def _source_dataset(src: Any, data: Any) -> TrainDataset:
    """The image/instance reader of one ``kind: mixed`` source (no augmentation of its own)."""
    if src.kind == "sbd":
        return SBDTrainDataset(src.data_root, split=src.split, buggy_mask_thresh=data.buggy_mask_thresh)
    if src.kind == "cocolvis":
        return CocoLvisTrainDataset(src.data_root, split=src.split, stuff_prob=data.stuff_prob)
    if src.kind == "folder":
        return FolderTrainDataset(src.data_root)
    raise ValueError(f"data.sources: kind must be sbd, cocolvis or folder, got {src.kind!r}")


def build_train_dataset(data: Any, clicks: Any, seed: int = 0, augmenter: Augmenter | None = None) -> TrainDataset:
    """Build the training dataset of a config (``TrainConfig.data`` / ``.clicks``, see
    :mod:`icmformer.training.config`): kind, root, split, epoch length, augmentation, area and
    background settings, and the points sampler."""
    from icmformer.data.augment import build_augmentation

    if augmenter is None:
        augmenter = build_augmentation(data.augment)
    sampler = MultiPointSampler(
        max_num_points=clicks.max_num_points, prob_gamma=clicks.prob_gamma, expand_ratio=clicks.expand_ratio,
        positive_erode_prob=clicks.positive_erode_prob, positive_erode_iters=clicks.positive_erode_iters,
        negative_bg_prob=clicks.negative_bg_prob, negative_other_prob=clicks.negative_other_prob,
        negative_border_prob=clicks.negative_border_prob, merge_objects_prob=clicks.merge_objects_prob,
        max_num_merged_objects=clicks.max_num_merged_objects, first_click_center=clicks.first_click_center,
    )
    common = dict(
        augmenter=augmenter, points_sampler=sampler, min_object_area=data.min_object_area,
        keep_background_prob=data.keep_background_prob, epoch_len=data.epoch_len, seed=seed,
    )
    if data.kind == "mixed":
        subs = [_source_dataset(src, data) for src in data.sources]
        return MixedTrainDataset(subs, [float(src.weight) for src in data.sources], **common)
    if data.kind == "sbd":
        return SBDTrainDataset(
            data.data_root, split=data.split, buggy_mask_thresh=data.buggy_mask_thresh,
            samples_scores_path=data.samples_scores_path or None, samples_scores_gamma=data.samples_scores_gamma, **common,
        )
    if data.kind == "cocolvis":
        return CocoLvisTrainDataset(data.data_root, split=data.split, stuff_prob=data.stuff_prob, **common)
    if data.kind == "folder":
        return FolderTrainDataset(data.data_root, **common)
    raise ValueError(f"data.kind must be one of {DATASET_KINDS}, got {data.kind!r}")
