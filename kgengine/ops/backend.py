"""Backend selection for the custom ops: one table, one interface, chosen once per caller.

Backends (:data:`MODULES`): ``"torch"`` (:mod:`kgengine.ops._torch`, the plain PyTorch
reference, any device), ``"numba"`` (:mod:`kgengine.ops._numba_cpu`, CPU tensors),
``"numba_cuda"`` (:mod:`kgengine.ops._numba_cuda`, CUDA tensors), ``"cupy"``
(:mod:`kgengine.ops._cupy`, CuPy ``RawModule`` kernels from ``kernels/*.cu``, CUDA tensors).
Every backend module defines each op of :data:`OPS` under the op's name with the public
op's signature (without ``backend=``), so :func:`resolve` hands back a function that the
caller keeps and calls many times::

    sample = resolve("sample_patches", device)   # once
    batch = sample(images, cdf, sizes_hw, seeds, it, g_size, d_size, noise_std)  # each step

The backend modules are imported on first use (importing :mod:`kgengine.ops` does not
import Numba or CuPy).

Automatic choice:

- CPU tensors: :data:`CPU_DEFAULT`, the faster of {torch, numba} in ``bench/bench_ops.py``
  on the 2-core AMD EPYC development machine (numbers in ``kernels/README.md``). Numba wins
  both ops there (downscale of a 2040x1356 RGB image 3.2-5x faster than the torch reference
  and 45-120x faster than SciPy; patch sampling 29-47x; G's forward+backward 1.5-1.8x), so
  both default to ``"numba"`` when Numba imports; otherwise ``"torch"``.
- CUDA tensors: :data:`CUDA_DEFAULT`, from ``bench/bench_ops.py`` on one NVIDIA H200
  (``bench/data/gpu_h200.md``). ``downscale``: ``"torch"`` (cuDNN's strided convolution was
  2.3-2.5x faster than the CuPy kernel on a 2040x1356 image and 1.4-3.3x on G's
  forward+backward). ``sample_patches``: ``"cupy"`` (15-20x the torch reference) if CuPy
  imports, sees a device and compiles the kernels, else ``"numba_cuda"`` if Numba CUDA
  finds a device and compiles a kernel (not measured: numba-cuda could not compile on that
  machine), else ``"torch"``.

Override: the ``backend=`` argument of an op or of :func:`resolve`, else the environment
variable ``KGENGINE_OPS_BACKEND`` (read at each resolution: at each call of a public op, once
for a function from :func:`resolve`). A requested backend that is unknown raises
``ValueError``; one that is not available, or does not run on the device (e.g. ``"numba"``
for CUDA), falls back to ``"torch"`` with one ``RuntimeWarning`` per (backend, device type).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import torch

from kgengine.env_settings import OPS_BACKEND_VAR, ops_backend
from kgengine.errors import BadSettingError

#: Module of each backend; each defines every op of :data:`OPS` with the public signature.
MODULES = {
    "torch": "kgengine.ops._torch",
    "numba": "kgengine.ops._numba_cpu",
    "numba_cuda": "kgengine.ops._numba_cuda",
    "cupy": "kgengine.ops._cupy",
}
BACKENDS = tuple(MODULES)
OPS = ("downscale", "sample_patches")
ENV_VAR = OPS_BACKEND_VAR

_LOCAL = threading.local()


@contextlib.contextmanager
def serial_ops() -> Iterator[None]:
    """Inside (on this thread): the parallel CPU kernels run their serial twins whatever the
    size of a call, for a caller whose threads are busy with its own tasks (the trainer with
    the compiled networks: D's tasks take the threads; G's downscale at B = 4 and 8 was faster
    serial, 0.54 vs 0.75 and 0.97 vs 1.3 ms on 2 cores). The twins give the same bits (tested)."""
    depth = getattr(_LOCAL, "serial", 0)
    _LOCAL.serial = depth + 1
    try:
        yield
    finally:
        _LOCAL.serial = depth


def serial_only() -> bool:
    """Whether the calling thread is inside :func:`serial_ops`."""
    return getattr(_LOCAL, "serial", 0) > 0


#: Backends that can run on each device type (besides "torch").
DEVICE_BACKENDS = {"cpu": ("numba",), "cuda": ("cupy", "numba_cuda")}

#: Default CPU backend per op, from bench/bench_ops.py (see the module docstring).
CPU_DEFAULT = {"downscale": "numba", "sample_patches": "numba"}
#: CUDA backends per op in order of preference (the first usable one; else "torch"), from
#: bench/bench_ops.py on an H200 (see the module docstring).
CUDA_DEFAULT = {"downscale": (), "sample_patches": ("cupy", "numba_cuda")}

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
        try:
            _module("numba_cuda").compile_probe()
        except Exception as exc:
            return False, f"numba.cuda cannot compile a kernel ({type(exc).__name__}: {exc})"
        return True, "CUDA simulator" if sim else "CUDA device found, kernels compile"
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
            _module("cupy").load_modules()
        except Exception as exc:
            return False, f"kernels/*.cu do not compile ({type(exc).__name__}: {exc})"
        return True, f"cupy {cupy.__version__}, {count} device(s)"
    raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")


def _module(name: str) -> ModuleType:
    """The backend module of ``name`` (imported on first use)."""
    return importlib.import_module(MODULES[name])


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
        for name in CUDA_DEFAULT[op]:
            if availability(name)[0] and not _simulated(name):
                return name
    return "torch"


def _simulated(name: str) -> bool:
    """``numba_cuda`` under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): a test
    harness, thousands of times slower than torch (25 s a patch-sampling call), so never
    picked automatically, only when named (0.9.27)."""
    return name == "numba_cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def backend_name(op: str, device: torch.device | str, backend: str | None = None) -> str:
    """The backend that runs ``op`` on ``device``: ``backend``, else the env var, else auto.

    An unknown name raises ``ValueError``; an unusable one falls back to ``"torch"`` with one
    ``RuntimeWarning`` per (name, device type).
    """
    if op not in OPS:
        raise ValueError(f"op: expected one of {OPS}, got {op!r}")
    device_type = torch.device(device).type
    name = backend or ops_backend()
    if name is None:
        return auto_backend(op, device_type)
    if name not in BACKENDS:
        raise BadSettingError(f"backend: expected one of {BACKENDS}, got {name!r}")
    if not _runs_on(name, device_type):
        reason = f"it does not run on {device_type} tensors"
    else:
        ok, reason = availability(name)
        if ok:
            return name
    if (name, device_type) not in _warned:
        _warned.add((name, device_type))
        warnings.warn(
            f"kgengine ops: backend {name!r} unavailable ({' '.join(reason.split())}); "
            "using 'torch'",
            RuntimeWarning,
            stacklevel=4,
        )
    return "torch"


def resolve(
    op: str, device: torch.device | str, backend: str | None = None
) -> Callable[..., Any]:
    """The function that runs ``op`` on tensors of ``device``, to keep and call many times.

    The backend is chosen by :func:`backend_name` (``backend``, else
    ``KGENGINE_OPS_BACKEND``, else automatic; fallback to ``"torch"`` with one warning).
    The function has the public op's signature without ``backend=``: for ``"downscale"``
    ``(x, kernel, scale, border="reflect") -> Tensor`` like :func:`kgengine.ops.downscale`,
    for ``"sample_patches"`` ``(images, cdf, sizes_hw, seeds, iteration, g_size, d_size,
    noise_std) -> PatchBatch`` like :func:`kgengine.ops.sample_patches`.

    >>> resolve("downscale", "cpu", "torch").__module__
    'kgengine.ops._torch'
    """
    return getattr(_module(backend_name(op, device, backend)), op)


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
        report[key] = f"{'yes' if ok else 'no'}: {' '.join(why.split())}"
    report[ENV_VAR] = os.environ.get(ENV_VAR) or "(unset)"
    return report
