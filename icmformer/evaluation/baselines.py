"""A model-free baseline: OpenCV's GrabCut driven by the simulated clicks.

Design (one :class:`GrabCutPredictFn` per image, called with the growing click list):

- **Working resolution.** The graph cut runs on a copy of the image whose longer side is at most
  ``max_side`` (default 320 px, ``INTER_AREA``); GrabCut's cost grows faster than the pixel count
  (its k-means initialisation and graph), and full-size DAVIS frames (854 x 480) would cost over a
  second per click. The result is upsampled bilinearly to full size.
- **First click** (``GC_INIT_WITH_MASK``): probable background everywhere, a *probable
  foreground* disk of radius ``init_radius`` (fraction of the working image's shorter side) around
  every positive click, each click painted as a definite foreground/background disk of radius
  ``click_radius`` (5 px at full resolution), and a one-pixel frame of definite background along
  the image border (positive-click disks win over it). The GMMs are initialised by OpenCV's
  k-means, whose random state is fixed with ``cv2.setRNGSeed(seed)`` before every call, so runs
  are deterministic.
- **Later clicks** (``GC_EVAL``): the previous segmentation becomes the prior (its foreground
  probable foreground, the rest probable background), all clicks are painted as definite disks
  again and the border frame re-applied, and GrabCut continues from the previous colour models
  for ``iterations`` rounds (re-estimating them from the new labelling), as a user would refine a
  GrabCut result with brush strokes. This skips the k-means initialisation at every click after
  the first.
- **Output**: 1 for (probable) foreground, 0 for background at working resolution, upsampled
  bilinearly to the full image (so values in [0, 1], soft along the boundary); finally the click
  disks are painted at full resolution (1 for positive, 0 for negative clicks) so each clicked pixel
  is labelled as the user asked.

A click list that does not extend the previous one by a single click starts a new object (a list
of length 1) or is replayed from its first click, so the result never depends on call history.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from icmformer.evaluation.clicker import Click


class GrabCutPredictFn:
    """``predict_fn(clicks) -> probs`` running OpenCV GrabCut (see the module docstring).

    Args:
        image: ``H x W x 3`` uint8 RGB.
        max_side: longer side of the working resolution (``None``: full resolution).
        iterations: GrabCut iterations per click.
        click_radius: radius (full-resolution pixels) of the definite disks painted at clicks.
        init_radius: radius of the first probable-foreground disk around positive clicks, as a
            fraction of the working image's shorter side.
        seed: OpenCV RNG seed (k-means initialisation of the colour models).
    """

    def __init__(
        self,
        image: np.ndarray,
        max_side: int | None = 320,
        iterations: int = 2,
        click_radius: int = 5,
        init_radius: float = 0.15,
        seed: int = 0,
    ) -> None:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"image must be H x W x 3 uint8 RGB, got shape {getattr(image, 'shape', None)} "
                f"dtype {getattr(image, 'dtype', type(image).__name__)}"
            )
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.full_size = image.shape[:2]
        h, w = self.full_size
        scale = 1.0 if max_side is None else min(1.0, float(max_side) / max(h, w))
        self.scale = scale
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))  # (width, height)
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        self.work = np.ascontiguousarray(bgr)
        self.work_size = self.work.shape[:2]
        self.iterations = int(iterations)
        self.click_radius = int(click_radius)
        self.init_radius = float(init_radius)
        self.seed = int(seed)
        self.failures = 0  # GrabCut calls OpenCV refused (the painted prior was used instead)
        self._seen: list[Click] = []
        self._labels: np.ndarray | None = None  # working-resolution GrabCut mask of the last call
        self._bgd = np.zeros((1, 65), np.float64)
        self._fgd = np.zeros((1, 65), np.float64)

    # -------------------------------------------------------------- helpers
    def _work_coords(self, click: Click) -> tuple[int, int]:
        hw, ww = self.work_size
        h, w = self.full_size
        y = min(hw - 1, int((click.coords[0] + 0.5) * hw / h))
        x = min(ww - 1, int((click.coords[1] + 0.5) * ww / w))
        return y, x

    def _paint_clicks(self, mask: np.ndarray, clicks: Sequence[Click]) -> None:
        r = max(1, round(self.click_radius * self.scale))
        # negatives first, so a positive disk wins where they overlap (the later click would be
        # closer to what the user means, but the clicked pixels themselves never overlap)
        for positive in (False, True):
            for c in clicks:
                if c.is_positive == positive:
                    y, x = self._work_coords(c)
                    cv2.circle(mask, (x, y), r, int(cv2.GC_FGD if positive else cv2.GC_BGD), -1)

    def _frame(self, mask: np.ndarray) -> None:
        mask[0, :] = cv2.GC_BGD
        mask[-1, :] = cv2.GC_BGD
        mask[:, 0] = cv2.GC_BGD
        mask[:, -1] = cv2.GC_BGD

    def _step(self, clicks: Sequence[Click]) -> np.ndarray:
        hw, ww = self.work_size
        first = self._labels is None
        if first:
            mask = np.full((hw, ww), cv2.GC_PR_BGD, np.uint8)
            r = max(1, round(self.init_radius * min(hw, ww)))
            for c in clicks:
                if c.is_positive:
                    y, x = self._work_coords(c)
                    cv2.circle(mask, (x, y), r, int(cv2.GC_PR_FGD), -1)
        else:
            fg = (self._labels == cv2.GC_FGD) | (self._labels == cv2.GC_PR_FGD)
            mask = np.where(fg, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        self._frame(mask)
        self._paint_clicks(mask, clicks)
        has_fg = bool(((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).any())
        has_bg = bool(((mask == cv2.GC_BGD) | (mask == cv2.GC_PR_BGD)).any())
        if has_fg and has_bg:
            cv2.setRNGSeed(self.seed)
            painted = mask.copy()
            try:
                if first or not self._fgd.any():
                    self._bgd[:] = 0
                    self._fgd[:] = 0
                    cv2.grabCut(self.work, mask, None, self._bgd, self._fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
                else:
                    cv2.grabCut(self.work, mask, None, self._bgd, self._fgd, self.iterations, cv2.GC_EVAL)
            except cv2.error:
                # e.g. too few foreground pixels for the 5-component colour model: keep the
                # painted prior for this click and start the models afresh at the next one
                self.failures += 1
                mask = painted
                self._bgd[:] = 0
                self._fgd[:] = 0
        self._labels = mask
        return mask

    def _probs(self, labels: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
        fg = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.float32)
        h, w = self.full_size
        if fg.shape != (h, w):
            fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
        probs = np.clip(fg, 0.0, 1.0)
        for positive in (False, True):
            for c in clicks:
                if c.is_positive == positive:
                    cv2.circle(probs, (int(c.coords[1]), int(c.coords[0])), self.click_radius, 1.0 if positive else 0.0, -1)
        return probs.astype(np.float32, copy=False)

    # -------------------------------------------------------------- API
    def reset(self) -> None:
        self._seen = []
        self._labels = None
        self._bgd[:] = 0
        self._fgd[:] = 0

    def __call__(self, clicks: Sequence[Click]) -> np.ndarray:
        clicks = list(clicks)
        if not clicks:
            raise ValueError("the GrabCut baseline needs at least one click")
        h, w = self.full_size
        for c in clicks:
            if not (0 <= c.coords[0] < h and 0 <= c.coords[1] < w):
                raise ValueError(f"click (y={c.coords[0]}, x={c.coords[1]}) lies outside the {h}x{w} (HxW) image")
        if len(clicks) == 1 or self._seen != clicks[:-1]:
            self.reset()
            for k in range(1, len(clicks)):
                self._step(clicks[:k])
        labels = self._step(clicks)
        self._seen = clicks
        return self._probs(labels, clicks)
