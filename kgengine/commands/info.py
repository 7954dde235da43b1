"""``kgengine info``: what this machine offers (torch/CUDA, onnxruntime, Numba, CuPy)."""

from __future__ import annotations

import os
from typing import Any

import typer

from kgengine._version import __version__
from kgengine.commands._common import cli_errors
from kgengine.sysinfo import machine_info


def register(app: typer.Typer) -> None:
    app.command("info")(info)


@cli_errors
def info() -> None:
    """Print versions and which accelerated paths are available here, with reasons."""
    for section, entries in collect().items():
        typer.echo(f"{section}:")
        for key, value in entries.items():
            typer.echo(f"  {key}: {value}")


def _torch() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"version": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["cuda"] = f"yes ({torch.version.cuda}): {torch.cuda.get_device_name(0)}"
    else:
        out["cuda"] = "no (torch.cuda.is_available() is False)"
    return out


def _onnxruntime() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"available": f"no ({exc})"}
    from kgengine.providers import ORT_NAMES, cuda_device_count, probe_provider

    n, reason = cuda_device_count()
    built = [name for name in ("tensorrt", "cuda")
             if ORT_NAMES[name] in ort.get_available_providers()]
    if not (n and built):
        usable = f"CPU only ({reason or 'no GPU build'})"
    else:  # a session on a one-node model, as degrade would open one (0.9.27: built + driver
        tried = {name: probe_provider(name) for name in built}  # was taken for usable)
        ok = [ORT_NAMES[name] for name, why in tried.items() if not why]
        notes = "; ".join(f"{name}: {why}" for name, why in tried.items() if why)
        usable = " + ".join([*ok, "CPU"]) + (f" ({notes})" if notes else "")
    return {"version": ort.__version__, "built with": ", ".join(ort.get_available_providers()),
            "usable here": usable}


def _numba() -> dict[str, Any]:
    try:
        import numba
    except Exception as exc:  # noqa: BLE001 - ImportError, or a bad NUMBA_* variable
        return {"available": f"no ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"}
    out: dict[str, Any] = {"version": numba.__version__}
    try:
        from numba import cuda

        out["cuda"] = "yes" if cuda.is_available() else "no (no CUDA driver/device)"
    except Exception as exc:  # noqa: BLE001 - report, never fail
        out["cuda"] = f"no ({exc})"
    out["disk cache"] = _disk_cache()
    return out


def _disk_cache() -> str:
    """Whether kgengine's compiled kernels are in Numba's disk cache (judged by D's forward,
    :func:`kgengine.numba_util.cold_cache`), and where."""
    try:
        from kgengine.discriminator_kernels import _forward
        from kgengine.numba_util import cold_cache

        where = getattr(getattr(_forward, "_cache", None), "_cache_path", "?")
        if cold_cache(_forward):
            return f"empty: the next training compiles kgengine's kernels first ({where})"
        return f"filled ({where})"
    except Exception as exc:  # noqa: BLE001 - report, never fail
        return f"unknown ({type(exc).__name__})"


def _cupy() -> dict[str, Any]:
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - ImportError or CUDA runtime errors
        return {"available": f"no ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"}
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        return {"version": cupy.__version__, "devices": n}
    except Exception as exc:  # noqa: BLE001
        return {"version": cupy.__version__, "devices": f"0 ({type(exc).__name__})"}


def _ops() -> dict[str, Any]:
    try:
        from kgengine.ops.backend import backend_report
    except ImportError as exc:
        return {"available": f"no ({exc})"}
    import torch

    from kgengine.compiled import compiled_on

    try:
        out = dict(backend_report())
        out.update(_overridden_ops())
    except Exception as exc:  # noqa: BLE001 - report, never fail
        return {"available": f"no ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"}
    out["networks (cpu)"] = ("numba (compiled G composition, D passes, priors, Adam)"
                             if compiled_on(torch.device("cpu")) else "torch (the references)")
    out["networks (cuda)"] = "torch"
    from kgengine.graph_step import ENV_VAR

    value = os.environ.get(ENV_VAR, "").strip()
    out["cuda graph of the step"] = (f"{ENV_VAR}={value}" if value
                                     else f"off ({ENV_VAR}=1 captures it on CUDA)")
    if value:
        from kgengine.graph_step import mode_for

        try:
            mode_for(torch.device("cuda"))  # parses the value; nothing runs on a GPU
        except ValueError as exc:
            out["cuda graph of the step"] = f"invalid: a training stops with {exc}"
    return out


def _overridden_ops() -> dict[str, str]:
    """The op lines of :func:`backend_report` as ``KGENGINE_OPS_BACKEND`` makes them (the
    report shows the automatic choice): the backend that runs, or why a training stops."""
    import warnings

    from kgengine.ops.backend import ENV_VAR as OPS_VAR
    from kgengine.ops.backend import OPS, backend_name

    name = os.environ.get(OPS_VAR, "").strip()
    if not name:
        return {}
    out = {}
    for op in OPS:
        for device in ("cpu", "cuda"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # an unusable one: torch, said here
                    got = backend_name(op, device)
            except ValueError as exc:
                lines = {f"{o} ({d})": f"none: {OPS_VAR} is invalid" for o in OPS
                         for d in ("cpu", "cuda")}
                return {**lines, OPS_VAR: f"{name} (invalid: a training stops with {exc})"}
            out[f"{op} ({device})"] = (f"{got} (set by {OPS_VAR})" if got == name
                                       else f"{got} ({OPS_VAR}={name} does not run here)")
    return out


def collect() -> dict[str, dict[str, Any]]:
    """Sections of ``kgengine info``."""
    m = machine_info()
    return {
        "kgengine": {"version": __version__, "python": m["python"], "machine": m["machine"],
                     "cpu": f"{m['cpu']} ({m['cores']} cores"
                            + (f", {m['simd']})" if m["simd"] else ")")},
        "torch": _torch(),
        "onnxruntime": _onnxruntime(),
        "numba": _numba(),
        "cupy": _cupy(),
        "ops backends": _ops(),
    }
