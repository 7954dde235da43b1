"""The batched trainer: a batch of B equals B single runs; both modes agree; priors act."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgengine.api import estimate_kernels
from kgengine.config import KernelGANConfig
from kgengine.prepare import prepare_image
from kgengine.trainer import BatchTrainer

# a short schedule that still exercises lr decay, bicubic decay and the constraint switch
SHORT = KernelGANConfig(iters=24, lr_decay_every=10, bic_decay_every=4, bic_loss_threshold=10.0)
# For exactness checks: 8 iterations (lr decays at 3 and 6, bicubic weight at 4 and 6, the
# sparse/centre priors switch on at 6). GAN training amplifies float64 rounding about 5x per
# iteration at this early stage (Adam on near-zero gradients), so runs are kept short.
EXACT = KernelGANConfig(iters=8, lr_decay_every=3, bic_decay_every=2, bic_loss_threshold=10.0)


def _assert_same_kernel(a: np.ndarray, b: np.ndarray, rtol: float = 1e-8) -> None:
    """Equal up to ``rtol`` of the kernel's largest entry."""
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max())


@pytest.fixture(scope="module")
def three_images(sample_hr):
    """Three LR-sized crops of different sizes from the bundled sample."""
    return [sample_hr[:100, :120], sample_hr[150:250, 40:136], sample_hr[200:, 200:]]


def test_batch_of_three_equals_three_single_runs(three_images):
    seeds = [3, 17, 29]
    batch = estimate_kernels(three_images, seeds=seeds, config=EXACT, dtype=torch.float64)
    for img, seed, res in zip(three_images, seeds, batch, strict=True):
        single = estimate_kernels([img], seeds=[seed], config=EXACT, dtype=torch.float64)[0]
        _assert_same_kernel(res.raw_kernel, single.raw_kernel)
        _assert_same_kernel(res.kernel_x2, single.kernel_x2, 1e-6)


def test_layers_mode_equals_composed_mode(three_images):
    a = estimate_kernels(three_images[:1], seeds=[5], config=EXACT, dtype=torch.float64)[0]
    b = estimate_kernels(three_images[:1], seeds=[5], config=EXACT, dtype=torch.float64,
                         mode="layers")[0]
    _assert_same_kernel(a.raw_kernel, b.raw_kernel)


def test_schedule_switches_constraints_and_decays_lr(three_images):
    cfg = SHORT
    tr = BatchTrainer([prepare_image(three_images[0], cfg)], [0], cfg, dtype=torch.float64)
    tr.run(cfg.iters)
    # similar-to-bicubic after 3 iterations below the (raised) threshold, then decays at 4, 8,…
    assert tr.similar.all()
    assert tr.lam["bicubic"].item() == pytest.approx(cfg.bic_min)
    assert tr.lam["sparse"].item() == cfg.lambda_sparse_end
    assert tr.lam["centralized"].item() == cfg.lambda_centralized_end
    assert tr.opt_g.lr == pytest.approx(cfg.lr_g / 100)  # decayed at 10 and 20


def test_different_seeds_differ_and_same_seed_repeats(three_images):
    img = three_images[0]
    a = estimate_kernels([img], seeds=[1], config=EXACT, dtype=torch.float64)[0].raw_kernel
    b = estimate_kernels([img], seeds=[1], config=EXACT, dtype=torch.float64)[0].raw_kernel
    c = estimate_kernels([img], seeds=[2], config=EXACT, dtype=torch.float64)[0].raw_kernel
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-2 * np.abs(a).max()


def test_authors_defect_switches_change_training(three_images):
    img = three_images[0]
    fixed = estimate_kernels(
        [img], seeds=[1], dtype=torch.float64,
        config=EXACT.replace(authors_bicubic_rgb_sum=False, authors_noise_accumulates=False,
                             authors_d_init_ignored=False),
    )[0]
    authors = estimate_kernels(
        [img], seeds=[1], dtype=torch.float64,
        config=EXACT.replace(authors_bicubic_rgb_sum=True, authors_noise_accumulates=True,
                             authors_d_init_ignored=True),
    )[0]
    scale = np.abs(fixed.raw_kernel).max()
    assert np.abs(fixed.raw_kernel - authors.raw_kernel).max() > 1e-2 * scale


