"""Choosing an onnxruntime execution provider that actually works on this machine.

``onnxruntime-gpu`` lists ``TensorrtExecutionProvider`` and ``CUDAExecutionProvider`` as
*available* even where there is no GPU or the CUDA/TensorRT libraries are missing; asking
for them then silently falls back to the CPU. So :func:`make_session` first looks for a
CUDA device through the driver (``libcuda``), then creates the session and reads
``session.get_providers()`` to see which provider really runs the model.

``auto`` tries TensorRT, then CUDA, then CPU, and reports why each skipped one was skipped.
GPU numerics: the CUDA provider is created with ``use_tf32=0`` so that convolutions stay
float32-exact; TensorRT may still pick TF32 tactics on Ampere and newer GPUs (its
degraded images can differ from the CPU's by ~1e-3); use ``cuda`` or ``cpu`` for
bit-comparable results.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from kgengine.errors import KGEngineError

#: Provider choices of the CLI, and the onnxruntime names behind them.
PROVIDERS = ("auto", "tensorrt", "cuda", "cpu")
ORT_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass
class SessionChoice:
    """An onnxruntime session and the provider that runs it (``tensorrt|cuda|cpu``)."""

    session: ort.InferenceSession
    provider: str
    notes: list[str] = field(default_factory=list)  # why faster providers were skipped

    def describe(self) -> str:
        """One line: ``provider: cpu (tensorrt: <why skipped>; cuda: <why skipped>)``."""
        return f"provider: {self.provider}" + (f" ({'; '.join(self.notes)})" if self.notes else "")


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cuda_device_count() -> tuple[int, str]:
    """Number of CUDA devices seen by the driver, and a reason when it is 0.

    Uses ``libcuda`` directly (``cuInit``, ``cuDeviceGetCount``), so it works without a
    CUDA build of torch and never initialises a framework.
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return 0, "no CUDA driver (libcuda not found)"
    if lib.cuInit(0) != 0:
        return 0, "the CUDA driver found no usable device (cuInit failed)"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return 0, "no CUDA device"
    return count.value, ""


def session_options(threads: int | None = None, quiet: bool = True) -> ort.SessionOptions:
    """CPU-friendly options: all graph optimisations, ``threads`` intra-op threads.

    ``threads`` defaults to :func:`usable_cores`. ``ORT_ENABLE_ALL`` matters on the CPU:
    it moves Convs with constant weights (fixed-kernel and generator models) to
    onnxruntime's blocked NCHWc kernels, about 2x faster than ``ORT_ENABLE_BASIC`` here.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or usable_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if quiet:
        so.log_severity_level = 3  # errors only: no warnings about fallbacks
    return so


def _provider_list(name: str, trt_cache: str | os.PathLike | None) -> list:
    cuda = ("CUDAExecutionProvider", {"use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"})
    cpu = "CPUExecutionProvider"
    if name == "tensorrt":
        trt_opts = {"trt_fp16_enable": "False"}
        if trt_cache is not None:
            Path(trt_cache).mkdir(parents=True, exist_ok=True)
            trt_opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(trt_cache))
        return [("TensorrtExecutionProvider", trt_opts), cuda, cpu]
    if name == "cuda":
        return [cuda, cpu]
    return [cpu]


def _try_session(
    model: bytes | str, name: str, threads: int | None, trt_cache: str | os.PathLike | None
) -> tuple[ort.InferenceSession | None, str]:
    """Session running on provider ``name``, or ``(None, reason)``."""
    wanted = ORT_NAMES[name]
    if wanted not in ort.get_available_providers():
        return None, f"{wanted} is not in this onnxruntime build"
    if name != "cpu":
        count, why = cuda_device_count()
        if count == 0:
            return None, why
    made = trt_cache is not None and name == "tensorrt" and not Path(trt_cache).exists()
    try:
        with _quiet_probe(name != "cpu"):
            sess = ort.InferenceSession(
                model, session_options(threads), providers=_provider_list(name, trt_cache)
            )
    except Exception as exc:  # noqa: BLE001 - provider libraries may fail in many ways
        sess, why = None, f"session creation failed ({type(exc).__name__}: {str(exc)[:120]})"
    else:
        why = f"{wanted} did not load (missing CUDA/cuDNN/TensorRT libraries?)"
        sess = sess if sess.get_providers()[0] == wanted else None
    if sess is None and made:  # no empty cache folder left for a provider that did not load
        with contextlib.suppress(OSError):
            Path(trt_cache).rmdir()
    return sess, "" if sess is not None else why


def probe_provider(name: str) -> str:
    """"" where a session on provider ``name`` opens for a one-node model, else why not (one
    line): what ``kgengine info`` reports as usable."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _try_session(model.SerializeToString(), name, 1, None)[1]


@contextlib.contextmanager
def _quiet_probe(on: bool) -> Iterator[None]:
    """While a GPU provider is tried: onnxruntime's library-load errors (its default
    logger, on stderr) and its fallback banner (printed on stdout) are held back; the
    caller says in one line why a provider did not load (0.9.27: a dozen lines came, some
    on stdout). The default logger goes back to onnxruntime's default level, warnings."""
    if not on:
        yield
        return
    ort.set_default_logger_severity(4)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        ort.set_default_logger_severity(2)


def make_session(
    model: bytes | str | os.PathLike,
    provider: str = "auto",
    threads: int | None = None,
    trt_cache: str | os.PathLike | None = None,
) -> SessionChoice:
    """Create an onnxruntime session on ``provider`` (``auto|tensorrt|cuda|cpu``).

    Args:
        model: serialized model bytes or a path.
        provider: ``auto`` = the first of tensorrt, cuda, cpu that works; a named provider
            that does not work is an error.
        threads: CPU intra-op threads (default: all usable cores).
        trt_cache: folder for TensorRT engine caches (none by default).
    Raises:
        KGEngineError: unknown provider, or a named provider that cannot run here.
    """
    if provider not in PROVIDERS:
        raise KGEngineError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if not isinstance(model, bytes):
        model = str(model)
    order = ("tensorrt", "cuda", "cpu") if provider == "auto" else (provider,)
    notes: list[str] = []
    for name in order:
        sess, why = _try_session(model, name, threads, trt_cache)
        if sess is not None:
            return SessionChoice(sess, name, notes)
        notes.append(f"{name}: {why}")
    raise KGEngineError(f"provider {provider!r} cannot run here: {notes[-1]}")
