"""Strided conv-downscale: every backend against the reference, gradients, backend choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cudasim import IN_SIM, ROOT, run_sim_tests, sim_only, skip_unless_gpu_backend
from tolerances import assert_close

from kgengine.ops import downscale, downscale_ref
from kgengine.ops.downscale import degrade_torch, output_size, reflect_index

# (B, C, H, W, kh, kw): sizes 1, odd, prime, even kernels, kernel larger than a side.
CASES = [
    (1, 3, 17, 29, 13, 13),
    (5, 2, 29, 17, 4, 6),
    (2, 1, 1, 7, 3, 3),
    (1, 2, 5, 4, 13, 12),
    (3, 1, 1, 1, 1, 1),
    (1, 1, 9, 9, 2, 1),
]
DTYPES = [torch.float32, torch.float64]


def _inputs(case, dtype, per_image, contiguous, seed=0):  # noqa: ANN001, ANN202
    b, c, h, w, kh, kw = case
    g = torch.Generator().manual_seed(seed)
    if contiguous:
        x = torch.rand(b, c, h, w, generator=g, dtype=dtype)
    else:  # a channels-last view of a wider tensor, sliced with a step: no unit stride
        x = torch.rand(b, h, 2 * w, c, generator=g, dtype=dtype).permute(0, 3, 1, 2)[..., ::2]
    k = torch.rand((b if per_image else 1), kh, kw, generator=g, dtype=dtype)
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    return x, (k if per_image else k[0])


def _valid_ok(case) -> bool:  # noqa: ANN001
    _, _, h, w, kh, kw = case
    return h >= kh and w >= kw


def _loop_oracle(x: np.ndarray, k: np.ndarray, s: int, border: str) -> np.ndarray:
    """The module docstring's sums, written as plain loops (float64)."""
    b, c, h, w = x.shape
    kh, kw = k.shape[-2:]
    k = np.broadcast_to(k, (b, kh, kw))
    oh, ow = output_size(h, w, kh, kw, s, border)
    if border == "reflect":
        ri = reflect_index(h, kh // 2, s * oh + kh)
        ci = reflect_index(w, kw // 2, s * ow + kw)
    else:
        ri, ci = np.arange(h), np.arange(w)
    y = np.zeros((b, c, oh, ow))
    for bi in range(b):
        for i in range(oh):
            for j in range(ow):
                for u in range(kh):
                    for v in range(kw):
                        y[bi, :, i, j] += k[bi, u, v] * x[bi, :, ri[s * i + u], ci[s * j + v]]
    return y


# ---------------------------------------------------------------------------- reference
@pytest.mark.parametrize(
    ("case", "border"),
    [(c, "reflect") for c in CASES] + [(c, "valid") for c in CASES if _valid_ok(c)],
)
def test_reference_matches_loop_oracle(case, border) -> None:  # noqa: ANN001
    x, k = _inputs(case, torch.float64, per_image=True, contiguous=True)
    for s in (1, 2, 3):
        got = downscale_ref(x, k, s, border).numpy()
        np.testing.assert_allclose(got, _loop_oracle(x.numpy(), k.numpy(), s, border), atol=1e-12)


def test_reflect_reference_is_degrade_torch_and_sizes() -> None:
    x, k = _inputs((2, 3, 17, 29, 13, 13), torch.float64, True, True)
    for s in (2, 3, 4):
        y = downscale_ref(x, k, s)
        assert y.shape == (2, 3, -(-17 // s), -(-29 // s))
        assert torch.equal(y, degrade_torch(x, k, s))
        yv = downscale_ref(x, k, s, "valid")
        assert yv.shape == (2, 3, (17 - 13) // s + 1, (29 - 13) // s + 1)


def test_impulse_hand_computed() -> None:
    x = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    x[0, 0, 2, 2] = 1.0
    k = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    # reflect: rows read by y[i] are R(2i-1..2i+1); only i = 1 reads row 2 (tap u = 1; the
    # reflected row -1 is row 1, not 2), so y = k[1,1] at (1,1) and 0 elsewhere.
    # valid: rows 2i..2i+2, so row 2 is tap u = 2 - 2i: y[i,j] = k[2-2i, 2-2j].
    for name in ("torch", "numba"):
        y = downscale(x, k, 2, backend=name)[0, 0]
        assert y[1, 1] == 4.0 and y.sum() == 4.0
        yv = downscale(x, k, 2, "valid", backend=name)[0, 0]
        assert yv.tolist() == [[8.0, 6.0], [2.0, 0.0]]


# --------------------------------------------------------------------------- numba CPU
@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("per_image", [False, True], ids=["shared_k", "per_image_k"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES)
def test_numba_cpu_matches_reference(case, dtype, per_image, contiguous) -> None:  # noqa: ANN001
    x, k = _inputs(case, dtype, per_image, contiguous)
    for border in ("reflect", "valid"):
        if border == "valid" and not _valid_ok(case):
            continue
        for s in (1, 2, 3, 4):
            expected = downscale_ref(x, k, s, border)
            got = downscale(x, k, s, border, backend="numba")
            assert got.dtype == dtype and got.is_contiguous()
            assert_close(got, expected)


def test_numba_cpu_large_kernel_and_image() -> None:
    x, k = _inputs((1, 3, 67, 131, 25, 25), torch.float32, True, True, seed=3)
    for s in (2, 4):
        assert_close(downscale(x, k, s, backend="numba"), downscale_ref(x, k, s))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_numba_cpu_serial_and_parallel_kernels_give_the_same_bits(monkeypatch, dtype) -> None:  # noqa: ANN001
    """Small calls run the kernels' serial twins: same bits as the parallel ones (the trainer's
    batch invariance needs it: one image takes the serial path, a batch the parallel one)."""
    from kgengine.ops import _numba_cpu

    x, k = _inputs((3, 3, 64, 64, 13, 13), dtype, True, True, seed=4)
    k.requires_grad_()
    grad = torch.rand(3, 3, 26, 26, generator=torch.Generator().manual_seed(5), dtype=dtype)
    results = []
    for serial_work in (0, 10**12):  # everything parallel, then everything serial
        monkeypatch.setattr(_numba_cpu, "SERIAL_WORK", serial_work)
        for border, s in (("valid", 2), ("reflect", 3)):
            y = _numba_cpu.downscale(x, k, s, border)
            gk = torch.autograd.grad(y, k, grad if border == "valid" else torch.ones_like(y))
            results.append((y, gk[0]))
    for (y1, g1), (y2, g2) in zip(results[:2], results[2:], strict=True):
        assert torch.equal(y1, y2) and torch.equal(g1, g2)


def test_serial_ops_runs_the_serial_twins_on_this_thread_only(monkeypatch) -> None:  # noqa: ANN001
    """Inside ``serial_ops`` a call above SERIAL_WORK takes the serial twin (the trainer's
    loop), with the parallel kernel's bits; other threads and the code after it do not."""
    import threading

    from kgengine.ops import _numba_cpu
    from kgengine.ops.backend import serial_only, serial_ops

    calls: list[str] = []
    for name in ("_strided_corr", "_strided_corr_serial"):
        real = getattr(_numba_cpu, name)
        monkeypatch.setattr(_numba_cpu, name,
                            lambda *a, _f=real, _n=name: (calls.append(_n), _f(*a))[1])
    x, k = _inputs((2, 3, 64, 64, 13, 13), torch.float32, True, True, seed=6)
    monkeypatch.setattr(_numba_cpu, "SERIAL_WORK", 1)
    y_par = _numba_cpu.downscale(x, k, 2, "valid")
    seen: list[bool] = []
    with serial_ops():
        y_ser = _numba_cpu.downscale(x, k, 2, "valid")
        other = threading.Thread(target=lambda: seen.append(serial_only()))
        other.start()
        other.join()
    y_after = _numba_cpu.downscale(x, k, 2, "valid")
    assert calls == ["_strided_corr", "_strided_corr_serial", "_strided_corr"]
    assert seen == [False] and not serial_only()
    assert torch.equal(y_par, y_ser) and torch.equal(y_par, y_after)


# ------------------------------------------------------------------------------ autograd
@pytest.mark.parametrize("border", ["valid", "reflect"])
def test_gradcheck_through_custom_backend(border) -> None:  # noqa: ANN001
    x, k = _inputs((2, 2, 9, 8, 4, 3), torch.float64, True, True)
    x.requires_grad_(True)
    k.requires_grad_(True)

    def fn(xx: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
        return downscale(xx, kk, 2, border, backend="numba")

    assert torch.autograd.gradcheck(fn, (x, k))


@pytest.mark.parametrize("border", ["valid", "reflect"])
@pytest.mark.parametrize("kshape", ["shared", "one", "per_image"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_gradient_matches_reference(kshape, border, dtype) -> None:  # noqa: ANN001
    x, k = _inputs((3, 3, 20, 21, 13, 12), dtype, kshape == "per_image", False)
    if kshape == "one":
        k = k[None]
    s = 3
    oh, ow = output_size(20, 21, 13, 12, s, border)
    w = torch.randn(3, 3, oh, ow, generator=torch.Generator().manual_seed(1), dtype=dtype)
    grads = []
    for name in ("numba", "torch"):
        kk = k.clone().requires_grad_(True)
        (downscale(x, kk, s, border, backend=name) * w).sum().backward()
        grads.append(kk.grad)
    assert grads[0].shape == k.shape and grads[0].dtype == dtype
    # float32: sums of 3*3*7*7 products accumulated in float64 vs float32 in the reference
    tol = 1e-4 if dtype == torch.float32 else 1e-11
    torch.testing.assert_close(grads[0], grads[1], rtol=tol, atol=tol)


# -------------------------------------------------------------- CUDA C on the host (g++)
def _host_or_skip():  # noqa: ANN202
    import cuda_host

    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler to run kernels/*.cu on the host")
    return cuda_host


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_cuda_c_source_on_host_matches_reference(dtype) -> None:  # noqa: ANN001
    host = _host_or_skip()
    from kgengine.ops._launch import downscale_launch

    for case in CASES:
        for per_image, contiguous in ((True, False), (False, True)):
            x, k = _inputs(case, dtype, per_image, contiguous)
            k3 = k if per_image else k[None]
            for border in ("reflect", "valid"):
                if border == "valid" and not _valid_ok(case):
                    continue
                for s in (1, 2, 3, 4):
                    oh, ow = output_size(*x.shape[2:], *k.shape[-2:], s, border)
                    out = torch.full((x.shape[0], x.shape[1], oh, ow), float("nan"), dtype=dtype)
                    host.run(downscale_launch(x, k3, s, border, out))
                    assert_close(out, downscale_ref(x, k, s, border))


# ------------------------------------------------------------ Numba CUDA (simulator)
@sim_only
def test_sim_numba_cuda_downscale() -> None:
    from kgengine.ops import _numba_cuda

    small = [(1, 1, 7, 5, 3, 2), (2, 2, 1, 4, 3, 3), (5, 1, 3, 3, 5, 4), (1, 1, 1, 1, 1, 1)]
    for case in small:
        for dtype, per_image, contiguous in (
            (torch.float32, True, False),
            (torch.float64, False, True),
        ):
            x, k = _inputs(case, dtype, per_image, contiguous)
            for border in ("reflect", "valid"):
                if border == "valid" and not _valid_ok(case):
                    continue
                for s in (2, 3):
                    got = _numba_cuda.downscale(x, k, s, border)
                    assert got.dtype == dtype
                    assert_close(got, downscale_ref(x, k, s, border))


def test_numba_cuda_simulator() -> None:
    """Run this file's ``test_sim_*`` under the simulator (see :mod:`cudasim`)."""
    if IN_SIM:
        pytest.skip("already inside the simulator process")
    run_sim_tests(__file__)


# -------------------------------------------------------------------------- real GPU
def _gpu_cases():  # noqa: ANN202
    for case in CASES + [(2, 3, 257, 131, 13, 13)]:
        for dtype in DTYPES:
            for per_image, contiguous in ((True, False), (False, True)):
                yield case, dtype, per_image, contiguous


@pytest.mark.needs_cuda
@pytest.mark.parametrize("name", ["numba_cuda", "cupy"])
def test_gpu_backends_match_reference(name) -> None:  # noqa: ANN001
    skip_unless_gpu_backend(name)
    for case, dtype, per_image, contiguous in _gpu_cases():
        x, k = _inputs(case, dtype, per_image, contiguous)
        x, k = x.cuda(), k.cuda()
        for border in ("reflect", "valid"):
            if border == "valid" and not _valid_ok(case):
                continue
            for s in (2, 3, 4):
                got = downscale(x, k, s, border, backend=name)
                assert got.is_cuda
                assert_close(got.cpu(), downscale_ref(x.cpu(), k.cpu(), s, border))


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.rand(3, 8, 8), torch.rand(3, 3), 2), "expected a \\(B,C,H,W\\)"),
        ((torch.rand(1, 1, 8, 8), torch.rand(3, 3), 5), "scale: expected one of"),
        ((torch.rand(2, 1, 8, 8), torch.rand(3, 3, 3), 2), "kernel: expected"),
        ((torch.rand(1, 1, 8, 8), torch.rand(3, 0), 2), "kernel: expected"),
        ((torch.zeros(1, 1, 8, 8, dtype=torch.int64), torch.rand(3, 3), 2), "floating-point"),
    ],
)
def test_bad_arguments(args, match) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        downscale(*args, backend="numba")


def test_bad_border_and_valid_too_small() -> None:
    with pytest.raises(ValueError, match="border"):
        downscale(torch.rand(1, 1, 8, 8), torch.rand(3, 3), 2, "zero")
    with pytest.raises(ValueError, match="at least as large as the kernel"):
        downscale(torch.rand(1, 1, 8, 8), torch.rand(9, 3), 2, "valid")


# ---------------------------------------------------------------------------- packaging
def test_wheel_ships_every_package_and_the_cuda_sources() -> None:
    from setuptools import find_namespace_packages

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {
        p
        for p in find_namespace_packages(str(ROOT), include=["kgengine*"])
        if "__pycache__" not in p
    }
    missing = found - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert cfg["package-dir"]["kgengine._cuda"] == "kernels"
    assert cfg["package-data"]["kgengine._cuda"] == ["*.cu"]
    from cuda_host import SOURCES

    from kgengine.ops._launch import kernel_source

    for name in SOURCES:
        assert (ROOT / "kernels" / name).is_file()
        assert kernel_source(name).startswith("//")


def test_the_sdist_runs_its_own_tests(tmp_path) -> None:
    """0.9.28's review: the sdist held tests/test_*.py without conftest.py and the helper
    modules (collection errors), as setuptools takes only test*.py without a MANIFEST.in."""
    import shutil
    import subprocess
    import sys
    import tarfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    caches = ("__pycache__", "*.nbi", "*.nbc")
    for folder in ("kgengine", "kernels", "tests", "docs", "bench", ".ci"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns(
            *caches, *(("data",) if folder == "bench" else ())))
    code = f"from setuptools import build_meta as b; print(b.build_sdist({str(tmp_path)!r}))"
    res = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    with tarfile.open(tmp_path / res.stdout.strip().splitlines()[-1]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    helpers = {f"tests/{p.name}" for p in (ROOT / "tests").glob("*.py")}
    assert helpers <= names, sorted(helpers - names)
    assert "kgengine/data/sample_lr.png" in names and "bench/gpu_check.sh" in names
    assert not any("__pycache__" in n or n.startswith("bench/data/") for n in names)
