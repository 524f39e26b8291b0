"""Evaluation methods by name, and :func:`evaluate`: what ``icmformer evaluate`` and the evaluate
notebook both call.

- :func:`model_method`: an iCMFormer model (a checkpoint, shipped weights or seeded untrained
  weights, see :func:`icmformer.models.factory.load_model`) behind the zoom-in + flip predictor,
  one :class:`~icmformer.evaluation.batched.ModelMethod` per dataset with that dataset's input
  size (:meth:`EvalProtocol.input_size`: DAVIS at 1.5x).
- :func:`grabcut_method`: the OpenCV GrabCut baseline driven by the same clicks (no torch needed).

Each returns ``(factory or {dataset: factory}, config for run.json, device description)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from icmformer.evaluation.protocol import DEFAULT_PROTOCOL, EvalProtocol

UNTRAINED_SEED = 0  # a model name without weights: torch.manual_seed of the untrained weights (as predict)


def grabcut_method(max_side: int = 320, iterations: int = 2):
    """The OpenCV GrabCut baseline (working resolution ``max_side``, ``iterations`` per click)."""
    import cv2

    from icmformer.evaluation.baselines import GrabCutPredictFn
    from icmformer.utils import describe_device

    opts = dict(max_side=max_side, iterations=iterations)

    def factory(sample):
        return GrabCutPredictFn(sample.image, **opts)

    config = {"method": "grabcut", "grabcut": opts, "opencv": cv2.__version__}
    return factory, config, describe_device("cpu", f"OpenCV {cv2.__version__} grabCut")


def model_method(
    datasets: Sequence[str],
    protocol: EvalProtocol = DEFAULT_PROTOCOL,
    checkpoint: str | Path | None = None,
    model: str | None = None,
    pretrained: bool = False,
    device: str | None = None,
    fast: bool | str = False,
    onnx: str | Path | None = None,
):
    """A model method for each of ``datasets``: exactly one of ``checkpoint`` (a file),
    ``model`` (a registry name; its shipped weights with ``pretrained``, else seeded untrained
    weights) or ``onnx`` (an ``icmformer export-onnx`` folder, run by onnxruntime on the CPU).
    ``fast``: a CPU fast mode of :data:`icmformer.models.fast.FAST_MODES` (``"int8"`` or
    ``"bf16"``; ``True`` means ``"int8"``). ``device`` defaults to CUDA when available."""
    if onnx is not None:
        if checkpoint or model or fast or device not in (None, "cpu"):
            raise ValueError("--onnx DIR evaluates an ONNX export on the CPU; do not combine it with --checkpoint, --model, --fast or --device")
        return _onnx_method(datasets, protocol, onnx)
    import torch

    from icmformer.evaluation.batched import ModelMethod
    from icmformer.evaluation.records import weights_fingerprint
    from icmformer.models.factory import load_model
    from icmformer.utils import describe_device

    if bool(checkpoint) == bool(model):
        raise ValueError("--method model needs exactly one of --checkpoint FILE or --model NAME")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch.random.fork_rng(devices=[]):  # untrained weights are seeded: a resumed run is the same model
        torch.manual_seed(UNTRAINED_SEED)
        net = load_model(checkpoint, model, pretrained=pretrained, device=dev)
    if checkpoint:
        what = {"checkpoint": str(Path(checkpoint).resolve())}
    elif pretrained:
        what = {"model": model, "pretrained": str(net.checkpoint_path)}
    else:
        what = {"model": model, "untrained": True, "seed": UNTRAINED_SEED}
    # a resumed run must use the same weights (icmformer.evaluation.records checks it)
    what["weights_sha256"] = weights_fingerprint(net)
    if fast:
        from icmformer.models.fast import FAST_MODES, make_fast

        mode = "int8" if fast is True else str(fast)
        if mode not in FAST_MODES:
            raise ValueError(f"unknown --fast mode {mode!r}; choose from {', '.join(FAST_MODES)}")
        if dev.type != "cpu":
            raise ValueError(f"--fast {mode} is a CPU mode; use --device cpu")
        net = make_fast(net, mode)
        what["fast"] = net.quantized
    base = int(net.default_input_size)
    factories = {n: ModelMethod(net, device=dev, **protocol.predictor_options(n, base)) for n in datasets}
    config = {
        "method": "model",
        **what,
        "model_name": getattr(net, "name", None),
        "zoom_in": protocol.zoom_in,
        "flip": protocol.flip,
        "target_size": protocol.input_size(None, base),
        "davis_target_size": protocol.input_size("DAVIS", base),
    }
    return factories, config, describe_device(dev)


def _onnx_method(datasets: Sequence[str], protocol: EvalProtocol, folder: str | Path):
    import hashlib

    from icmformer.deploy.onnx_backend import OnnxBackend
    from icmformer.evaluation.batched import ModelMethod
    from icmformer.utils import describe_device

    backend = OnnxBackend(folder)
    h = hashlib.sha256()  # a resumed run must use the same graphs
    for part in ("encoder", "decoder"):
        h.update((Path(folder) / backend.meta[part]["file"]).read_bytes())
    base = int(backend.default_input_size)
    factories = {n: ModelMethod(backend, **protocol.predictor_options(n, base)) for n in datasets}
    config = {
        "method": "model", "onnx": str(Path(folder).resolve()), "weights_sha256": h.hexdigest(),
        "model_name": backend.name, "backend": f"onnxruntime {backend.ort_version}",
        "zoom_in": protocol.zoom_in, "flip": protocol.flip,
        "target_size": protocol.input_size(None, base), "davis_target_size": protocol.input_size("DAVIS", base),
    }  # fmt: skip
    if protocol.input_size("DAVIS", base) != base and "DAVIS" in [str(n).upper() for n in datasets]:
        raise ValueError(f"the ONNX graphs take {base} px crops only; evaluate DAVIS with --davis-target-size {base}")
    return factories, config, describe_device("cpu", f"onnxruntime {backend.ort_version}, {backend.threads} threads")


def evaluate(
    datasets: Sequence[str] | str,
    data_root: str | Path = "data",
    out_dir: str | Path | None = None,
    method: str = "model",
    protocol: EvalProtocol = DEFAULT_PROTOCOL,
    *,
    batch_size: int = 1,
    limit: int | None = None,
    resume: bool = True,
    progress: bool = True,
    grabcut: dict | None = None,
    **model_options,
) -> dict:
    """Evaluate ``method`` (``"model"`` or ``"grabcut"``) on ``datasets`` (names, or one
    comma-separated string) with ``protocol``; records and the summary go to ``out_dir`` (default
    ``results/runs/evaluate_<method>``). ``model_options`` go to :func:`model_method`
    (``checkpoint``, ``model``, ``pretrained``, ``device``, ``fast``, ``onnx``), ``grabcut`` to
    :func:`grabcut_method`. Returns the summary (see :func:`~icmformer.evaluation.runner.run_evaluation`)."""
    from icmformer.data.datasets import get_dataset
    from icmformer.evaluation.runner import run_evaluation

    names = [n.strip() for n in datasets.split(",")] if isinstance(datasets, str) else [str(n).strip() for n in datasets]
    names = [n for n in names if n]
    if not names:
        raise ValueError("no datasets given; give e.g. GrabCut,Berkeley,DAVIS")
    if method not in ("model", "grabcut"):
        raise ValueError(f"method must be 'model' or 'grabcut', got {method!r}")
    if batch_size > 1 and method != "model":
        raise ValueError(f"--batch-size {batch_size} needs --method model (the {method} baseline runs one instance at a time)")
    readers = [get_dataset(n, data_root) for n in names]  # fail early on missing data
    out = Path(out_dir or f"results/runs/evaluate_{method}")
    if method == "grabcut":
        factory, config, device = grabcut_method(**(grabcut or {}))
    else:
        factory, config, device = model_method([r.name for r in readers], protocol, **model_options)
    return run_evaluation(readers, data_root, factory, out, resume=resume, progress=progress, limit=limit,
                          config=config, device=device, batch_size=batch_size, protocol=protocol)  # fmt: skip
