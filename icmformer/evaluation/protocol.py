"""The evaluation protocol in one object: click budget, threshold, stop rule and test-time transforms.

:class:`EvalProtocol` holds every default of the standard protocol (OFFICIAL.md section 1e) so
that the per-instance loop, the batched evaluator, the runner, the CLI and the notebooks read them
from one place:

=====================  ===========  =================================================================
field                  default      meaning
=====================  ===========  =================================================================
``max_clicks``         20           click budget per instance
``pred_thr``           0.49         a pixel is predicted object iff its probability is ``> pred_thr``
``target_iou``         0.90         IoU of the official early stop (compared as ``max(0.8, target_iou)``)
``stop_at_target``     False        stop an instance at ``target_iou`` (default: always ``max_clicks``)
``min_clicks``         1            no early stop before this many clicks
``zoom_in``, ``flip``  True, True   the official test-time transforms
``target_size``        None         network input side; ``None``: the model's input size
``davis_target_size``  None         input side on DAVIS; ``None``: 1.5x the model's input size
                                    (the official 672 for 448)
=====================  ===========  =================================================================
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

MAX_CLICKS = 20
PRED_THRESHOLD = 0.49
TARGET_IOU = 0.90
DAVIS_SCALE = 1.5


@dataclass(frozen=True)
class EvalProtocol:
    """The evaluation protocol (see the module docstring); immutable, ``with_(**changes)`` copies."""

    max_clicks: int = MAX_CLICKS
    pred_thr: float = PRED_THRESHOLD
    target_iou: float = TARGET_IOU
    stop_at_target: bool = False
    min_clicks: int = 1
    zoom_in: bool = True
    flip: bool = True
    target_size: int | None = None
    davis_target_size: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_clicks, bool) or int(self.max_clicks) < 1:
            raise ValueError(f"max_clicks must be >= 1, got {self.max_clicks}")
        if not 0.0 <= float(self.pred_thr) < 1.0:
            raise ValueError(f"pred_thr must be in [0, 1), got {self.pred_thr}")
        for name in ("target_size", "davis_target_size"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be a positive int (or None for the default), got {value}")

    def with_(self, **changes) -> "EvalProtocol":
        """A copy with ``changes`` (``None`` values are ignored, so optional CLI flags pass through)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def input_size(self, dataset: str | None, model_size: int) -> int:
        """The network input side for ``dataset`` with a model trained at ``model_size``: DAVIS
        (high-resolution images) gets ``davis_target_size`` or 1.5x the model size, as the official
        evaluation (672 for 448); other datasets ``target_size`` or the model size."""
        if dataset is not None and str(dataset).upper() == "DAVIS":
            return int(self.davis_target_size or round(DAVIS_SCALE * int(model_size)))
        return int(self.target_size or model_size)

    def loop_options(self) -> dict:
        """Keyword arguments of :func:`~icmformer.evaluation.loop.evaluate_sample`."""
        return dict(max_clicks=int(self.max_clicks), pred_thr=float(self.pred_thr), target_iou=float(self.target_iou),
                    stop_at_target=bool(self.stop_at_target), min_clicks=int(self.min_clicks))  # fmt: skip

    def predictor_options(self, dataset: str | None, model_size: int) -> dict:
        """Keyword arguments of the zoom-in + flip predictor for ``dataset``."""
        return dict(zoom_in=bool(self.zoom_in), flip=bool(self.flip), target_size=self.input_size(dataset, model_size))

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_PROTOCOL = EvalProtocol()
