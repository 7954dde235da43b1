"""Fused patch sampling: spec oracle, backends vs reference, statistics, errors."""

from __future__ import annotations

import numpy as np
import pytest
import rng_numpy
import torch
from cudasim import IN_SIM, run_sim_tests, sim_only, skip_unless_gpu_backend
from scipy import stats
from tolerances import assert_close

from kgengine.ops import PatchBatch, rng, sample_patches, sample_patches_ref

NOISE = 0.05


def make_batch(sizes, chans=3, dtype=torch.float32, contiguous=True, seed=0, pad=(3, 5)):  # noqa: ANN001, ANN201
    """A padded batch: images (B,C,H,W) holding image b in [:h_b, :w_b], random maps ->
    cdf (B,2,H*W) float64 with zero mass outside, sizes (B,2), seeds (B,)."""
    g = torch.Generator().manual_seed(seed)
    sizes_t = torch.tensor(sizes, dtype=torch.int64)
    b = len(sizes)
    h = int(sizes_t[:, 0].max()) + pad[0]
    w = int(sizes_t[:, 1].max()) + pad[1]
    if contiguous:
        images = torch.rand(b, chans, h, w, generator=g, dtype=dtype)
    else:  # channels-last view with a column step: no unit stride anywhere
        images = torch.rand(b, h, 2 * w, chans, generator=g, dtype=dtype).permute(0, 3, 1, 2)[
            ..., ::2
        ]
    prob = torch.rand(b, 2, h, w, generator=g, dtype=torch.float64) ** 4  # peaky maps
    for i, (hb, wb) in enumerate(sizes):
        prob[i, :, hb:, :] = 0
        prob[i, :, :, wb:] = 0
        images[i, :, hb:, :] = float("nan")  # reading padding would poison the crop
        images[i, :, :, wb:] = float("nan")
    cdf = prob.reshape(b, 2, h * w).cumsum(-1)
    seeds = torch.randint(-(2**62), 2**62, (b,), generator=g)
    return images, cdf, sizes_t, seeds


