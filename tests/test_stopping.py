"""``--stop auto``: the rule on constructed sequences, and a stopped run's kernel is exactly
the full run's kernel at that iteration, per image, in any batch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kgengine.api import estimate_kernels, stop_rule_of
from kgengine.config import KernelGANConfig
from kgengine.stopping import StopRule, StopTracker, kernel_change, stop_iteration

ITERS = [100, 200, 300, 400, 500, 600]


@pytest.mark.parametrize("deltas, rule, expected", [
    ([None, 0.5, 0.1, 1e-4, 1e-4, 1e-4], StopRule(1e-3, 2, 0), 500),
    ([None, 0.5, 0.1, 1e-4, 1e-4, 1e-4], StopRule(1e-3, 1, 0), 400),
    ([None, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4], StopRule(1e-3, 2, 450), 500),  # not before min
    ([None, 1e-4, 0.1, 1e-4, 0.1, 1e-4], StopRule(1e-3, 2, 0), 3000),  # streaks broken
    ([None, math.nan, 1e-4, 1e-4, 1e-4, 1e-4], StopRule(1e-3, 3, 0), 500),  # NaN is no streak
])
def test_stop_iteration_on_constructed_sequences(deltas, rule, expected):
    assert stop_iteration(ITERS, deltas, rule, 3000) == expected


def test_tracker_agrees_with_stop_iteration():
    rng = np.random.default_rng(0)
    rule = StopRule(tol=0.05, patience=2, min_iters=200, every=100)
    walks = np.cumsum(rng.normal(size=(4, 12, 5, 5)) * np.geomspace(1, 1e-3, 12)[:, None, None],
                      axis=1) + 1.0
    tracker = StopTracker(rule, 4)
    deltas = [[None] for _ in range(4)]
    for t in range(12):
        tracker.check(100 * (t + 1), walks[:, t])
        if t:
            for b, d in enumerate(kernel_change(walks[:, t], walks[:, t - 1])):
                deltas[b].append(float(d))
    iters = [100 * (t + 1) for t in range(12)]
    expect = [stop_iteration(iters, deltas[b], rule, 0) for b in range(4)]
    assert list(tracker.stopped_at) == expect and len(set(expect)) > 1
    # the trainer shows it only the images still training (the others left the batch)
    partial = StopTracker(rule, 4)
    for t in range(12):
        rows = np.flatnonzero(partial.stopped_at == 0)
        if not rows.size:
            break
        now = partial.check(100 * (t + 1), walks[rows, t], rows)
        assert not now[partial.stopped_at != 100 * (t + 1)].any()
    assert list(partial.stopped_at) == expect


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_stopped_images_keep_the_kernel_of_that_moment_in_any_batch(sample_hr, one_thread):
    images = [sample_hr[:100, :120], sample_hr[150:250, 40:136], sample_hr[200:, 200:]]
    cfg = KernelGANConfig(iters=240, lr_decay_every=80, bic_decay_every=60)
    rule = StopRule(tol=0.06, patience=1, min_iters=60, every=30)
    batch = estimate_kernels(images, seeds=[3, 17, 29], config=cfg, stop=rule, device="cpu")
    used = [r.report["iters_used"] for r in batch]
    assert min(used) < cfg.iters  # the rule stopped something (it can fail)
    for img, seed, res in zip(images, [3, 17, 29], batch, strict=True):
        alone = estimate_kernels([img], seeds=[seed], config=cfg, stop=rule, device="cpu")[0]
        assert alone.report["iters_used"] == res.report["iters_used"]
        assert alone.raw_kernel.tobytes() == res.raw_kernel.tobytes()
        short = estimate_kernels([img], seeds=[seed], config=cfg,
                                 iters=res.report["iters_used"], device="cpu")[0]
        assert short.raw_kernel.tobytes() == res.raw_kernel.tobytes()
        assert short.kernel_x2.tobytes() == res.kernel_x2.tobytes()
        for a, b in zip(short.generator_weights, res.generator_weights, strict=True):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("path", ["lean", "lean-2-threads", "autograd-torch", "static"])
def test_a_batch_goes_on_without_its_stopped_images(sample_hr, monkeypatch, path):
    """Stopped images leave the batch (``kgengine.batch_rows.drop``): the others go on with the
    bytes of their single runs, on each step the trainer has (the lean CPU step on 1 and
    2 threads, the autograd step with PyTorch's networks as on a GPU, the static step of
    ``KGENGINE_CUDA_GRAPH``), and each image keeps its own result."""
    from kgengine.graph_step import ENV_VAR
    from kgengine.prepare import prepare_image
    from kgengine.trainer import BatchTrainer

    cfg = KernelGANConfig(iters=240, lr_decay_every=80, bic_decay_every=60)
    # a tolerance per step (each has other bits) at which the three images stop apart
    tol = {"autograd-torch": 0.01, "static": 0.025}.get(path, 0.06)
    rule = StopRule(tol=tol, patience=1, min_iters=60, every=30)
    crops = [sample_hr[:100, :120], sample_hr[150:250, 40:136], sample_hr[200:, 200:]]
    images, seeds = [prepare_image(c, cfg) for c in crops], [3, 17, 29]
    if path == "autograd-torch":
        monkeypatch.setenv("KGENGINE_NETWORKS", "torch")
    if path == "static":
        monkeypatch.setenv(ENV_VAR, "eager")
    old = torch.get_num_threads()
    torch.set_num_threads(2 if path == "lean-2-threads" else 1)
    try:
        def train(which: list[int]) -> BatchTrainer:
            tr = BatchTrainer([images[i] for i in which], [seeds[i] for i in which], cfg)
            assert tr._lean == path.startswith("lean")
            assert (tr._static is not None) == (path == "static")
            tr.run(cfg.iters, stop=rule)
            return tr

        batch = train([2, 0, 1])
        singles = [train([i]) for i in (2, 0, 1)]
    finally:
        torch.set_num_threads(old)
    used = batch.iters_used
    # images left while others trained on (which stop where depends on the CPU's sample: an
    # AVX2 and an AVX-512 host train other bytes); the rows left are among the last ones
    # (one that the rule stopped at the last iteration left too)
    assert len(set(used)) >= 2
    assert 1 <= batch.b == len(batch.rows) < 3
    assert all(used[j] == max(used) for j in batch.rows)
    kernels, weights = batch.final_kernels(), batch.final_weights()
    for j, alone in enumerate(singles):
        assert alone.iters_used == [used[j]]
        assert alone.final_kernels()[0].tobytes() == kernels[j].tobytes(), f"image {j}"
        for a, b in zip(alone.final_weights()[0], weights[j], strict=True):
            assert torch.equal(a, b)
        assert alone.final_losses()[0] == batch.final_losses()[j]
    assert batch.final_finite().all()


def test_stop_option_values():
    assert stop_rule_of("full") is None and stop_rule_of("auto") == StopRule()
    with pytest.raises(ValueError, match="stop"):
        stop_rule_of("sometimes")
    with pytest.raises(ValueError, match="bad stop rule"):
        StopRule(tol=0)


def test_cli_stop_option(tmp_path):
    from typer.testing import CliRunner

    from kgengine.cli import app
    from kgengine.outputs import requested_settings, stored_settings

    sample = str(Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_lr.png")
    res = CliRunner().invoke(app, ["estimate", sample, "-o", str(tmp_path), "--stop", "soon"])
    assert res.exit_code == 1 and "--stop: expected full or auto" in res.output
    assert not any(tmp_path.iterdir())
    # outputs made without early stopping are not reused for --stop auto (and back)
    wanted = requested_settings(seed=0, iters=10, config={}, x4=False, restarts=1,
                                mode="composed", stop={"tol": 1e-3})
    assert stored_settings({"seed": 0, "iters": 10, "config": {}, "mode": "composed"})["stop"] \
        != wanted["stop"]


def test_auto_is_the_default_everywhere(tmp_path):
    """Since 0.9.12 one run stops by the ``auto`` rule unless told ``full``: the API, the
    ``estimate`` command, a new farm pool and the ``eval`` command; a pool made before
    ``stop`` was stored keeps "full", and an estimator that takes ``stop`` is told "full"
    when the job asks for it."""
    import inspect
    import json

    from typer.testing import CliRunner

    from kgengine.accuracy import EvalSettings
    from kgengine.accuracy.estimators import per_image
    from kgengine.cli import app
    from kgengine.commands.eval import eval_command
    from kgengine.farm.settings import resolve_settings
    from kgengine.stopping import stop_setting

    auto = stop_setting(StopRule())
    assert inspect.signature(estimate_kernels).parameters["stop"].default == "auto"
    assert resolve_settings(None).stop == auto
    old = resolve_settings(None).to_dict()
    del old["stop"]  # a pool made before --stop existed trained every iteration
    assert resolve_settings(old).stop == "full"
    # eval's settings take any estimator (one without early stopping too): "full"; the
    # command, which runs KernelGAN, says "auto"
    assert EvalSettings().stop == "full"
    assert inspect.signature(eval_command).parameters["stop"].default == "auto"
    seen: list = []

    def one(path, *, x4, iters, seed, device, config, stop="auto"):
        seen.append(stop)
        raise RuntimeError("only the arguments matter here")

    for stop in ("full", "auto"):
        per_image(one)([("a.png", 0)], x4=False, iters=3, device="cpu",
                       config=KernelGANConfig(), stop=stop)
    assert seen == ["full", "auto"]
    # the command's report records the rule it stopped by (a short run: not before 1500)
    sample = str(Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_lr.png")
    res = CliRunner().invoke(app, ["estimate", sample, "-o", str(tmp_path), "--iters", "20"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "sample_lr_report.json").read_text())
    assert report["stop"] == auto and report["iters_used"] == 20


def test_a_stopped_batch_ends_its_progress_bar_where_it_stopped():
    from io import StringIO

    from rich.console import Console

    from kgengine.progress import progress_hooks

    console = Console(file=StringIO(), width=120)
    with progress_hooks("images", console) as hooks:
        hooks.total(1)
        hooks.batch_started(["a.png"], 3000)
        hooks.batch_progress(2300)  # the stop rule ended the training here
        hooks.item_finished("a.png", "done", "")
    text = console.file.getvalue()
    assert "2300/2300" in text and "2300/3000" not in text.splitlines()[-1]
