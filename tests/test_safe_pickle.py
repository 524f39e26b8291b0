"""Pickle gadgets from torch, numpy and the standard library are refused by every pickle reader.

Each payload would create a marker file if any of its code ran; the tests assert the loader
refuses it with a one-line ValueError naming the global, and that the marker does not exist.
The payloads are only ever given to the loaders under test.
"""
from __future__ import annotations

import builtins
import functools
import importlib
import operator
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from icmformer.safe_pickle import is_allowed, load_pickle, load_torch


class _Gadget:
    """Pickles as ``func(*args)``; callable so that gadgets can be chained (never called here)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)

    def __call__(self, *args):  # pragma: no cover - only pickled
        raise AssertionError("never called")


def _attr_chain(marker):
    """operator.attrgetter('system')(importlib.import_module('os'))('touch marker')"""
    os_module = _Gadget(importlib.import_module, ("os",))
    system = _Gadget(operator.attrgetter("system"), (os_module,))
    return _Gadget(system, (f"touch {marker}",))


def _payloads(marker) -> dict:
    import numpy.testing._private.utils as np_utils
    import torch.fx.graph_module as fx_gm

    code = f"import os; os.system('touch {marker}')"
    return {
        "numpy.testing._private.utils.runstring": _Gadget(np_utils.runstring, (code, {})),
        "torch.fx.graph_module._exec_with_source": _Gadget(fx_gm._exec_with_source, (code, {})),
        "subprocess.Popen": _Gadget(subprocess.Popen, (["touch", str(marker)],)),
        "subprocess.check_output": _Gadget(subprocess.check_output, (["touch", str(marker)],)),
        "builtins.exec": _Gadget(builtins.exec, (code,)),
        "builtins.eval": _Gadget(builtins.eval, (f"__import__('os').system('touch {marker}')",)),
        "operator.attrgetter chain": _attr_chain(marker),
        "functools.partial": _Gadget(functools.partial(os.system, f"touch {marker}"), ()),
        "importlib.import_module": _Gadget(importlib.import_module, ("this",)),
        "os.system": _Gadget(os.system, (f"touch {marker}",)),
        "torch.storage._load_from_bytes": _Gadget(torch.storage._load_from_bytes, (b"x",)),
        "builtins.getattr": _Gadget(getattr, (_Gadget(importlib.import_module, ("os",)), "system")),
    }


PAYLOAD_NAMES = list(_payloads("m"))


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_official_checkpoint_gadgets_are_refused(tmp_path, name):
    from icmformer.models.checkpoint import load_checkpoint, read_official

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    payload = _payloads(marker)[name]
    torch.save({"state_dict": {"a": torch.zeros(2)}, "config": {"class": "isegm.X", "params": {"p": payload}}}, path)
    for load in (read_official, load_checkpoint):
        with pytest.raises(ValueError, match=r"refused official checkpoint: global \S+ is not allowed") as info:
            load(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
        assert "weights_only=False" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_dataset_pickle_gadgets_are_refused(tmp_path, name):
    marker = tmp_path / "marker"
    path = tmp_path / "hannotation.pickle"
    for proto in (2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps({"x": [_payloads(marker)[name]]}, protocol=proto))
        with pytest.raises(ValueError, match="not allowed"):
            load_pickle(path)
    assert not marker.exists()


def test_convert_official_cli_refuses_gadget_in_one_line(tmp_path, capsys):
    from icmformer.cli import main

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "config": {"x": _payloads(marker)["numpy.testing._private.utils.runstring"]}}, path)
    assert main(["convert-official", str(path), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runstring is not allowed" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_allowlist_is_exact_not_by_prefix():
    assert is_allowed("torch._utils", "_rebuild_tensor_v2")
    assert is_allowed("numpy.core.multiarray", "_reconstruct") and is_allowed("numpy._core.multiarray", "_reconstruct")
    assert is_allowed("torch", "float16") and is_allowed("torch", "FloatStorage")
    for module, name in [("torch", "load"), ("torch", "tensor"), ("numpy", "load"), ("numpy.testing._private.utils", "runstring"),
                         ("torch.storage", "_load_from_bytes"), ("builtins", "getattr"), ("builtins", "__import__"),
                         ("collections", "namedtuple"), ("copyreg", "_reconstructor"), ("torch", "Storage_evil")]:  # fmt: skip
        assert not is_allowed(module, name), (module, name)


def test_plain_tensors_and_arrays_round_trip(tmp_path):
    data = {"t": torch.arange(6, dtype=torch.float16).reshape(2, 3), "p": torch.nn.Parameter(torch.ones(2)),
            "a": np.arange(4, dtype=np.int64), "s": np.float32(2.5), "o": {"x": (1, 2.0, "s", b"b", None, {3}, frozenset())}}  # fmt: skip
    path = tmp_path / "ok.pth"
    torch.save(data, path)
    back = load_torch(path)
    assert torch.equal(back["t"], data["t"]) and back["t"].dtype == torch.float16
    np.testing.assert_array_equal(back["a"], data["a"])
    assert back["o"] == data["o"]


def test_corrupt_torch_file_is_one_line_without_weights_only_advice(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"a": torch.zeros(3)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError) as info:
        load_torch(path, "training state")
    msg = str(info.value)
    assert "\n" not in msg and "weights_only" not in msg and "cannot read training state" in msg
    with pytest.raises(FileNotFoundError):
        load_torch(tmp_path / "missing.pt")


def test_no_module_imported_for_refused_globals(tmp_path):
    # the refusal happens before the module named by the global is imported
    name = "icmformer_test_never_imported_module"
    path = tmp_path / "x.pickle"
    path.write_bytes(b"\x80\x02c" + name.encode() + b"\nfunc\nq\x00)R.")
    with pytest.raises(ValueError, match="not allowed"):
        load_pickle(path)
    assert name not in sys.modules


def test_refusal_names_the_culprit_not_a_scheduler_counter(tmp_path):
    import collections
    import pathlib

    from icmformer.safe_pickle import loads

    assert loads(pickle.dumps(collections.Counter({4: 1}))) == collections.Counter({4: 1})  # MultiStepLR milestones
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(m.parameters())
    state = {"scheduler": torch.optim.lr_scheduler.MultiStepLR(opt, [1]).state_dict(), "extra": pathlib.Path("/x")}
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="global pathlib.PosixPath is not allowed"):
        load_torch(tmp_path / "last.pt", "training state")


def test_pretrained_backbone_file_gadget_is_refused(tmp_path):
    from icmformer.models.pretrained import read_state_dict

    marker = tmp_path / "marker"
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "args": _payloads(marker)["torch.fx.graph_module._exec_with_source"]}, path)
    with pytest.raises(ValueError, match="refused pretrained weights: global torch.fx.graph_module._exec_with_source") as info:
        read_state_dict(path)
    assert "\n" not in str(info.value) and not marker.exists()
