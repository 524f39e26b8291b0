"""Reading pickles without running code from them: one exact allowlist for the whole package.

A pickle is a program: each global it names is imported and may be called with arguments from
the file. So every pickle icmformer reads (official ``.pth`` checkpoints, training states, the
RITM/LVIS annotation pickles of the training sets) goes through :class:`SafeUnpickler`, which
resolves only the globals listed here **by exact module and name**:

- builtin containers and scalars (``list``, ``dict``, ``tuple``, ``set``, ``frozenset``, ``int``,
  ``float``, ``complex``, ``str``, ``bytes``, ``bytearray``, ``bool``, ``slice``, ``range``),
  ``collections.OrderedDict`` and ``Counter``, ``_codecs.encode`` (bytes written by protocol 2);
- the tensor rebuild functions of ``torch._utils`` (``_rebuild_tensor_v2``,
  ``_rebuild_parameter``, ``_rebuild_parameter_with_state``), torch storages and dtypes;
- numpy array reconstruction (``ndarray``, ``dtype``, ``multiarray._reconstruct`` / ``scalar``,
  ``numeric._frombuffer``, both under ``numpy.core`` and ``numpy._core``) and the
  ``numpy.dtypes.*DType`` classes.

Anything else is refused with :class:`RefusedGlobal` (a ``ValueError`` naming the global), before
it is imported. Module prefixes such as ``torch.*`` or ``numpy.*`` are never trusted as a whole:
they hold functions that run code (``numpy.testing._private.utils.runstring``,
``torch.fx.graph_module._exec_with_source``, ``torch.storage._load_from_bytes``).

Official iCMFormer checkpoints also pickle objects of the isegm code base in their config (e.g.
its ``CrossEntropyLoss``); with ``placeholders=True`` globals under ``isegm`` (and only there)
become inert stand-in classes that store their arguments and never import or run the original.

:func:`load_torch` first tries ``torch.load(weights_only=True)`` (torch's own allowlist) and
falls back to this unpickler only when that refuses the file. Errors are one line naming the
file; they never suggest ``weights_only=False``.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

__all__ = ["RefusedGlobal", "SafeUnpickler", "is_allowed", "load_pickle", "loads", "load_torch"]

_BUILTINS = ("list", "dict", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
             "bytearray", "bool", "slice", "range")  # fmt: skip

_EXACT = frozenset(
    [("builtins", n) for n in _BUILTINS]
    + [("__builtin__", n) for n in _BUILTINS]  # protocol 0-2 pickles written by Python 2
    + [("collections", "OrderedDict"), ("collections", "Counter"), ("_codecs", "encode")]  # Counter: lr-scheduler milestones
    + [("torch._utils", n) for n in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")]
    + [("torch", "Size")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [
        (f"numpy.{core}.{mod}", name)
        for core in ("core", "_core")
        for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
    ]
)

#: module prefixes of official checkpoints whose classes become inert placeholders (``placeholders=True``)
PLACEHOLDER_MODULES = ("isegm",)


class RefusedGlobal(pickle.UnpicklingError, ValueError):
    """The pickle names a global that is not on the allowlist (nothing was imported or run)."""

    def __init__(self, module: str, name: str) -> None:
        self.global_name = f"{module}.{name}"
        super().__init__(
            f"global {self.global_name} is not allowed (only tensors, numpy arrays and plain containers are loaded)"
        )


def _is_torch_storage_or_dtype(module: str, name: str) -> bool:
    if module not in ("torch", "torch.storage"):
        return False
    import torch

    obj = getattr(torch if module == "torch" else torch.storage, name, None)
    if isinstance(obj, torch.dtype):
        return True
    return isinstance(obj, type) and name.endswith("Storage") and issubclass(obj, (torch.storage.TypedStorage, torch.UntypedStorage))


def _is_numpy_dtype_class(module: str, name: str) -> bool:
    if module != "numpy.dtypes" or not name.endswith("DType"):
        return False
    import numpy as np

    obj = getattr(getattr(np, "dtypes", None), name, None)
    return isinstance(obj, type) and issubclass(obj, np.dtype)


def is_allowed(module: str, name: str) -> bool:
    """Whether ``module.name`` may be resolved by :class:`SafeUnpickler` (exact match only)."""
    return (module, name) in _EXACT or _is_torch_storage_or_dtype(module, name) or _is_numpy_dtype_class(module, name)


class _Placeholder:
    """Stands in for a class of the official isegm code base: keeps its arguments, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> "_Placeholder":
        return _Placeholder(*args)


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the allowlisted globals (see the module docstring)."""

    placeholders = False

    def find_class(self, module: str, name: str) -> Any:
        if is_allowed(module, name):
            return super().find_class(module, name)
        if self.placeholders and module.split(".")[0] in PLACEHOLDER_MODULES:
            return type(name, (_Placeholder,), {"__module__": f"placeholder:{module}"})
        raise RefusedGlobal(module, name)


class _PlaceholderUnpickler(SafeUnpickler):
    placeholders = True


def _pickle_module(placeholders: bool):
    """An object with ``Unpickler`` and ``load``, as ``torch.load(pickle_module=...)`` expects."""
    cls = _PlaceholderUnpickler if placeholders else SafeUnpickler

    class _Module:
        Unpickler = cls
        UnpicklingError = pickle.UnpicklingError
        __name__ = "icmformer.safe_pickle"

        @staticmethod
        def load(f, **kw):
            return cls(f, **kw).load()

    return _Module


def loads(data: bytes, placeholders: bool = False) -> Any:
    """Unpickle ``data`` with the allowlist (raises :class:`RefusedGlobal` for anything else)."""
    cls = _PlaceholderUnpickler if placeholders else SafeUnpickler
    return cls(io.BytesIO(data)).load()


def load_pickle(path: str | Path, what: str = "pickle") -> Any:
    """Read a plain pickle file (builtin containers, numpy arrays) with the allowlist.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the pickle names anything else (refused before it is imported) or is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return loads(path.read_bytes())
    except RefusedGlobal as e:
        raise ValueError(f"{path}: refused {what}: {e}; nothing from the file was run") from e
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError,
            KeyError, MemoryError, UnicodeDecodeError) as e:  # fmt: skip
        raise ValueError(f"{path}: cannot read {what} ({type(e).__name__}: {_first_line(e)})") from e


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    if "weights_only" in line:  # torch's advice to load untrusted files with code execution
        line = "the file contains objects other than tensors and plain containers"
    return line[:300]


def load_torch(path: str | Path, what: str = "checkpoint", placeholders: bool = False) -> Any:
    """``torch.load`` a file safely: ``weights_only=True`` first, then :class:`SafeUnpickler`.

    ``placeholders=True`` (official checkpoints) turns isegm objects into inert placeholders.
    Raises ``FileNotFoundError`` (missing file) or ``ValueError`` (refused global, corrupt or
    truncated file) with a one-line message naming ``path``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as first:
            if "global" not in str(first).lower() and "unsupported" not in str(first).lower():
                raise
            # torch's allowlist refused a global: ours is as strict for code, and optionally
            # replaces the official isegm config objects by placeholders
            return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_pickle_module(placeholders))
    except RefusedGlobal as e:
        raise ValueError(f"{path}: refused {what}: {e}; nothing from the file was run") from e
    except MemoryError as e:
        raise ValueError(f"{path}: cannot read {what}: out of memory") from e
    except Exception as e:  # corrupt, truncated, not a torch file
        raise ValueError(f"{path}: cannot read {what} ({type(e).__name__}: {_first_line(e)})") from e