def test_too_small_image_is_refused():
    from kgengine.errors import BadImageError

    with pytest.raises(BadImageError, match="too small"):
        prepare_image(np.zeros((50, 80, 3), np.float32), SHORT, "tiny.png")


def test_noise_accumulation_writes_each_crop_at_its_place():
    """Defect 2's write-back, both ways (slices on the host, one indexed copy elsewhere),
    equals a per-image slice assignment."""
    from kgengine.prepare import write_crops

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 40, 50, generator=gen)
    crops = torch.rand(3, 3, 7, 7, generator=gen)
    topleft = torch.tensor([[0, 0], [33, 43], [5, 12]])  # corners included
    expected = images.clone()
    for i, (top, left) in enumerate(topleft.tolist()):
        expected[i, :, top : top + 7, left : left + 7] = crops[i]
    for host in (True, False):
        got = images.clone()
        write_crops(got, crops, topleft, host)
        assert torch.equal(got, expected), f"host={host}"


def test_lean_step_and_host_shortcuts_change_no_bit(three_images):
    """The CPU path (kgengine.lean_step: the compiled passes without autograd; the D step's
    kernel reused by the next G step; the similarity counter skipped once every image is
    similar) gives the bytes of the plain path (autograd, a fresh kernel per use, the full
    schedule): float32, 3 images, 200 iterations, past the similarity switch and a bicubic
    decay; G, D, Adam and the images. (The noise write-back's two ways: the test above.)"""
    # a similarity threshold every image passes early, whatever the CPU's sample (an AVX2
    # and an AVX-512 host train other bytes), so that the shortcut is taken
    cfg = KernelGANConfig(bic_decay_every=50, bic_loss_threshold=10.0)
    images = [prepare_image(im, cfg) for im in three_images]
    fast = BatchTrainer(images, [1, 2, 3], cfg)
    assert fast._lean
    fast.run(200)
    assert fast._all_similar, "the schedule shortcut was never taken"
    plain = BatchTrainer(images, [1, 2, 3], cfg)
    plain._host, plain._lean = False, False
    for _ in range(200):
        plain._next_kernel = (-1, None)
        plain.step()
    assert fast.final_kernels().tobytes() == plain.final_kernels().tobytes()
    for a, b in ((fast.g_flat, plain.g_flat), (fast.d_flat, plain.d_flat),
                 (fast.opt_d.v, plain.opt_d.v)):
        assert torch.equal(a, b)
    assert torch.equal(fast.images, plain.images)
    for name in fast.lam:
        assert torch.equal(fast.lam[name], plain.lam[name]), name
    assert torch.equal(fast.similar, plain.similar)
    assert torch.equal(fast.bic_counter, plain.bic_counter)


def test_work_on_the_other_thread_changes_no_bit(three_images):
    """B = 1 on 2 threads, the other thread takes: the priors, the D step's power iteration
    and real crop (during the G step), the top layers' weight gradients of its fake crop,
    and the next iteration's crops (sampled during the D step, after defect 2 wrote this
    one's noisy crop into the image). 200 float32 iterations, run as 120 + 80 (the crops
    sampled ahead at the end of a run are dropped), give the bytes of the autograd path on
    one thread: G, D, Adam's moments and the images."""
    cfg = KernelGANConfig()
    image = [prepare_image(three_images[1], cfg)]
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fast = BatchTrainer(image, [7], cfg)
        ahead = []
        sample = fast.sample_detached
        fast.sample_detached = lambda it: ahead.append(it) or sample(it)
        fast.run(120)
        fast.run(80)
        torch.set_num_threads(1)
        plain = BatchTrainer(image, [7], cfg)
        plain._lean = False
        plain.run(200)
    finally:
        torch.set_num_threads(old)
    assert fast.threads == 2 and fast._lean_d is None and not fast._lean_jobs
    assert fast._prefetched is None  # dropped at the end of the run
    assert ahead == list(range(1, 121)) + list(range(121, 201))
    assert fast.final_kernels().tobytes() == plain.final_kernels().tobytes()
    for a, b in ((fast.g_flat, plain.g_flat), (fast.d_flat, plain.d_flat),
                 (fast.opt_d.m, plain.opt_d.m), (fast.opt_g.v, plain.opt_g.v),
                 (fast.images, plain.images)):
        assert torch.equal(a, b)


