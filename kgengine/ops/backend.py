"""Backend selection for the custom ops: chosen once per (op, device type), overridable.

Backends: ``"torch"`` (the plain PyTorch reference, any device), ``"numba"`` (Numba CPU,
CPU tensors), ``"numba_cuda"`` (Numba CUDA, CUDA tensors), ``"cupy"`` (CuPy ``RawModule``
kernels from ``kernels/*.cu``, CUDA tensors).

Automatic choice:

- CPU tensors: :data:`CPU_DEFAULT`, the faster of {torch, numba} in ``bench/bench_ops.py``
  on the 2-core AMD EPYC development machine (numbers in ``kernels/README.md``). Numba wins
  both ops there (downscale of a 2040x1356 RGB image 3.2-5x faster than the torch reference
  and 45-120x faster than SciPy; patch sampling 29-47x; G's forward+backward 1.5-1.8x), so
  both default to ``"numba"`` when Numba imports; otherwise ``"torch"``.
- CUDA tensors: ``"cupy"`` if CuPy imports, sees a device and compiles the kernels, else
  ``"numba_cuda"`` if ``numba.cuda.is_available()``, else ``"torch"``.

Override: the ``backend=`` argument of an op, else the environment variable
``KGENGINE_OPS_BACKEND`` (read at each call). A requested backend that is unknown raises
``ValueError``; one that is not available, or does not run on the tensor's device (e.g.
``"numba"`` for a CUDA tensor), falls back to ``"torch"`` with one ``RuntimeWarning`` per
(backend, device type).
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

BACKENDS = ("torch", "numba", "numba_cuda", "cupy")
OPS = ("downscale", "sample_patches")
ENV_VAR = "KGENGINE_OPS_BACKEND"

#: Backends that can run on each device type (besides "torch").
DEVICE_BACKENDS = {"cpu": ("numba",), "cuda": ("cupy", "numba_cuda")}

#: Default CPU backend per op, from bench/bench_ops.py (see the module docstring).
CPU_DEFAULT = {"downscale": "numba", "sample_patches": "numba"}

_warned: set[tuple[str, str]] = set()


@functools.cache
def availability(name: str) -> tuple[bool, str]:
    """``(usable, reason)`` for a backend name; probed once (lazily) and cached."""
    if name == "torch":
        return True, f"torch {torch.__version__}"
    if name == "numba":
        try:
            import numba
        except Exception as exc:
            return False, f"numba does not import ({type(exc).__name__}: {exc})"
        return True, f"numba {numba.__version__}"
    if name == "numba_cuda":
        try:
            from numba import cuda
        except Exception as exc:
            return False, f"numba.cuda does not import ({type(exc).__name__}: {exc})"
        try:
            ok = bool(cuda.is_available())
        except Exception as exc:
            return False, f"numba.cuda failed ({type(exc).__name__}: {exc})"
        if not ok:
            return False, "no CUDA device (numba.cuda.is_available() is False)"
        sim = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
        return True, "CUDA simulator" if sim else "CUDA device found"
    if name == "cupy":
        try:
            import cupy
        except Exception as exc:
            return False, f"cupy not installed ({type(exc).__name__}: {exc})"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            return False, f"no CUDA device ({type(exc).__name__}: {exc})"
        if count < 1:
            return False, "no CUDA device"
        try:
            from kgengine.ops import _cupy

            _cupy.load_modules()
        except Exception as exc:
            return False, f"kernels/*.cu do not compile ({type(exc).__name__}: {exc})"
        return True, f"cupy {cupy.__version__}, {count} device(s)"
    raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")


def _runs_on(name: str, device_type: str) -> bool:
    return name == "torch" or name in DEVICE_BACKENDS.get(device_type, ())


@functools.cache
def auto_backend(op: str, device_type: str) -> str:
    """The automatic backend of ``op`` for tensors on ``device_type`` ("cpu" or "cuda")."""
    if op not in OPS:
        raise ValueError(f"op: expected one of {OPS}, got {op!r}")
    if device_type == "cpu":
        name = CPU_DEFAULT[op]
        return name if availability(name)[0] else "torch"
    if device_type == "cuda":
        for name in ("cupy", "numba_cuda"):
            if availability(name)[0]:
                return name
    return "torch"


def resolve(op: str, device: torch.device | str, requested: str | None = None) -> str:
    """The backend that runs ``op`` on ``device``: ``requested``, else the env var, else auto.

    An unknown name raises ``ValueError``; an unusable one falls back to ``"torch"`` with one
    warning per (name, device type).
    """
    device_type = torch.device(device).type
    name = requested or os.environ.get(ENV_VAR, "").strip() or None
    if name is None:
        return auto_backend(op, device_type)
    if name not in BACKENDS:
        source = "backend" if requested else ENV_VAR
        raise ValueError(f"{source}: expected one of {BACKENDS}, got {name!r}")
    if not _runs_on(name, device_type):
        reason = f"it does not run on {device_type} tensors"
    else:
        ok, reason = availability(name)
        if ok:
            return name
    if (name, device_type) not in _warned:
        _warned.add((name, device_type))
        warnings.warn(
            f"kgengine ops: backend {name!r} unavailable ({reason}); using 'torch'",
            RuntimeWarning,
            stacklevel=3,
        )
    return "torch"


def backend_report() -> dict[str, str]:
    """What ``kgengine info`` prints: the chosen backend per op and device, and availability.

    Keys: ``"<op> (cpu)"``, ``"<op> (cuda)"`` for each op, then ``"numba"``, ``"numba.cuda"``,
    ``"cupy"`` (``"yes: <detail>"`` or ``"no: <reason>"``) and the override env var.
    """
    report: dict[str, str] = {}
    for op in OPS:
        report[f"{op} (cpu)"] = auto_backend(op, "cpu")
        report[f"{op} (cuda)"] = auto_backend(op, "cuda")
    for key, name in (("numba", "numba"), ("numba.cuda", "numba_cuda"), ("cupy", "cupy")):
        ok, why = availability(name)
        report[key] = f"{'yes' if ok else 'no'}: {why}"
    report[ENV_VAR] = os.environ.get(ENV_VAR) or "(unset)"
    return report