def spec_oracle(images, cdf, sizes, seeds, iteration, g_size, d_size, noise_std) -> PatchBatch:  # noqa: ANN001
    """The module docstring of kgengine.ops.patches, one image at a time (NumPy)."""
    x = images.to(torch.float64).numpy()
    _, chans, _, w = x.shape
    out = {0: [], 1: []}
    tls = {0: [], 1: []}
    for b in range(x.shape[0]):
        seed = int(seeds[b])
        for kind, stream, size in ((0, rng.STREAM_G_POS, g_size), (1, rng.STREAM_D_POS, d_size)):
            c = cdf[b, kind].numpy()
            u = rng_numpy.uniform_np(seed, stream, iteration, 0)[0]
            flat = min(int(np.searchsorted(c, u * c[-1], side="right")), c.size - 1)
            row, col = divmod(flat, w)
            top = min(max(0, row - size // 2), int(sizes[b, 0]) - size)
            left = min(max(0, col - size // 2), int(sizes[b, 1]) - size)
            top, left = top - top % 2, left - left % 2
            crop = x[b, :, top : top + size, left : left + size].copy()
            if kind == 1:
                idx = np.arange(chans * size * size)
                z = rng_numpy.normal_np(seed, rng.STREAM_D_NOISE, iteration, idx)
                crop += noise_std * z.reshape(crop.shape)
            out[kind].append(crop)
            tls[kind].append((top, left))
    dt = images.dtype
    return PatchBatch(
        torch.from_numpy(np.stack(out[0])).to(dt),
        torch.from_numpy(np.stack(out[1])).to(dt),
        torch.tensor(tls[0]),
        torch.tensor(tls[1]),
    )


def assert_same_batch(got: PatchBatch, want: PatchBatch) -> None:
    assert torch.equal(got.g_topleft, want.g_topleft)
    assert torch.equal(got.d_topleft, want.d_topleft)
    assert got.g_topleft.dtype == torch.int64 and got.g_topleft.shape == want.g_topleft.shape
    for a, e in ((got.g_crops, want.g_crops), (got.d_crops, want.d_crops)):
        assert a.dtype == e.dtype and a.shape == e.shape and a.is_contiguous()
        assert_close(a, e)


# (sizes per image, g_size, d_size): sizes 1, odd, prime crops; B = 1 and 5; exact fit.
CASES = [
    ([(20, 23)], 7, 3),
    ([(31, 29), (17, 19), (13, 40), (50, 13), (13, 13)], 13, 5),
    ([(9, 9), (12, 10)], 1, 1),
    ([(11, 11)], 11, 11),  # image exactly the crop: top = left = 0
    ([(16, 30), (30, 16), (17, 17), (20, 20), (19, 31)], 16, 6),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_reference_matches_spec_oracle(case) -> None:  # noqa: ANN001
    sizes, g, d = case
    for dtype in (torch.float32, torch.float64):
        images, cdf, sz, seeds = make_batch(sizes, dtype=dtype)
        for it in (0, 1, 2999):
            got = sample_patches_ref(images, cdf, sz, seeds, it, g, d, NOISE)
            assert_same_batch(got, spec_oracle(images, cdf, sz, seeds, it, g, d, NOISE))
            assert not torch.isnan(got.g_crops).any() and not torch.isnan(got.d_crops).any()


def test_exact_fit_forces_origin_zero() -> None:
    images, cdf, sz, seeds = make_batch([(11, 11), (11, 11)], pad=(0, 0))
    for it in range(20):
        got = sample_patches(images, cdf, sz, seeds, it, 11, 11, 0.0)
        assert got.g_topleft.eq(0).all() and got.d_topleft.eq(0).all()
        assert torch.equal(got.g_crops, images)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_numba_cpu_matches_reference(case, dtype, contiguous) -> None:  # noqa: ANN001
    sizes, g, d = case
    images, cdf, sz, seeds = make_batch(sizes, dtype=dtype, contiguous=contiguous)
    for it in (0, 7, 2999):
        want = sample_patches_ref(images, cdf, sz, seeds, it, g, d, NOISE)
        assert_same_batch(
            sample_patches(images, cdf, sz, seeds, it, g, d, NOISE, backend="numba"), want
        )


def test_numba_cpu_serial_twin_gives_the_same_bits(monkeypatch) -> None:  # noqa: ANN001
    from kgengine.ops import _numba_cpu

    sizes, g, d = CASES[0]
    images, cdf, sz, seeds = make_batch(sizes, dtype=torch.float32, contiguous=True)
    got = []
    for serial_work in (0, 10**12):
        monkeypatch.setattr(_numba_cpu, "SERIAL_WORK", serial_work)
        got.append(_numba_cpu.sample_patches(images, cdf, sz, seeds, 11, g, d, NOISE))
    assert_same_batch(got[0], got[1])
    assert all(torch.equal(a, b) for a, b in zip(got[0], got[1], strict=True))


def test_batching_does_not_change_an_images_draws() -> None:
    images, cdf, sz, seeds = make_batch([(31, 29), (17, 19), (40, 40)], pad=(0, 0))
    full = sample_patches(images, cdf, sz, seeds, 5, 13, 5, NOISE, backend="numba")
    for b in range(3):
        hb, wb = sz[b].tolist()
        alone = sample_patches(
            images[b : b + 1, :, :hb, :wb].contiguous(),
            cdf[b : b + 1].reshape(1, 2, 40, 40)[..., :hb, :wb].reshape(1, 2, -1).contiguous(),
            sz[b : b + 1], seeds[b : b + 1], 5, 13, 5, NOISE, backend="numba",
        )  # fmt: skip
        # Same map restricted to the image (zero mass outside): same draw, same crops.
        assert torch.equal(alone.g_topleft, full.g_topleft[b : b + 1])
        assert torch.equal(alone.d_crops, full.d_crops[b : b + 1])


# -------------------------------------------------------------------------- statistics
def test_positions_follow_the_probability_map() -> None:
    """Chi-square of 1x1 crop positions against the map's mass per 2x2 block (the even
    alignment maps a centre to its 2x2 block), over seeds and over iterations."""
    h = w = 8
    g = torch.Generator().manual_seed(4)
    prob = torch.rand(h, w, generator=g, dtype=torch.float64)
    prob[:, : w // 2] *= 3.0  # a 3:1 region on top of the random texture
    block_mass = prob.reshape(h // 2, 2, w // 2, 2).sum(dim=(1, 3)).flatten()
    expected_p = (block_mass / block_mass.sum()).numpy()

    n = 6000
    images = torch.zeros(n, 1, h, w)
    cdf = prob.flatten().cumsum(0).expand(n, 2, h * w)
    sizes = torch.tensor([[h, w]]).expand(n, 2)
    seeds = torch.arange(n) * 7919 + 1
    over_seeds = sample_patches(images, cdf, sizes, seeds, 3, 1, 1, 0.0, backend="numba").g_topleft
    one = (images[:1], cdf[:1], sizes[:1], seeds[:1])
    over_iters = torch.cat(
        [sample_patches(*one, it, 1, 1, 0.0, backend="numba").d_topleft for it in range(n)]
    )
    for tl in (over_seeds, over_iters):
        block = (tl[:, 0] // 2) * (w // 2) + tl[:, 1] // 2
        counts = np.bincount(block.numpy(), minlength=block_mass.numel())
        assert stats.chisquare(counts, expected_p * n).pvalue > 1e-3
        left_share = (tl[:, 1] < w // 2).double().mean().item()
        true_left = float(prob[:, : w // 2].sum() / prob.sum())
        assert abs(left_share - true_left) < 4 * np.sqrt(true_left * (1 - true_left) / n)


def test_g_and_d_positions_are_different_streams() -> None:
    images, cdf, sz, seeds = make_batch([(64, 64)] * 50, chans=1, seed=2)
    cdf[:, 1] = cdf[:, 0]  # same map for both kinds
    got = sample_patches(images, cdf, sz, seeds, 0, 1, 1, 0.0)
    assert not torch.equal(got.g_topleft, got.d_topleft)


def test_d_noise_is_standard_normal_times_std_and_g_has_none() -> None:
    images = torch.zeros(4, 3, 40, 40, dtype=torch.float64)
    _, cdf, sz, seeds = make_batch([(40, 40)] * 4, pad=(0, 0))
    got = sample_patches(images, cdf, sz, seeds, 11, 26, 26, 0.5)
    assert torch.equal(got.g_crops, torch.zeros_like(got.g_crops))
    z = (got.d_crops / 0.5).flatten().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    again = sample_patches(images, cdf, sz, seeds, 12, 26, 26, 0.5)
    assert abs(np.corrcoef(z, again.d_crops.flatten().numpy())[0, 1]) < 0.05  # new per iteration


def test_input_images_are_not_modified() -> None:
    images, cdf, sz, seeds = make_batch([(20, 20)], pad=(0, 0))
    before = images.clone()
    for name in ("torch", "numba"):
        sample_patches(images, cdf, sz, seeds, 0, 8, 8, 0.1, backend=name)
    assert torch.equal(images, before)  # the authors' in-place noise bug is not repeated


# ------------------------------------------------------------------------------ errors
def test_image_smaller_than_crop_is_a_clear_error() -> None:
    images, cdf, sz, seeds = make_batch([(30, 30), (12, 40)])
    with pytest.raises(ValueError, match=r"image 1 is 12x40 pixels, smaller than the 13x13 crop"):
        sample_patches(images, cdf, sz, seeds, 0, 13, 5, NOISE)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda a: {**a, "cdf": a["cdf"][:, :1]}, "cdf: expected shape"),
        (lambda a: {**a, "cdf": a["cdf"].float()}, "cdf: expected float64"),
        (lambda a: {**a, "images": a["images"][0]}, "images: expected a \\(B,C,H,W\\)"),
        (lambda a: {**a, "sizes_hw": a["sizes_hw"][:, :1]}, "sizes_hw: expected shape"),
        (lambda a: {**a, "seeds": a["seeds"][None]}, "seeds: expected shape"),
        (lambda a: {**a, "sizes_hw": a["sizes_hw"] + 100}, "exceeds the padded batch"),
        (lambda a: {**a, "g_size": 0}, "crop sizes must be >= 1"),
    ],
)
def test_bad_arguments(mutate, match) -> None:  # noqa: ANN001
    images, cdf, sz, seeds = make_batch([(20, 20), (18, 22)])
    args = {"images": images, "cdf": cdf, "sizes_hw": sz, "seeds": seeds, "iteration": 0,
            "g_size": 8, "d_size": 4, "noise_std": NOISE}  # fmt: skip
    with pytest.raises(ValueError, match=match):
        sample_patches(**mutate(args))


# -------------------------------------------------------------- CUDA C on the host (g++)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cuda_c_source_on_host_matches_reference(dtype) -> None:  # noqa: ANN001
    import cuda_host

    from kgengine.ops._launch import patches_launch

    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler to run kernels/*.cu on the host")
    for case in CASES:
        sizes, g, d = case
        for contiguous in (True, False):
            images, cdf, sz, seeds = make_batch(sizes, dtype=dtype, contiguous=contiguous)
            b, c = images.shape[:2]
            outs = PatchBatch(
                torch.full((b, c, g, g), float("nan"), dtype=dtype),
                torch.full((b, c, d, d), float("nan"), dtype=dtype),
                torch.full((b, 2), -1, dtype=torch.int64),
                torch.full((b, 2), -1, dtype=torch.int64),
            )
            cuda_host.run(patches_launch(images, cdf, sz, seeds, 2999, NOISE, *outs))
            assert_same_batch(outs, sample_patches_ref(images, cdf, sz, seeds, 2999, g, d, NOISE))


# ------------------------------------------------------------ Numba CUDA (simulator)
@sim_only
def test_sim_numba_cuda_patches() -> None:
    from kgengine.ops import _numba_cuda

    small = [([(6, 7)], 3, 1), ([(5, 5), (7, 6), (5, 9), (6, 6), (8, 5)], 5, 2), ([(4, 4)], 4, 4)]
    for (sizes, g, d), dtype, contiguous in zip(
        small, (torch.float32, torch.float64, torch.float32), (False, True, True), strict=True
    ):
        images, cdf, sz, seeds = make_batch(sizes, chans=2, dtype=dtype, contiguous=contiguous)
        got = _numba_cuda.sample_patches(images, cdf, sz, seeds, 4, g, d, NOISE)
        assert isinstance(got, PatchBatch)
        assert_same_batch(got, sample_patches_ref(images, cdf, sz, seeds, 4, g, d, NOISE))


def test_numba_cuda_simulator() -> None:
    """Run this file's ``test_sim_*`` under the simulator (see :mod:`cudasim`)."""
    if IN_SIM:
        pytest.skip("already inside the simulator process")
    run_sim_tests(__file__)


# -------------------------------------------------------------------------- real GPU
@pytest.mark.needs_cuda
@pytest.mark.parametrize("name", ["numba_cuda", "cupy"])
def test_gpu_backends_match_reference(name) -> None:  # noqa: ANN001
    skip_unless_gpu_backend(name)
    for sizes, g, d in CASES + [([(300, 200)] * 16, 64, 26)]:
        for dtype in (torch.float32, torch.float64):
            for contiguous in (True, False):
                images, cdf, sz, seeds = make_batch(sizes, dtype=dtype, contiguous=contiguous)
                want = sample_patches_ref(images, cdf, sz, seeds, 9, g, d, NOISE)
                got = sample_patches(
                    images.cuda(), cdf.cuda(), sz.cuda(), seeds.cuda(), 9, g, d, NOISE, backend=name
                )
                assert got.g_crops.is_cuda
                assert_same_batch(PatchBatch(*(t.cpu() for t in got)), want)


def test_cpu_sizes_are_read_on_the_host_every_call(monkeypatch) -> None:
    """A GPU sizes tensor is validated (a synchronisation) once a version; a CPU one at
    every call, since a write through a NumPy alias keeps its version (0.9.29; before, a
    CPU tensor was read once too)."""
    from kgengine.ops import _spec

    calls = []
    real = _spec._check_sizes
    monkeypatch.setattr(_spec, "_check_sizes", lambda *a: calls.append(1) or real(*a))
    images = torch.zeros(2, 3, 40, 40)
    cdf = torch.ones(2, 2, 1600, dtype=torch.float64).cumsum(-1)
    sizes = torch.tensor([[40, 40], [30, 36]])
    seeds = torch.tensor([1, 2])
    for _ in range(3):
        _spec.check_patches(images, cdf, sizes, seeds, 20, 10)
    assert len(calls) == 3
    sizes[1, 0] = 12  # now too small for the 20-px crop: refused
    with pytest.raises(ValueError, match="image 1 is 12x36 pixels"):
        _spec.check_patches(images, cdf, sizes, seeds, 20, 10)
    assert len(calls) == 4