def test_an_error_on_the_other_thread_reaches_the_caller_and_leaves_no_job(three_images,
                                                                          monkeypatch):
    """B = 1 on 2 threads: an exception in a job of the other thread (here the priors, at
    iteration 5) is raised by ``run`` itself, and every job handed to that thread has ended
    when it returns (they write into pooled buffers and the trainer's state)."""
    from kgengine import lean_step

    cfg = KernelGANConfig()
    calls, jobs = [], []
    priors, submit = lean_step._priors, lean_step.submit
    monkeypatch.setattr(lean_step, "submit", lambda *a: jobs.append(submit(*a)) or jobs[-1])

    def failing(*args):  # noqa: ANN002, ANN202
        calls.append(len(calls))
        if len(calls) == 6:
            raise FloatingPointError("injected")
        return priors(*args)

    monkeypatch.setattr(lean_step, "_priors", failing)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        tr = BatchTrainer([prepare_image(three_images[1], cfg)], [7], cfg)
        with pytest.raises(FloatingPointError, match="injected"):
            tr.run(20)
    finally:
        torch.set_num_threads(old)
    assert tr.iteration == 5 and len(calls) == 6
    assert tr._lean_jobs == [] and tr._lean_d is None and tr._prefetched is None
    assert len(jobs) >= 5 * 5 + 3 and all(job.done() for job in jobs)


def test_lean_gan_terms_are_autograds():
    """``lean_step._gan_terms`` against autograd through ``gan_loss`` (B, N = 2 maps with
    other labels and upstream gradients, as the D step has them): the gradient bitwise, with
    exact 0 and 1 and a NaN in the maps (where sgn is 0), the loss to float32 rounding."""
    from kgengine import lean_step, priors

    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 2, 35, generator=gen)
    probs[0, 0, :4] = torch.tensor([0.0, 1.0, 1.0, float("nan")])
    probs[1, 1, :2] = torch.tensor([0.0, 1.0])
    labels, up = (1.0, 0.0), (0.5, 3.0)
    loss, grad = np.empty((3, 2), np.float32), np.empty((3, 2, 35), np.float32)
    lean_step._gan_terms(probs.numpy(), np.array(labels, np.float32),
                         np.array(up, np.float32), loss, grad)
    for n in range(2):
        leaf = probs[:, n].clone().requires_grad_()
        value = priors.gan_loss(leaf, real=labels[n] == 1.0)
        (want,) = torch.autograd.grad(value, leaf, torch.full((3,), up[n]))
        assert torch.equal(torch.from_numpy(grad[:, n]), want)
        np.testing.assert_allclose(loss[1:, n], value[1:].detach().numpy(), rtol=1e-6)


def test_flat_buffer_rows_are_taken_per_part():
    """``flatbuf.take_rows`` keeps rows of each part of a flat buffer: the same bytes as
    flattening the parts' rows, and the leaves it views have those rows."""
    from kgengine.flatbuf import flatten, leaves, take_rows

    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(5, 3, 2, generator=gen), torch.randn(5, 7, generator=gen),
             torch.randn(5, 1, 1, 4, generator=gen)]
    flat, views = flatten(parts, {"dtype": torch.float32})
    assert all(torch.equal(v, p) for v, p in zip(views, parts, strict=True))
    for rows in ([4, 0, 2], [3], [0, 1, 2, 3, 4]):
        idx = torch.tensor(rows)
        got = take_rows(flat, [p.shape for p in parts], idx)
        want, _ = flatten([p[idx] for p in parts], {"dtype": torch.float32})
        assert torch.equal(got, want)
        _, kept = leaves(got, [p.shape for p in parts], len(rows))
        assert all(torch.equal(k, p[idx]) for k, p in zip(kept, parts, strict=True))
