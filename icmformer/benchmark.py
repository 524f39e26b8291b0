"""Seconds per click: the naive path against our optimised paths, measured side by side.

One run, one instance, the same simulated clicks for every mode (the standard protocol: first click
at the object's interior point farthest from the boundary, then the largest error region), the
official evaluation predictor (zoom-in + horizontal flip) around each model variant:

- ``naive``: the official cost: a full forward pass per click (image branch included), fp32,
  eager, explicit-softmax attention, the head's official fusion order (:class:`NaiveForward`);
- ``optimised``: the image branch encoded once per crop and reused, fused scaled-dot-product
  attention, ``inference_mode``, low-resolution head fusion; on CUDA also bf16 autocast
  (and ``torch.compile`` with ``compile=True``);
- ``fast`` (CPU, opt-in): ``optimised`` with int8 dynamic quantisation of the Linear layers;
- ``bf16`` (CPU, opt-in): ``optimised`` under bf16 autocast with the Linear / Conv weights cast to
  bf16 once (oneDNN; AMX tiles where the CPU has them; :func:`icmformer.models.fast.to_bf16`);
- ``onnx`` (CPU): the model exported with ``icmformer export-onnx`` (to a temporary folder) and
  run by onnxruntime through the same protocol core (:class:`~icmformer.deploy.onnx_backend.OnnxBackend`).

Which kernels ran is reported per mode: the CPU's flags (AVX-512, VNNI, BF16, AMX), PyTorch's CPU
capability and the oneDNN primitives one click executed (:mod:`icmformer.kernels`).

Modes run interleaved (naive, optimised, fast, naive, ...) so that a slow moment of a shared
machine hits all of them; the first round is a warm-up and is excluded. Reported per mode: the
median seconds per click of the model call (``spc``), its spread (quartiles, min, max), the
official SPC (wall time of the whole loop incl. click simulation / clicks), encode calls, peak
memory, and evaluation throughput (instances per second for the 20-click protocol). An agreement
pass replays one click sequence through ``naive`` and ``optimised`` and reports the largest logit
difference and whether the masks are identical.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

MODES = ("naive", "optimised", "fast", "bf16", "onnx")
DEFAULT_MODES = ("naive", "optimised", "fast")  # run_benchmark's default; the CLI runs all MODES


@dataclass
class ModeResult:
    mode: str
    spc_s: float
    spc_q1_s: float
    spc_q3_s: float
    spc_min_s: float
    spc_max_s: float
    official_spc_s: float
    ratio_to_naive: float | None
    clicks_measured: int
    encode_calls_per_instance: float
    peak_memory_mb: float | None
    instances_per_s: float
    throughput_extrapolated: bool


@dataclass
class BenchResult:
    model: str
    device: str
    device_name: str
    threads: int
    input_size: int
    instance: str
    clicks_per_instance: int
    repeats: int
    modes: list[ModeResult] = field(default_factory=list)
    agreement: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cpu: dict = field(default_factory=dict)
    kernels: dict = field(default_factory=dict)
    flops: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def mode(self, name: str) -> ModeResult:
        for m in self.modes:
            if m.mode == name:
                return m
        raise KeyError(f"mode {name!r} not measured; measured: {[m.mode for m in self.modes]}")


def device_name(device: torch.device) -> str:
    from icmformer.utils import describe_device

    return describe_device(device)


def bench_instance(data_root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """A real GrabCut instance when the data is available, else a synthetic 480x640 image."""
    if data_root is not None and (Path(data_root) / "GrabCut").is_dir():
        from icmformer.data.datasets import get_dataset

        ds = get_dataset("GrabCut", data_root)
        sample = ds[0]
        return sample.image, sample.masks[0], f"GrabCut/{sample.name}"
    rng = np.random.default_rng(0)
    h, w = 480, 640
    yy, xx = np.mgrid[:h, :w]
    gt = (((yy - 250) / 150.0) ** 2 + ((xx - 300) / 200.0) ** 2 <= 1).astype(np.int32)
    image = (rng.random((h, w, 3)) * 60 + np.where(gt[..., None] == 1, 150, 40)).astype(np.uint8)
    return image, gt, "synthetic ellipse 480x640"


class _PeakMemory:
    """Peak resident memory (CPU, sampled) or peak allocated memory (CUDA) during a block, in MB."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            import psutil
        except ImportError:  # pragma: no cover
            return self
        self._proc = psutil.Process()
        self._base = self._proc.memory_info().rss
        self._peak = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, self._proc.memory_info().rss)
                time.sleep(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_mb = (self._peak - self._base) / 2**20
        return False


class _Recorder(torch.nn.Module):
    """Delegates to a model and keeps every logits tensor it returns (agreement pass)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.logits: list[torch.Tensor] = []

    @property
    def default_input_size(self) -> int:
        return self.model.default_input_size

    def encode_image(self, image):
        return self.model.encode_image(image)

    def predict_clicks(self, state, clicks, prev_mask=None, allow_outside_clicks=False):
        out = self.model.predict_clicks(state, clicks, prev_mask, allow_outside_clicks=allow_outside_clicks)
        self.logits.append(out.detach().float().cpu())
        return out


def build_variants(model: torch.nn.Module, device: torch.device, modes, compile: bool = False) -> dict:
    from icmformer.models.fast import AutocastBf16, NaiveForward, quantize_int8, to_bf16

    variants = {}
    for mode in modes:
        if mode == "naive":
            variants[mode] = NaiveForward(model).to(device)
        elif mode == "optimised":
            opt = model.to(device).eval().set_fused_attention(True)
            opt.head.low_res_fusion = True
            if device.type == "cuda":
                if compile:
                    opt.backbone = torch.compile(opt.backbone)
                opt = AutocastBf16(opt)
            variants[mode] = opt
        elif mode == "fast":
            if device.type != "cpu":
                continue
            variants[mode] = quantize_int8(model.cpu()).eval()
            model.to(device)
        elif mode == "bf16":
            if device.type != "cpu":  # on CUDA ``optimised`` already runs under bf16 autocast
                continue
            variants[mode] = to_bf16(model.cpu())
        elif mode == "onnx":
            if device.type != "cpu":
                continue
            variants[mode] = _onnx_variant(model)
        else:
            raise ValueError(f"unknown benchmark mode {mode!r}; choose from {', '.join(MODES)}")
    return variants


def _onnx_variant(model: torch.nn.Module):
    """``model`` exported to a temporary folder (parity-checked) and loaded by onnxruntime."""
    import shutil
    import tempfile

    from icmformer.deploy.onnx_backend import OnnxBackend
    from icmformer.deploy.onnx_export import export_onnx

    folder = tempfile.mkdtemp(prefix="icmformer_bench_onnx_")
    try:
        meta = export_onnx(model.cpu().eval(), folder)
        backend = OnnxBackend(folder, threads=torch.get_num_threads())
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the sessions hold the graphs in memory
    backend.parity = meta["parity"]
    return backend


def _record_kernels(res: BenchResult, variants: dict, image: np.ndarray, dev: torch.device) -> None:
    """CPU features, and per mode the oneDNN primitives of one click (CPU runs)."""
    from icmformer.evaluation.clicker import Click
    from icmformer.evaluation.predictor import make_predict_fn
    from icmformer.kernels import cpu_features, onednn_kernels

    if dev.type != "cpu":
        return
    res.cpu = cpu_features()
    click = [Click(True, (image.shape[0] // 2, image.shape[1] // 2), 0)]
    for mode, variant in variants.items():
        if mode == "onnx":
            res.kernels[mode] = [f"onnxruntime {variant.ort_version} {'/'.join(variant.providers)}, {variant.threads} threads"]
            res.agreement["onnx_vs_torch_max_abs_logit_diff"] = variant.parity["max_abs_logit_diff"]
            continue
        fn = make_predict_fn(variant, image, device=dev)
        used = onednn_kernels(lambda: fn(click))
        if mode == "fast":
            used = [f"int8 dynamic linear: quantised engine {torch.backends.quantized.engine}"] + used
        res.kernels[mode] = used or ["no oneDNN primitive (fp32 GEMM through MKL / ATen)"]


def run_benchmark(
    model_name: str = "icmformer_vit_base_448",
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    modes=DEFAULT_MODES,
    pretrained: bool = False,
    clicks: int = 20,
    repeats: int = 3,
    data_root: str | Path | None = None,
    compile: bool = False,
    progress: bool = True,
    **overrides,
) -> BenchResult:
    from icmformer.evaluation.loop import evaluate_sample
    from icmformer.evaluation.predictor import make_predict_fn
    from icmformer.evaluation.protocol import PRED_THRESHOLD
    from icmformer.models.factory import load_model

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but CUDA is not available on this machine")
    torch.manual_seed(0)
    model = load_model(checkpoint, None if checkpoint else model_name, pretrained=pretrained, **overrides)
    name = str(checkpoint) if checkpoint else model_name + (" (shipped weights)" if pretrained else "")
    image, gt, source = bench_instance(data_root)
    variants = build_variants(model, dev, modes, compile=compile)
    res = BenchResult(model=name, device=dev.type, device_name=device_name(dev), threads=torch.get_num_threads(),
                      input_size=model.default_input_size, instance=source, clicks_per_instance=clicks,
                      repeats=repeats)  # fmt: skip
    _record_kernels(res, variants, image, dev)
    from icmformer.models.complexity import encode_decode_flops

    enc, dec = encode_decode_flops(model, (res.input_size, res.input_size))
    res.flops = {"encode_gflops": enc / 1e9, "decode_gflops": dec / 1e9, "exact_floor": dec / (enc + dec)}

    # ---- agreement: the same clicks through naive and optimised
    if "naive" in variants and "optimised" in variants:
        rec = {m: _Recorder(variants[m]) for m in ("naive", "optimised")}
        ref = evaluate_sample(gt, make_predict_fn(rec["naive"], image, device=dev), max_clicks=min(clicks, 5))
        fixed = [list(ref.clicks[: k + 1]) for k in range(len(ref.clicks))]
        fn = make_predict_fn(rec["optimised"], image, device=dev)
        for c in fixed:
            fn(c)
        diffs = [float((a - b).abs().max()) for a, b in zip(rec["naive"].logits, rec["optimised"].logits)]
        fn_naive = make_predict_fn(variants["naive"], image, device=dev)
        fn_opt = make_predict_fn(variants["optimised"], image, device=dev)
        differing, margin = 0, 0.0
        for c in fixed:
            pa, pb = fn_naive(c), fn_opt(c)
            diff = (pa > PRED_THRESHOLD) != (pb > PRED_THRESHOLD)
            differing += int(diff.sum())
            if diff.any():
                margin = max(margin, float(np.abs(pa[diff] - PRED_THRESHOLD).max()))
        res.agreement.update({"clicks": len(fixed), "max_abs_logit_diff": max(diffs), "masks_identical": differing == 0,
                              "differing_pixels": differing, "max_prob_distance_from_threshold": margin})  # fmt: skip

    # ---- timing, interleaved
    per_click = {m: [] for m in variants}
    wall = {m: [] for m in variants}
    encodes = {m: [] for m in variants}
    peaks = {m: [] for m in variants}
    rounds = range(repeats + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=(repeats + 1) * len(variants), desc="bench", unit="run")
    for r in rounds:
        for mode, variant in variants.items():
            with _PeakMemory(dev) as mem:
                fn = make_predict_fn(variant, image, device=dev)
                start = time.perf_counter()
                result = evaluate_sample(gt, fn, max_clicks=clicks)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                elapsed = time.perf_counter() - start
            if r > 0:  # round 0 is the warm-up
                per_click[mode].extend(result.method_times)
                wall[mode].append(elapsed / len(result.ious))
                encodes[mode].append(fn.core.encode_calls)
                if mem.peak_mb is not None:
                    peaks[mode].append(mem.peak_mb)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(mode=mode, spc=f"{statistics.median(result.method_times):.3f}s")
    if bar is not None:
        bar.close()
    naive_spc = statistics.median(per_click["naive"]) if per_click.get("naive") else None
    for mode in variants:
        t = sorted(per_click[mode])
        q = np.quantile(t, [0.25, 0.5, 0.75])
        official = statistics.median(wall[mode])
        res.modes.append(ModeResult(
            mode=mode, spc_s=float(q[1]), spc_q1_s=float(q[0]), spc_q3_s=float(q[2]), spc_min_s=t[0], spc_max_s=t[-1],
            official_spc_s=official, ratio_to_naive=float(q[1]) / naive_spc if naive_spc else None,
            clicks_measured=len(t), encode_calls_per_instance=statistics.mean(encodes[mode]),
            peak_memory_mb=max(peaks[mode]) if peaks[mode] else None,
            instances_per_s=1.0 / (official * 20), throughput_extrapolated=clicks != 20,
        ))  # fmt: skip
    if clicks != 20:
        res.notes.append(f"throughput extrapolated from {clicks} clicks per instance to the 20-click protocol")
    res.notes.append("all modes run under torch.inference_mode (the official script used torch.no_grad)")
    return res


def format_table(res: BenchResult) -> str:
    lines = [
        f"model {res.model} @ {res.input_size}px, device {res.device}: {res.device_name}",
        f"instance {res.instance}, {res.clicks_per_instance} clicks x {res.repeats} repeats (+1 warm-up round), zoom-in + flip",
        "",
        f"{'mode':10s} {'SPC (s)':>9s} {'[q1, q3]':>17s} {'ratio':>6s} {'off. SPC':>9s} {'encodes':>8s} {'peak MB':>8s} {'inst/s':>8s}",
    ]
    for m in res.modes:
        ratio = f"{m.ratio_to_naive:.2f}" if m.ratio_to_naive is not None else "-"
        peak = f"{m.peak_memory_mb:.0f}" if m.peak_memory_mb is not None else "-"
        lines.append(
            f"{m.mode:10s} {m.spc_s:9.3f} [{m.spc_q1_s:7.3f},{m.spc_q3_s:7.3f}] {ratio:>6s} {m.official_spc_s:9.3f} "
            f"{m.encode_calls_per_instance:8.1f} {peak:>8s} {m.instances_per_s:8.4f}"
        )
    a = res.agreement
    if "onnx_vs_torch_max_abs_logit_diff" in a:
        lines.append("")
        lines.append(f"onnx export vs PyTorch (same weights, seeded crops): max |logit diff| {a['onnx_vs_torch_max_abs_logit_diff']:.2e}")
    if "clicks" in a:
        lines.append("")
        lines.append(f"agreement naive vs optimised over {a['clicks']} clicks: max |logit diff| {a['max_abs_logit_diff']:.2e}, "
                     f"masks identical: {a['masks_identical']}")  # fmt: skip
        if not a["masks_identical"]:
            lines.append(f"  {a['differing_pixels']} pixels differ, all within {a['max_prob_distance_from_threshold']:.1e} of the "
                         "0.49 threshold (an untrained model predicts ~0.49 everywhere; use --checkpoint)")  # fmt: skip
    lines.append("")
    lines.append("SPC: median seconds of the model call per click; ratio: SPC / naive SPC; off. SPC: whole loop incl. "
                 "click simulation / clicks (the official script's SPC); inst/s: 20-click instances per second")  # fmt: skip
    if res.flops:
        f = res.flops
        lines.append(f"FLOPs per network input: image branch {f['encode_gflops']:.1f} G (once per crop), the rest "
                     f"{f['decode_gflops']:.1f} G (every click): an exact mode at naive's FLOP rate cannot go below "
                     f"{f['exact_floor']:.2f}x naive")  # fmt: skip
    if res.cpu:
        lines.append(f"CPU flags: {' '.join(res.cpu.get('flags', [])) or '-'}; torch CPU capability {res.cpu.get('torch_cpu_capability')}, "
                     f"quantised engine {res.cpu.get('quantized_engine')}")  # fmt: skip
    for mode, used in res.kernels.items():
        lines.append(f"kernels {mode}: {'; '.join(used) if used else '-'}")
    for note in res.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
