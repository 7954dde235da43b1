"""The step with no host value (kgengine.graph_step): the same bytes as the usual step, its
mode from the environment, its fallback when a capture fails, and (GPU) a capture that
replays to the bit."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from kgengine.adam import FlatAdam
from kgengine.config import KernelGANConfig
from kgengine.graph_step import ENV_VAR, WARMUP, mode_for
from kgengine.prepare import prepare_image
from kgengine.trainer import BatchTrainer

#: decays of the learning rate (at 100, 200) and of the bicubic weight inside 300 iterations
CFG = KernelGANConfig(lr_decay_every=100, bic_decay_every=50)
SEEDS = [4, 9]


@pytest.fixture(scope="module")
def images(sample_hr):  # noqa: ANN001, ANN201
    return [prepare_image(im, CFG) for im in (sample_hr[:100, :120], sample_hr[200:, 200:])]


def _plain(images, device: str = "cpu") -> BatchTrainer:  # noqa: ANN001
    """The usual autograd step (not the lean one), with Adam's device coefficients."""
    tr = BatchTrainer(images, SEEDS, CFG, device=device)
    tr._lean = False
    adam = {"betas": (CFG.beta1, CFG.beta2), "on_device": True}
    tr.opt_g = FlatAdam(tr.g_flat, CFG.lr_g, **adam)
    tr.opt_d = FlatAdam(tr.d_flat, CFG.lr_d, **adam)
    return tr


def _static(images, monkeypatch, value: str = "eager", device: str = "cpu"):  # noqa: ANN001, ANN202
    monkeypatch.setenv(ENV_VAR, value)
    tr = BatchTrainer(images, SEEDS, CFG, device=device)
    monkeypatch.delenv(ENV_VAR)
    assert tr._static is not None and not tr._lean
    return tr


def _read_in_place(tr: BatchTrainer) -> list[int]:
    """Addresses of the tensors the step reads besides its buffers (a graph bakes them)."""
    tensors = [tr.g_flat, tr.d_flat, tr.mask, *tr.lam.values(), *tr.d_state.values()]
    for opt in (tr.opt_g, tr.opt_d):
        tensors += [opt.m, opt.v, *opt._dev]
    return [t.data_ptr() for t in tensors]


def _assert_same_state(a: BatchTrainer, b: BatchTrainer) -> None:
    assert a.final_kernels().tobytes() == b.final_kernels().tobytes()
    for x, y in ((a.g_flat, b.g_flat), (a.d_flat, b.d_flat), (a.opt_g.m, b.opt_g.m),
                 (a.opt_d.v, b.opt_d.v), (a.images, b.images)):
        assert torch.equal(x.cpu(), y.cpu())
    for name in a.lam:
        assert torch.equal(a.lam[name], b.lam[name]), name


@pytest.mark.parametrize("networks", ["compiled", "torch"])
def test_static_step_equals_the_usual_step(images, monkeypatch, networks: str) -> None:
    """300 float32 iterations of 2 images through two learning-rate decays, the bicubic
    weight's decays and the late priors' switch: the step that reads only fixed buffers
    (crops and noise copied in, Adam's step count and learning rate on the device, the loss
    weights updated in place) gives the usual step's bytes. ``torch``: the networks a CUDA
    device runs."""
    if networks == "torch":
        monkeypatch.setenv("KGENGINE_NETWORKS", "torch")
    static, plain = _static(images, monkeypatch), _plain(images)
    before = _read_in_place(static)
    static.run(300)
    # what a captured graph reads stays where it was: updated in place, never replaced
    assert _read_in_place(static) == before
    plain.run(300)
    assert float(static.opt_g._dev[1]) == pytest.approx(CFG.lr_g / CFG.lr_decay_factor**2)
    assert float(static.opt_g._dev[0]) == 300
    assert (static.lam["sparse"] > 0).all(), "the late priors never switched on"
    _assert_same_state(static, plain)


def test_mode_from_the_environment(monkeypatch, sample_hr) -> None:  # noqa: ANN001
    from kgengine.api import estimate_kernel

    cpu = torch.device("cpu")
    for value, want in (("", "off"), ("0", "off"), ("off", "off"), (" Eager ", "eager")):
        monkeypatch.setenv(ENV_VAR, value)
        assert mode_for(cpu) == want, value
    monkeypatch.setenv(ENV_VAR, "1")
    with pytest.warns(RuntimeWarning, match="not a CUDA device"):
        assert mode_for(cpu) == "eager"
    monkeypatch.delenv(ENV_VAR)
    assert estimate_kernel(sample_hr[:80, :80], iters=4).report["cuda_graph"] == "off"
    monkeypatch.setenv(ENV_VAR, "1")
    with pytest.warns(RuntimeWarning, match="not a CUDA device"):
        res = estimate_kernel(sample_hr[:80, :80], iters=4)
    assert res.report["cuda_graph"] == "cpu is not a CUDA device"
    monkeypatch.setenv(ENV_VAR, "yes")
    with pytest.raises(ValueError, match=f"{ENV_VAR}: expected 0, 1 or eager, got 'yes'"):
        mode_for(cpu)


class _Stream:
    def wait_stream(self, other: object) -> None:
        pass


def test_a_failed_capture_falls_back_without_losing_an_iteration(images, monkeypatch) -> None:
    """The warm-up iterations (on a side stream) and a capture that fails: one warning that
    names the failure, then the uncaptured step; the bytes of a run that never tried."""
    def refuse(graph: object, stream: object = None) -> None:
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    for name, fake in (("Stream", lambda *a: _Stream()), ("current_stream", lambda *a: _Stream()),
                       ("stream", lambda s: contextlib.nullcontext()), ("CUDAGraph", object),
                       ("graph", refuse)):
        monkeypatch.setattr(torch.cuda, name, fake)
    tried = _static(images, monkeypatch)
    tried._static.capture = True
    with pytest.warns(RuntimeWarning, match="capture failed: operation not permitted") as got:
        tried.run(60)
    assert len(got) == 1 and tried._static.warm == WARMUP
    assert tried.graph_status == tried._static.reason
    assert tried._static.reason == ("capture failed: operation not permitted when stream is "
                                    "capturing")
    never = _static(images, monkeypatch)
    never.run(60)
    _assert_same_state(tried, never)


@pytest.mark.needs_cuda
def test_cuda_graph_replays_the_uncaptured_step_to_the_bit(images, monkeypatch) -> None:
    """On a GPU: captured after the warm-up, the replays give the uncaptured step's bytes
    (300 float32 iterations, 2 images)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    captured = _static(images, monkeypatch, "1", "cuda")
    captured.run(300)
    assert captured._static.graph is not None, captured._static.reason
    eager = _static(images, monkeypatch, "eager", "cuda")
    eager.run(300)
    _assert_same_state(captured, eager)
    assert np.isfinite(captured.final_kernels()).all()
