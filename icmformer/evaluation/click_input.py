"""Validation of clicks given by people and programs (``Predictor.add_click``, the CLI, click files).

One rule set, so the API and the command line agree:

- **label**: ``True``/``False`` or ``1``/``0`` (also numpy bools and integers); anything else,
  e.g. the string ``'no'`` (which ``bool()`` would make a *positive* click), is a ``ValueError``.
  The CLI and click files parse their words (``+``/``-``, ``pos``/``neg``) before calling this.
- **coordinates**: finite real numbers (Python or numpy ints and floats; not bools, not strings,
  not ``inf``/``nan``). A fractional coordinate is rounded to the nearest pixel, halves up: pixel
  centres lie at whole coordinates, as matplotlib shows an image (and as the annotation widget
  rounds a mouse click). So ``320.9`` is pixel 321 in the API and on the command line alike.
- the rounded click must lie inside the image.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["click_label", "pixel_coordinate", "validate_click"]


def click_label(value: Any, what: str = "click") -> bool:
    """``True`` for a positive click: accepts only bools and the integers 0 / 1."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(int(value))
    raise ValueError(f"{what}: positive must be True/False (or 1/0), got {value!r}")


def pixel_coordinate(value: Any, name: str, what: str = "click") -> int:
    """A coordinate -> the nearest pixel index (halves round up); refuses non-numbers and non-finite values."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        raise ValueError(f"{what}: {name} must be a number (pixel coordinate), got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{what}: {name} must be a finite number, got {value!r}")
    return int(math.floor(f + 0.5))


def validate_click(y: Any, x: Any, positive: Any, image_size: tuple[int, int] | None, what: str = "click") -> tuple[int, int, bool]:
    """``(row, column, is_positive)`` of a click on an image of ``image_size`` (``(H, W)``), or ``ValueError``."""
    label = click_label(positive, what)
    yi, xi = pixel_coordinate(y, "y", what), pixel_coordinate(x, "x", what)
    if image_size is not None:
        h, w = image_size
        if not (0 <= yi < h and 0 <= xi < w):
            shown = f"y={y}, x={x}" + (f" -> pixel ({yi}, {xi})" if (yi, xi) != (y, x) else "")
            raise ValueError(
                f"{what} ({shown}) lies outside the image of {h}x{w} (HxW); need 0 <= y <= {h - 1} and 0 <= x <= {w - 1}"
            )
    return yi, xi, label
