"""Training-time click simulation: RITM's ``MultiPointSampler``, with an explicit RNG.

The behaviour follows RITM's ``isegm/data/points_sampler.py`` (used unchanged by the official
iCMFormer training, ``MultiPointSampler(24, prob_gamma=0.80, merge_objects_prob=0.15,
max_num_merged_objects=2)``; see ``OFFICIAL.md`` "Points sampler"). One call of
:meth:`MultiPointSampler.sample` does what RITM's ``sample_object`` + ``sample_points`` do:

Object selection
    With more than one candidate object and probability ``merge_objects_prob``, ``k`` objects are
    merged, ``k`` uniform in ``2..min(n, max_num_merged_objects)``, chosen without replacement;
    otherwise one object is chosen uniformly. The target mask is the element-wise maximum of the
    chosen ``1/0/-1`` masks (RITM's ``np.maximum``).

Positive clicks
    Each chosen object's positive region is its mask, eroded (3x3 kernel,
    ``positive_erode_iters`` iterations, OpenCV's default border) with probability
    ``positive_erode_prob``; the eroded region is kept only if it has more than 10 pixels. For
    one object, ``1 + G`` clicks are drawn uniformly (with replacement) from the region, where
    ``G`` in ``0..max_num_points-1`` has ``P(G = g) ~ prob_gamma ** g``. For merged objects, each
    object contributes its first click, and then ``H`` more clicks (``H`` in
    ``0..max_num_points`` with ``P(H = h) ~ prob_gamma ** h``) are drawn, each from a uniformly
    chosen object's region; if the total exceeds ``max_num_points``, a random subset of those
    extra clicks is kept. ``first_click_center=True`` draws each object's first click among the
    pixels whose distance to the region's border exceeds ``max / 1.7`` (RITM's
    ``get_point_candidates`` with its default ``k=1.7``).

Negative clicks
    ``H`` clicks (same distribution as above, 0 allowed); each picks a strategy: ``bg`` (anywhere
    outside the target, probability ``negative_bg_prob``), ``other`` (on annotated objects other
    than the target, ``negative_other_prob``; equal to ``bg`` when every annotated object was
    selected) or ``border`` (the band obtained by dilating the target by
    ``ceil(expand_ratio * sqrt(area))`` 3x3 iterations, minus the target;
    ``negative_border_prob``), then a uniform pixel of that region. A draw whose region is empty
    gives no click (RITM does the same), so fewer clicks than ``H`` may come out.

Deliberate difference from RITM: pixels whose target label is ``-1`` (ignore) never receive a
click (RITM's ``bg`` region includes them). Every random draw uses the ``numpy.random.Generator``
passed in; the RNG sequence is not RITM's (which mixes Python's ``random`` and numpy's global
state), the distributions are.

Output layout (``clicks``, ``float32``, shape ``2P x 3`` with ``P = max_num_points``)::

    rows 0 .. P-1     positive clicks (y, x, 1), in sampling order, then padding rows
    rows P .. 2P-1    negative clicks (y, x, 0), in sampling order, then padding rows
    padding row       (-1, -1, -1)

This is RITM's points layout (positives first, each half padded at its end) with the third
column holding the model's label (``1`` positive, ``0`` negative, ``-1`` padding, see
DEVELOPING.md "Clicks") instead of RITM's click index. ``y`` is the row, ``x`` the column.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

NEG_STRATEGIES = ("bg", "other", "border")
PADDING_ROW = (-1.0, -1.0, -1.0)


@lru_cache(maxsize=None)
def _geometric_probs(n: int, gamma: float) -> tuple[float, ...]:
    """``P(i) ~ gamma ** i`` for ``i`` in ``0..n-1`` (RITM's ``generate_probs``)."""
    w = np.array([gamma**i for i in range(n)], dtype=np.float64)
    return tuple((w / w.sum()).tolist())


def geometric_probs(n: int, gamma: float) -> np.ndarray:
    """The click-count distribution: ``n`` probabilities proportional to ``gamma ** i``."""
    return np.array(_geometric_probs(int(n), float(gamma)))


class MultiPointSampler:
    """RITM's multi-point click sampler (see the module docstring for the exact behaviour).

    Args:
        max_num_points: ``P``: at most ``P`` positive and ``P`` negative clicks (official 24).
        prob_gamma: ratio of the geometric click-count distribution (official 0.80).
        expand_ratio: border band width relative to ``sqrt(object area)``.
        positive_erode_prob, positive_erode_iters: erosion of the positive region.
        negative_bg_prob, negative_other_prob, negative_border_prob: negative strategy
            probabilities (must sum to 1).
        merge_objects_prob, max_num_merged_objects: merging several objects into one target.
        first_click_center: draw the first positive click near the object's centre.
    """

    def __init__(
        self,
        max_num_points: int = 24,
        prob_gamma: float = 0.80,
        expand_ratio: float = 0.1,
        positive_erode_prob: float = 0.9,
        positive_erode_iters: int = 3,
        negative_bg_prob: float = 0.1,
        negative_other_prob: float = 0.4,
        negative_border_prob: float = 0.5,
        merge_objects_prob: float = 0.15,
        max_num_merged_objects: int = 2,
        first_click_center: bool = False,
    ) -> None:
        if max_num_points < 1:
            raise ValueError(f"max_num_points must be >= 1, got {max_num_points}")
        if not 0.0 < prob_gamma <= 1.0:
            raise ValueError(f"prob_gamma must be in (0, 1], got {prob_gamma}")
        probs = (negative_bg_prob, negative_other_prob, negative_border_prob)
        if min(probs) < 0 or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise ValueError(
                "negative_bg_prob + negative_other_prob + negative_border_prob must be 1 (each >= 0), "
                f"got {probs}"
            )
        if not 0.0 <= merge_objects_prob <= 1.0:
            raise ValueError(f"merge_objects_prob must be in [0, 1], got {merge_objects_prob}")
        if max_num_merged_objects == -1:  # RITM: -1 means "up to max_num_points"
            max_num_merged_objects = max_num_points
        if max_num_merged_objects < 1:
            raise ValueError(f"max_num_merged_objects must be >= 1 or -1, got {max_num_merged_objects}")
        self.max_num_points = int(max_num_points)
        self.prob_gamma = float(prob_gamma)
        self.expand_ratio = float(expand_ratio)
        self.positive_erode_prob = float(positive_erode_prob)
        self.positive_erode_iters = int(positive_erode_iters)
        self.neg_strategies_prob = np.array(probs, dtype=np.float64) / sum(probs)
        self.merge_objects_prob = float(merge_objects_prob)
        self.max_num_merged_objects = int(max_num_merged_objects)
        self.first_click_center = bool(first_click_center)
        self._pos_probs = geometric_probs(self.max_num_points, self.prob_gamma)
        self._neg_probs = geometric_probs(self.max_num_points + 1, self.prob_gamma)

    def __repr__(self) -> str:
        return (
            f"MultiPointSampler(max_num_points={self.max_num_points}, prob_gamma={self.prob_gamma}, "
            f"merge_objects_prob={self.merge_objects_prob}, max_num_merged_objects={self.max_num_merged_objects})"
        )

    # ------------------------------------------------------------------ public API
    def sample(
        self,
        masks: Sequence[np.ndarray],
        rng: np.random.Generator,
        *,
        background: np.ndarray | None = None,
        ignore: np.ndarray | None = None,
        num_objects: int | None = None,
        shape: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Select a target object and simulate its clicks.

        Args:
            masks: the candidate target objects (RITM's root objects), each ``H x W`` with ``1``
                object, ``0`` background, ``-1`` ignore. Any indexable sequence works; only the
                selected entries are read, so a lazy sequence avoids building every mask.
            rng: the random generator; every draw goes through it.
            background: ``H x W`` bool, pixels that belong to no annotated object (RITM's
                ``get_background_mask``); drives the ``other`` strategy. Default: pixels where no
                candidate mask is ``1`` (reads every mask).
            ignore: ``H x W`` bool, pixels ignored for every object (optional); they are set to
                ``-1`` in the returned mask (where not object) and never clicked.
            num_objects: number of annotated objects in the image (RITM's ``len(sample)``); when
                it does not exceed the number of selected objects, ``other`` falls back to
                ``bg``. Default ``len(masks)``.
            shape: ``(H, W)``; needed only when ``masks`` is empty and neither ``background``
                nor ``ignore`` is given.

        Returns:
            ``(mask, clicks)``: the target, ``H x W`` ``int32`` in {1, 0, -1}, and the
            ``2P x 3`` ``float32`` clicks in the layout of the module docstring. With no
            candidate object the mask is all background and only negative clicks are drawn.
        """
        n = len(masks)
        if n == 0:
            ref = background if background is not None else ignore
            if ref is None and shape is None:
                raise ValueError("sample(): masks is empty; pass shape=(H, W), background or ignore")
            hw = tuple(ref.shape) if ref is not None else tuple(shape)  # type: ignore[arg-type]
            target = np.zeros(hw, dtype=np.int32)
            if ignore is not None:
                target[ignore] = -1
            valid = target != -1
            bg = valid if background is None else (np.asarray(background, dtype=bool) & valid)
            pos_regions: list[np.ndarray] = []
            neg_regions = {"bg": bg, "other": bg, "border": bg}
        else:
            target, pos_regions, neg_regions = self._select(masks, rng, background, ignore, num_objects)

        pos = self._positive_points(pos_regions, rng)
        neg = self._negative_points(neg_regions, rng)
        return target, self._to_array(pos, neg)

    # ------------------------------------------------------------------ selection
    def _select(self, masks, rng, background, ignore, num_objects):
        n = len(masks)
        if n > 1 and rng.random() < self.merge_objects_prob:
            k_max = min(n, self.max_num_merged_objects)
            k = int(rng.integers(2, k_max + 1)) if k_max >= 2 else 1
            ids = [int(i) for i in rng.choice(n, size=k, replace=False)]
        else:
            ids = [int(rng.integers(n))]

        chosen = []
        for i in ids:
            m = np.asarray(masks[i])
            if m.ndim != 2:
                raise ValueError(f"object mask {i} must be H x W, got shape {m.shape}")
            chosen.append(m.astype(np.int32, copy=False))
        target = chosen[0].copy()
        for m in chosen[1:]:
            if m.shape != target.shape:
                raise ValueError(f"object masks differ in size: {m.shape} vs {target.shape}")
            np.maximum(target, m, out=target)
        if ignore is not None:
            target[np.asarray(ignore, dtype=bool) & (target != 1)] = -1

        pos_regions = [self._positive_erode(m == 1, rng) for m in chosen]

        obj = target == 1
        valid = target != -1
        bg = ~obj & valid
        border = self._border_band(obj) & valid
        total = n if num_objects is None else int(num_objects)
        if total <= len(ids):
            other = bg
        else:
            if background is None:
                occupied = np.zeros(target.shape, dtype=bool)
                for j in range(n):
                    occupied |= np.asarray(masks[j]) == 1
            else:
                occupied = ~np.asarray(background, dtype=bool)
            other = occupied & bg
        return target, pos_regions, {"bg": bg, "other": other, "border": border}

    def _positive_erode(self, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() > self.positive_erode_prob:
            return region
        kernel = np.ones((3, 3), np.uint8)
        eroded = cv2.erode(region.astype(np.uint8), kernel, iterations=self.positive_erode_iters).astype(bool)
        return eroded if eroded.sum() > 10 else region

    def _border_band(self, obj: np.ndarray) -> np.ndarray:
        area = int(obj.sum())
        expand_r = int(np.ceil(self.expand_ratio * np.sqrt(area)))
        if area == 0 or expand_r == 0:
            return np.zeros_like(obj)
        kernel = np.ones((3, 3), np.uint8)
        expanded = cv2.dilate(obj.astype(np.uint8), kernel, iterations=expand_r).astype(bool)
        return expanded & ~obj

    # ------------------------------------------------------------------ clicks
    def _num_positive(self, rng) -> int:
        return 1 + int(rng.choice(self.max_num_points, p=self._pos_probs))

    def _num_extra(self, rng) -> int:
        return int(rng.choice(self.max_num_points + 1, p=self._neg_probs))

    @staticmethod
    def _draw(coords: np.ndarray, rng: np.random.Generator, k: int) -> list[tuple[int, int]]:
        if len(coords) == 0 or k <= 0:
            return []
        idx = rng.integers(0, len(coords), size=k)
        return [(int(coords[i, 0]), int(coords[i, 1])) for i in idx]

    @staticmethod
    def _center_candidates(region: np.ndarray) -> np.ndarray:
        padded = np.pad(region.astype(np.uint8), 1)
        dt = cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]
        return np.argwhere(dt > dt.max() / 1.7)

    def _object_points(self, region: np.ndarray, rng, count: int) -> list[tuple[int, int]]:
        coords = np.argwhere(region)
        if self.first_click_center and count > 0:
            first = self._draw(self._center_candidates(region), rng, 1)
            return first + self._draw(coords, rng, count - 1)
        return self._draw(coords, rng, count)

    def _positive_points(self, regions: list[np.ndarray], rng) -> list[tuple[int, int]]:
        regions = regions[: self.max_num_points]
        if not regions:
            return []
        if len(regions) == 1:
            return self._object_points(regions[0], rng, self._num_positive(rng))
        # merged objects: the first click of each object, then extra clicks over all of them
        points = []
        for region in regions:
            pts = self._object_points(region, rng, 1)  # RITM draws 1+G here and keeps the first
            points.extend(pts)
        coords = [np.argwhere(r) for r in regions]
        extra: list[tuple[int, int]] = []
        for _ in range(self._num_extra(rng)):
            extra.extend(self._draw(coords[int(rng.integers(len(coords)))], rng, 1))
        room = self.max_num_points - len(points)
        if len(extra) > room:
            keep = rng.choice(len(extra), size=room, replace=False)
            extra = [extra[int(i)] for i in keep]
        return points + extra

    def _negative_points(self, regions: dict[str, np.ndarray], rng) -> list[tuple[int, int]]:
        count = self._num_extra(rng)
        if count == 0:
            return []
        strategies = rng.choice(len(NEG_STRATEGIES), size=count, p=self.neg_strategies_prob)
        coords = {}
        points = []
        for s in strategies:
            name = NEG_STRATEGIES[int(s)]
            if name not in coords:
                coords[name] = np.argwhere(regions[name])
            points.extend(self._draw(coords[name], rng, 1))
        return points

    def _to_array(self, pos: list[tuple[int, int]], neg: list[tuple[int, int]]) -> np.ndarray:
        p = self.max_num_points
        out = np.full((2 * p, 3), PADDING_ROW, dtype=np.float32)
        for j, (y, x) in enumerate(pos[:p]):
            out[j] = (y, x, 1.0)
        for j, (y, x) in enumerate(neg[:p]):
            out[p + j] = (y, x, 0.0)
        return out
