"""Device and provider choice on a machine without a usable GPU (0.9.27's review): every
assertion here failed before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import kgengine.devices as devices
import kgengine.ops.backend as be
import kgengine.providers as providers
from kgengine.cli import app
from kgengine.export.degraders import build_pool_model
from kgengine.sysinfo import machine_info

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_that_is_not_there_writes_nothing(tmp_path, device: str) -> None:
    """The farm made its pool (settings stored, image queued) before the device failed."""
    img = tmp_path / "a.png"
    img.write_bytes((Path(devices.__file__).parent / "data" / "sample_lr.png").read_bytes())
    for command in ("farm", "estimate"):
        res = CliRunner().invoke(app, [command, str(img), "-o", str(tmp_path / command),
                                       "--device", device, "--iters", "8"])
        assert res.exit_code == 1
        assert f"error: --device {device}: torch sees no CUDA device here" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_listed_gpu_that_does_not_open_is_not_taken_by_auto(monkeypatch) -> None:
    """``auto`` took a GPU that torch listed but could not use (busy in exclusive mode, no
    working driver), and the report's GPU name stopped a finished run on a traceback."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)

    def no_name(_: int) -> str:
        raise RuntimeError("CUDA error: no CUDA-capable device is detected")

    monkeypatch.setattr(torch.cuda, "get_device_name", no_name)
    devices.cuda_usable.cache_clear()
    try:
        assert devices.resolve_device("auto").type == "cpu"
        assert machine_info("cpu")["gpu"] is None
    finally:
        devices.cuda_usable.cache_clear()


def test_the_cuda_simulator_is_never_picked_automatically(monkeypatch) -> None:
    """With ``NUMBA_ENABLE_CUDASIM=1`` left in the environment, patch sampling on CUDA went
    to the simulator (25 s a call against 7 ms for torch)."""
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    monkeypatch.setattr(be, "availability", lambda name: (name in ("numba_cuda", "torch"),
                                                          "CUDA simulator"))
    be.auto_backend.cache_clear()
    try:
        assert be.auto_backend("sample_patches", "cuda") == "torch"
        monkeypatch.delenv("NUMBA_ENABLE_CUDASIM")
        be.auto_backend.cache_clear()
        assert be.auto_backend("sample_patches", "cuda") == "numba_cuda"
    finally:
        be.auto_backend.cache_clear()


def test_backend_reasons_are_one_line(monkeypatch) -> None:
    """Numba's five-line driver message went into ``kgengine info`` as it was."""
    reason = "CUDA driver library\n  cannot\nbe found"
    monkeypatch.setattr(be, "availability", lambda name: (name != "numba_cuda", reason))
    be.auto_backend.cache_clear()
    try:
        assert be.backend_report()["numba.cuda"] == "no: CUDA driver library cannot be found"
    finally:
        be.auto_backend.cache_clear()


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers()
                    or not NO_CUDA, reason="needs an onnxruntime GPU build without a GPU")
def test_gpu_providers_that_do_not_load_are_tried_quietly(monkeypatch, capfd, tmp_path) -> None:
    """An onnxruntime GPU build whose CUDA libraries are missing (the usual case of
    onnxruntime-gpu on a machine without CUDA) printed its fallback banner on stdout and a
    dozen library errors on stderr, left an empty TensorRT cache folder, and ``kgengine
    info`` called those providers usable."""
    monkeypatch.setattr(providers, "cuda_device_count", lambda: (1, ""))
    capfd.readouterr()
    choice = providers.make_session(build_pool_model(5, 2).SerializeToString(), "auto",
                                    trt_cache=tmp_path / "trt")
    out, err = capfd.readouterr()
    assert choice.session.get_providers() == ["CPUExecutionProvider"]
    assert out == "" and "onnxruntime" not in err
    assert not (tmp_path / "trt").exists()
    from kgengine.commands.info import _onnxruntime

    assert _onnxruntime()["usable here"].startswith("CPU (tensorrt: ")
    x = np.zeros((1, 1, 8, 8), np.float32)
    k = np.zeros((1, 1, 5, 5), np.float32)
    assert choice.session.run(None, {"hr": x, "kernel": k})[0].shape == (1, 1, 4, 4)
