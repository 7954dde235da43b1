"""Edge cases of the custom kernels that their own test files leave out.

Each test compares a compiled kernel (Numba CPU, Numba CUDA under the simulator, the CUDA C
of ``kernels/*.cu`` host-compiled or on a GPU) with its plain PyTorch reference, or with a
closed-form value, at the tolerances of ``tests/tolerances.py``:

- sample_patches: crops pushed against every border of a padded batch's images (all of a
  map's mass on one pixel, so the origin is known in closed form), D's crop larger than G's,
  and the numba kernel's no-noise branch;
- downscale: kernels that are not contiguous (transposed, every stride non-unit, one kernel expanded
  over the batch: stride 0), scales 1 and 4 under the simulator, the grid-stride loop of
  ``downscale.cu``, and the Numba kernel gradient on H = 1, kernels larger than the image,
  even kernels and batch 1;
- the compiled discriminator on other structures than the default (channels, an even or a
  1x1 first kernel, fewer blocks, a non-contiguous crop batch) and with one output position;
- the compiled priors where the bicubic target reaches the zero padding (small kernels,
  odd and non-square crops);
- compiled Adam on buffers shorter than a SIMD register, the lean step's GAN terms at
  B = N = P = 1, ``put2d`` on a transposed source, ``uniform_grid`` at B = 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from cudasim import IN_SIM, run_sim_tests, sim_only, skip_unless_gpu_backend
from tolerances import TOL, assert_close

from kgengine.ops import PatchBatch, downscale, downscale_ref, sample_patches, sample_patches_ref
from kgengine.ops.downscale import output_size

F32, F64 = torch.float32, torch.float64
NOISE = 0.05


def _close_on_scale(actual: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor,
                    msg: str = "") -> None:
    """The table's tolerance, absolute part relative to ``max |scale|`` (sums of many terms
    of both signs: their rounding is on the scale of the terms, not of the result)."""
    rtol, atol = TOL[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol,
                               atol=atol * max(float(scale.abs().max()), 1.0), msg=msg)


# ========================================================================= sample_patches
def _corner_batch(sizes, spots, chans=2, dtype=F32, contiguous=True, pad=(3, 2)):  # noqa: ANN001, ANN202
    """A padded batch whose maps put all their mass on one pixel per (image, kind):
    ``spots[b] = ((row_g, col_g), (row_d, col_d))`` (negative: from the image's far edge).
    The padding is NaN, so a crop that reads past its image fails the comparison."""
    g = torch.Generator().manual_seed(len(sizes))
    b = len(sizes)
    h, w = max(s[0] for s in sizes) + pad[0], max(s[1] for s in sizes) + pad[1]
    if contiguous:
        images = torch.rand(b, chans, h, w, generator=g, dtype=dtype)
    else:  # channels-last with a column step: no unit stride
        images = torch.rand(b, h, 2 * w, chans, generator=g, dtype=dtype).permute(0, 3, 1, 2)
        images = images[..., ::2]
    prob = torch.zeros(b, 2, h, w, dtype=F64)
    pixels = []
    for i, ((hb, wb), kinds) in enumerate(zip(sizes, spots, strict=True)):
        images[i, :, hb:, :] = float("nan")
        images[i, :, :, wb:] = float("nan")
        rc = [(r % hb, c % wb) for r, c in kinds]
        for kind, (r, c) in enumerate(rc):
            prob[i, kind, r, c] = 1.0
        pixels.append(rc)
    cdf = prob.reshape(b, 2, h * w).cumsum(-1)
    seeds = torch.randint(-(2**62), 2**62, (b,), generator=g)
    return images, cdf, torch.tensor(sizes), seeds, pixels


def _closed_form_origins(sizes, pixels, g_size, d_size) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """The module docstring of kgengine.ops.patches for a map with one pixel of mass."""
    out = []
    for kind, size in ((0, g_size), (1, d_size)):
        tl = []
        for (hb, wb), rc in zip(sizes, pixels, strict=True):
            r, c = rc[kind]
            top = min(max(0, r - size // 2), hb - size)
            left = min(max(0, c - size // 2), wb - size)
            tl.append((top - top % 2, left - left % 2))
        out.append(torch.tensor(tl))
    return out[0], out[1]


# (sizes, spots, g_size, d_size): B = 1 with D's crop larger than G's, in opposite corners;
# B = 3 with odd sizes, every corner and an edge middle of images smaller than the batch;
# a 1-px crop at the bottom-right pixel next to an exact fit.
CORNER_CASES = [
    ([(9, 11)], [((-1, -1), (0, 0))], 5, 7),
    ([(7, 9), (13, 8), (10, 10)],
     [((0, -1), (-1, 0)), ((-1, -1), (6, -1)), ((0, 0), (-1, 4))], 3, 6),
    ([(5, 5), (6, 7)], [((-1, -1), (0, 0)), ((-1, -1), (-1, -1))], 1, 5),
]


def _assert_same(got: PatchBatch, want: PatchBatch) -> None:
    assert torch.equal(got.g_topleft, want.g_topleft)
    assert torch.equal(got.d_topleft, want.d_topleft)
    for a, e in ((got.g_crops, want.g_crops), (got.d_crops, want.d_crops)):
        assert a.dtype == e.dtype and a.shape == e.shape and a.is_contiguous()
        assert not torch.isnan(a).any()
        assert_close(a, e)


def _check_corner_case(fn, case, dtype, contiguous, noise, chans=2) -> None:  # noqa: ANN001
    sizes, spots, g, d = case
    images, cdf, sz, seeds, pixels = _corner_batch(sizes, spots, chans, dtype, contiguous)
    want_g, want_d = _closed_form_origins(sizes, pixels, g, d)
    for it in (0, 2999):
        want = sample_patches_ref(images, cdf, sz, seeds, it, g, d, noise)
        assert torch.equal(want.g_topleft, want_g) and torch.equal(want.d_topleft, want_d)
        _assert_same(fn(images, cdf, sz, seeds, it, g, d, noise), want)


@pytest.mark.parametrize("noise", [0.0, NOISE], ids=["no_noise", "noise"])
@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_numba_cpu_patches_against_every_border(dtype, contiguous, noise, monkeypatch) -> None:  # noqa: ANN001
    """The serial twin (these calls are small), and in float32 the parallel kernel too."""
    from kgengine.ops import _numba_cpu

    for serial_work in (_numba_cpu.SERIAL_WORK, 0) if dtype == F32 else (_numba_cpu.SERIAL_WORK,):
        monkeypatch.setattr(_numba_cpu, "SERIAL_WORK", serial_work)
        for case in CORNER_CASES:
            _check_corner_case(_numba_cpu.sample_patches, case, dtype, contiguous, noise)


def test_numba_cpu_patches_without_noise_on_random_maps() -> None:
    """``noise_std = 0`` skips the draws in the Numba kernel: the reference's crops still."""
    g = torch.Generator().manual_seed(3)
    images = torch.rand(3, 3, 21, 19, generator=g)
    cdf = torch.rand(3, 2, 21 * 19, generator=g, dtype=F64).cumsum(-1)
    sz = torch.tensor([[21, 19], [17, 19], [21, 11]])
    seeds = torch.tensor([5, -7, 2**40])
    for it in (0, 13):
        want = sample_patches_ref(images, cdf, sz, seeds, it, 9, 11, 0.0)
        _assert_same(sample_patches(images, cdf, sz, seeds, it, 9, 11, 0.0, backend="numba"),
                     want)


def _host_or_skip():  # noqa: ANN202
    import cuda_host

    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler to run kernels/*.cu on the host")
    return cuda_host


def _host_patches(host):  # noqa: ANN001, ANN202
    """``kg_sample_patches`` run on the host with the CuPy backend's launch, as an op."""
    from kgengine.ops._launch import patches_launch

    def run(images, cdf, sz, seeds, it, g, d, noise):  # noqa: ANN001, ANN202
        b, c = images.shape[:2]
        outs = PatchBatch(torch.full((b, c, g, g), float("nan"), dtype=images.dtype),
                          torch.full((b, c, d, d), float("nan"), dtype=images.dtype),
                          torch.full((b, 2), -1), torch.full((b, 2), -1))
        host.run(patches_launch(images, cdf, sz, seeds, it, noise, *outs))
        return outs

    return run


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_cuda_c_patches_against_every_border_on_host(dtype) -> None:  # noqa: ANN001
    run = _host_patches(_host_or_skip())
    for case in CORNER_CASES:
        for contiguous in (True, False):
            _check_corner_case(run, case, dtype, contiguous, NOISE)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("name", ["numba_cuda", "cupy"])
def test_gpu_patches_against_every_border(name) -> None:  # noqa: ANN001
    skip_unless_gpu_backend(name)

    def on_gpu(images, cdf, sz, seeds, it, g, d, noise):  # noqa: ANN001, ANN202
        got = sample_patches(images.cuda(), cdf.cuda(), sz.cuda(), seeds.cuda(), it, g, d,
                             noise, backend=name)
        return PatchBatch(*(t.cpu() for t in got))

    for case in CORNER_CASES:
        for dtype in (F32, F64):
            for contiguous in (True, False):
                _check_corner_case(on_gpu, case, dtype, contiguous, NOISE)


# ============================================================================== downscale
# (B, C, H, W, kh, kw): batch 1 and 3, H = 1, odd sizes, even and 1-wide kernels, a kernel
# larger than the image (repeated reflection), an image exactly the kernel's size.
DOWN_CASES = [
    (1, 2, 11, 7, 3, 5),
    (3, 1, 1, 6, 3, 3),
    (2, 2, 5, 4, 9, 6),
    (1, 1, 9, 8, 2, 1),
    (2, 3, 6, 5, 6, 5),
]
LAYOUTS = ("transposed", "strided", "expanded")


def _down_inputs(case, dtype, layout, seed=0):  # noqa: ANN001, ANN202
    """x (a channels-last view) and a kernel that is not contiguous: "transposed" shared
    (kh, kw); "strided" per image (B, kh, kw) with no unit stride; "expanded" one kernel
    over the batch, (B, kh, kw) with batch stride 0."""
    b, c, h, w, kh, kw = case
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, h, w, c, generator=g, dtype=dtype).permute(0, 3, 1, 2)
    base = torch.rand(b, kw, 2 * kh, generator=g, dtype=dtype)
    base /= base.sum(dim=(1, 2), keepdim=True)  # normalised before the view is taken
    if layout == "transposed":
        return x, base[0, :, :kh].t()
    if layout == "strided":
        return x, base.transpose(1, 2)[:, ::2]
    return x, base[:1, :, :kh].transpose(1, 2).expand(b, kh, kw)


def _borders(case):  # noqa: ANN001, ANN202
    _, _, h, w, kh, kw = case
    return ("reflect", "valid") if h >= kh and w >= kw else ("reflect",)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_numba_cpu_downscale_with_non_contiguous_kernels(dtype, layout) -> None:  # noqa: ANN001
    for case in DOWN_CASES:
        x, k = _down_inputs(case, dtype, layout)
        for border in _borders(case):
            for s in (1, 2, 3, 4):
                got = downscale(x, k, s, border, backend="numba")
                assert got.dtype == dtype and got.is_contiguous()
                assert_close(got, downscale_ref(x, k, s, border))


def _run_host_downscale(host, x, k, s, border) -> torch.Tensor:  # noqa: ANN001
    from kgengine.ops._launch import downscale_launch
    from kgengine.ops._spec import check_downscale

    k3 = check_downscale(x, k, s, border)  # what the CuPy backend hands over: strides kept
    oh, ow = output_size(*x.shape[2:], *k3.shape[-2:], s, border)
    out = torch.full((x.shape[0], x.shape[1], oh, ow), float("nan"), dtype=x.dtype)
    host.run(downscale_launch(x, k3, s, border, out))
    return out


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_cuda_c_downscale_with_non_contiguous_kernels_on_host(dtype) -> None:  # noqa: ANN001
    host = _host_or_skip()
    for case in DOWN_CASES:
        for layout in LAYOUTS:
            x, k = _down_inputs(case, dtype, layout)
            for border in _borders(case):
                for s in (1, 2, 3, 4):
                    assert_close(_run_host_downscale(host, x, k, s, border),
                                 downscale_ref(x, k, s, border))


@pytest.mark.parametrize("max_blocks", [1, 3])
def test_cuda_c_downscale_grid_stride_loop_on_host(monkeypatch, max_blocks) -> None:  # noqa: ANN001
    """A grid capped below the output size (MAX_BLOCKS): the kernel's grid-stride loop must
    cover every pixel once (outputs of 2·3·17·29 = 2958 pixels, blocks of 256 threads)."""
    from kgengine.ops import _launch

    host = _host_or_skip()
    monkeypatch.setattr(_launch, "MAX_BLOCKS", max_blocks)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 17, 29, generator=g, dtype=F64)
    k = torch.rand(2, 5, 4, generator=g, dtype=F64)
    for s, border in ((1, "reflect"), (2, "valid")):
        launch = _launch.downscale_launch(
            x, k, s, border, torch.empty(2, 3, *output_size(17, 29, 5, 4, s, border), dtype=F64))
        assert launch[1][0] == max_blocks
        assert_close(_run_host_downscale(host, x, k, s, border), downscale_ref(x, k, s, border))


# (B, C, H, W, kh, kw) for the kernel gradient: also a 1x1 kernel on a 1x1 image.
GRAD_CASES = [*DOWN_CASES, (1, 3, 1, 1, 1, 1)]


@pytest.mark.parametrize("kshape", ["shared", "one", "per_image"])
@pytest.mark.parametrize("case", GRAD_CASES)
def test_numba_kernel_gradient_at_the_edges(case, kshape) -> None:  # noqa: ANN001
    """``_kernel_grad`` (with the forward's reflected tables) against autograd through the
    reference, with x's gradient asked for too, x not contiguous, every scale and border."""
    b, c, h, w, kh, kw = case
    g = torch.Generator().manual_seed(7)
    x0 = torch.rand(b, h, w, c, generator=g, dtype=F64).permute(0, 3, 1, 2)
    k0 = torch.rand({"shared": (kh, kw), "one": (1, kh, kw), "per_image": (b, kh, kw)}[kshape],
                    generator=g, dtype=F64)
    for border in _borders(case):
        for s in (1, 2, 3, 4):
            w_out = torch.randn(b, c, *output_size(h, w, kh, kw, s, border), generator=g,
                                dtype=F64)
            grads = []
            for name in ("numba", "torch"):
                x, k = x0.clone().requires_grad_(), k0.clone().requires_grad_()
                (downscale(x, k, s, border, backend=name) * w_out).sum().backward()
                grads.append((x.grad, k.grad))
            (gx, gk), (gx_ref, gk_ref) = grads
            assert gk.shape == k0.shape and gk.dtype == F64
            assert_close(gk, gk_ref)
            assert_close(gx, gx_ref)


@sim_only
def test_sim_numba_cuda_downscale_scales_1_and_4_and_strided_kernels() -> None:
    from kgengine.ops import _numba_cuda

    for case in ((1, 1, 5, 3, 2, 3), (2, 1, 1, 4, 3, 3), (3, 1, 3, 3, 4, 4)):
        for dtype, layout in ((F32, "strided"), (F64, "transposed"), (F32, "expanded")):
            x, k = _down_inputs(case, dtype, layout)
            for border in _borders(case):
                for s in (1, 4):
                    got = _numba_cuda.downscale(x, k, s, border)
                    assert got.dtype == dtype
                    assert_close(got, downscale_ref(x, k, s, border))


@sim_only
def test_sim_numba_cuda_patches_against_every_border() -> None:
    from kgengine.ops import _numba_cuda

    for case, dtype, contiguous in zip(CORNER_CASES, (F32, F64, F32), (False, True, True),
                                       strict=True):
        _check_corner_case(_numba_cuda.sample_patches, case, dtype, contiguous, NOISE, chans=1)


def test_numba_cuda_simulator() -> None:
    """Run this file's ``test_sim_*`` under the simulator (see :mod:`cudasim`)."""
    if IN_SIM:
        pytest.skip("already inside the simulator process")
    run_sim_tests(__file__)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("name", ["numba_cuda", "cupy"])
def test_gpu_downscale_with_non_contiguous_kernels(name, monkeypatch) -> None:  # noqa: ANN001
    from kgengine.ops import _launch

    skip_unless_gpu_backend(name)
    for max_blocks in (_launch.MAX_BLOCKS, 1):  # and the grid-stride loop (cupy)
        monkeypatch.setattr(_launch, "MAX_BLOCKS", max_blocks)
        for case in DOWN_CASES:
            for dtype in (F32, F64):
                for layout in LAYOUTS:
                    x, k = _down_inputs(case, dtype, layout)
                    for border in _borders(case):
                        for s in (1, 2, 4):
                            got = downscale(x.cuda(), k.cuda(), s, border, backend=name)
                            assert got.is_cuda
                            assert_close(got.cpu(), downscale_ref(x, k, s, border))


# ========================================================================== discriminator
def _d_params(b: int, channels: int, k: int, layers: int) -> dict[str, torch.Tensor]:
    from kgengine import discriminator as D

    ps = [D.init_params(channels, k, layers, 0.02, False, torch.Generator().manual_seed(i))
          for i in range(b)]
    p = {key: torch.stack([q[key] for q in ps]).contiguous() for key in ps[0]}
    g = torch.Generator().manual_seed(99)
    for key in ("b0", "bm", "beta", "bf"):  # non-zero biases and BN shifts
        p[key] = 0.1 * torch.randn(p[key].shape, generator=g, dtype=F64)
    return p


def _d_run(fwd, x, p):  # noqa: ANN001, ANN202
    from kgengine import discriminator as D

    q = {key: (v.clone().requires_grad_() if key in D.TRAINABLE else v.clone())
         for key, v in p.items()}
    x = x.detach().requires_grad_()
    out = fwd(x, q)
    up = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad((out * up).sum(), [x] + [q[key] for key in D.TRAINABLE])
    return out.detach(), grads, q


# (channels, first kernel, layers, B, N, S): an odd channel count and a 1x1 first kernel,
# an even first kernel with one block, batch 1 with 2 crops and batch 2 with one.
D_STRUCTURES = [(5, 1, 3, 1, 2, 6), (8, 4, 3, 2, 1, 8), (6, 3, 4, 1, 1, 9), (4, 2, 5, 2, 2, 5)]


@pytest.mark.parametrize("structure", D_STRUCTURES)
def test_compiled_discriminator_on_other_structures(structure) -> None:  # noqa: ANN001
    """Outputs, the updated u/v and every gradient against ``discriminator.forward`` in
    float64; the crops as a non-contiguous view (the compiled D copies them)."""
    from kgengine import discriminator as D
    from kgengine import discriminator_numba as DN

    ch, k, layers, b, n, size = structure
    p = _d_params(b, ch, k, layers)
    g = torch.Generator().manual_seed(size)
    x = (torch.rand(b, n, size, size, 3, generator=g, dtype=F64) * 2 - 1).permute(1, 0, 4, 2, 3)
    assert not x.is_contiguous()
    out_ref, grads_ref, q_ref = _d_run(D.forward, x, p)
    out, grads, q = _d_run(DN.forward, x, p)
    assert out.shape == (n, b, size - k + 1, size - k + 1)
    assert_close(out, out_ref)
    for key in DN.SN_KEYS:
        assert_close(q[key], q_ref[key])
    for name, got, want in zip(["x", *D.TRAINABLE], grads, grads_ref, strict=True):
        # b0 and bm feed a BatchNorm: their exact gradient is 0, both sides return rounding
        # noise around it, on the scale of the first conv's weight gradient
        _close_on_scale(got, want, grads_ref[1] if name in ("b0", "bm") else want, msg=name)


def test_compiled_discriminator_with_one_output_position() -> None:
    """Crops the size of D's first kernel (a 1x1 D-map, which the config refuses since
    0.9.22, ``tests/test_config_ranges.py``; the compiled kernel still handles it): each
    BatchNorm sees one value, so its output is its shift beta, and D's output is the closed
    form ``sigmoid(wf/sigma_f · relu(beta[-1]) + bf)`` whatever the crop; nothing flows
    back to the crop. (``discriminator.forward`` fails there: BatchNorm with one value.)"""
    from kgengine import discriminator as D
    from kgengine import discriminator_numba as DN

    p = _d_params(2, 6, 3, 4)
    x = torch.rand(2, 2, 3, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    out, grads, _ = _d_run(DN.forward, x, p)
    with torch.no_grad():
        wf = D.spectral_normalize(p["wf"].clone(), p["uf"].clone(), p["vf"].clone())  # (B,1,C)
        logit = (wf[:, 0] * p["beta"][:, -1].clamp(min=0)).sum(1) + p["bf"][:, 0]
    want = torch.sigmoid(logit).reshape(1, 2, 1, 1).expand(2, 2, 1, 1)
    assert_close(out, want)
    assert_close(grads[0], torch.zeros_like(x))


# ================================================================================= priors
def _prior_inputs(b, sizes, crop_hw, out_hw, rgb_sum):  # noqa: ANN001, ANN202
    from kgengine import priors
    from kgengine.config import KernelGANConfig

    g = torch.Generator().manual_seed(b + crop_hw[0])
    ksize = sum(sizes) - len(sizes) + 1
    k = torch.rand(b, ksize, ksize, generator=g, dtype=F64) / ksize**2
    k[:, 0, -1] = 0.0
    k[:, -1, 0] = -1e-3
    g_in = torch.rand(b, 3, *crop_hw, generator=g, dtype=F64) * 2 - 1
    g_out = torch.rand(b, 3, *out_hw, generator=g, dtype=F64) * 2 - 1
    cfg = dataclasses.replace(KernelGANConfig(), g_kernel_sizes=sizes,
                              authors_bicubic_rgb_sum=rgb_sum)
    mask = priors.boundary_mask_tensor(ksize, cfg.boundary_penalty, g_in, cfg.boundary_sigma)
    inputs = priors.PriorInputs(k.requires_grad_(), g_in, g_out.requires_grad_(), mask,
                                priors.centre_target(ksize), cfg)
    lam = {name: torch.rand(b, generator=g, dtype=F64) + 0.1
           for name in ("bicubic", "sum2one", "boundaries", "centralized", "sparse")}
    return inputs, lam


# (B, G's layer sizes, crop (H, W), G's output (h, w)): G's output as large as the bicubic
# result (no margin: its first and last taps read the zero padding), odd and non-square crops.
PRIOR_CASES = [
    (1, (3, 1), (17, 17), (8, 8)),
    (2, (3, 1), (64, 64), (31, 31)),
    (1, (5, 1), (18, 21), (7, 9)),
    (2, (5, 3, 1), (15, 16), (5, 5)),
]


@pytest.mark.parametrize("rgb_sum", [True, False])
@pytest.mark.parametrize("case", PRIOR_CASES)
def test_compiled_priors_where_the_bicubic_target_meets_the_padding(case, rgb_sum) -> None:  # noqa: ANN001
    from kgengine import priors
    from kgengine import priors_numba as PN

    b, sizes, crop_hw, out_hw = case
    results = []
    for fn in (PN.add_priors, priors.add_priors):
        inputs, lam = _prior_inputs(b, sizes, crop_hw, out_hw, rgb_sum)
        loss, terms = fn(torch.linspace(0.5, 1.5, b, dtype=F64), inputs, lam)
        up = torch.linspace(1.0, 2.0, b, dtype=F64)
        grads = torch.autograd.grad((loss * up).sum(), [inputs.k, inputs.g_out])
        results.append((loss.detach(), {n: t.detach() for n, t in terms.items()}, grads))
    (loss, terms, grads), (loss_ref, terms_ref, grads_ref) = results
    assert_close(loss, loss_ref)
    for name in PN.NAMES:
        assert_close(terms[name], terms_ref[name])
    for name, got, want in zip(("k", "g_out"), grads, grads_ref, strict=True):
        _close_on_scale(got, want, want, msg=name)


# ============================================================================= small ones
@pytest.mark.parametrize("n", [1, 2, 3, 5, 9, 17])
def test_compiled_adam_on_buffers_shorter_than_a_simd_register(n) -> None:  # noqa: ANN001
    """The compiled update against ``torch.optim.Adam`` (float64) where the loop is all
    tail; the gradient a strided view (the update makes it contiguous)."""
    from kgengine.adam import FlatAdam

    g = torch.Generator().manual_seed(n)
    p = torch.randn(n, generator=g, dtype=F64)
    leaf = p.clone().requires_grad_()
    ours = FlatAdam(p, 2e-4, (0.5, 0.999), compiled=True)
    ref = torch.optim.Adam([leaf], lr=2e-4, betas=(0.5, 0.999), foreach=False)
    for t in range(5):
        grad = torch.randn(2 * n, generator=g, dtype=F64)[::2] * 10.0 ** (-t)
        grad[0] = 0.0 if t == 2 else grad[0]
        ours.step(grad)
        leaf.grad = grad.clone()
        ref.step()
        assert_close(p, leaf.detach())


def test_lean_gan_terms_with_one_image_one_map_one_position() -> None:
    """``lean_step._gan_terms`` at B = N = P = 1 and at an odd P, float64: the gradient
    autograd forms through ``gan_loss`` (bitwise, as the module promises) and the loss."""
    from kgengine import lean_step, priors

    for npos, label, up in ((1, 1.0, 0.5), (1, 0.0, 3.0), (7, 0.0, 0.5)):
        probs = torch.rand(1, 1, npos, generator=torch.Generator().manual_seed(npos), dtype=F64)
        loss, grad = np.empty((1, 1)), np.empty((1, 1, npos))
        lean_step._gan_terms(probs.numpy(), np.array([label]), np.array([up]), loss, grad)
        leaf = probs[:, 0].clone().requires_grad_()
        value = priors.gan_loss(leaf, real=label == 1.0)
        (want,) = torch.autograd.grad(value, leaf, torch.full((1,), up, dtype=F64))
        assert torch.equal(torch.from_numpy(grad[:, 0]), want)
        assert_close(torch.from_numpy(loss[:, 0]), value.detach())


def test_put2d_copies_a_transposed_source_of_odd_shape() -> None:
    from kgengine.numba_util import put2d

    src = np.random.default_rng(0).standard_normal((7, 5)).T  # (5, 7), not C-contiguous
    dst = np.full((5, 7), np.nan)
    put2d(dst, src)
    assert dst.tobytes() == np.ascontiguousarray(src).tobytes()


def test_numba_uniform_grid_at_batch_one() -> None:
    """``_numba_cpu._hash_grid`` for one image (the extreme seed), one counter, odd n."""
    from kgengine.ops import _numba_cpu, rng

    for seed, count, n in ((-(2**63), 1, 1), (2**63 - 1, 3, 5)):
        seeds = torch.tensor([seed])
        got = _numba_cpu.uniform_grid(seeds, rng.STREAM_G_NOISE, 2**32 + 1, count, n)
        want = rng.uniform(seeds.view(1, 1, 1), rng.STREAM_G_NOISE,
                           torch.arange(2**32 + 1, 2**32 + 1 + count).view(1, count, 1),
                           torch.arange(n).view(1, 1, n))
        assert got.shape == (1, count, n)
        assert_close(got, want)
