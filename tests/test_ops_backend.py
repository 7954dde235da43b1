"""Backend table and selection of the ops: one interface, resolve once, overrides, fallback."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from cudasim import HAS_CUDA, HAS_CUPY, ROOT

from kgengine.degrade import degrade
from kgengine.ops import backend as be
from kgengine.ops import downscale, downscale_ref


def _inputs(x_shape, k_shape, dtype):  # noqa: ANN001, ANN202
    """Seeded uniform image and a kernel normalised to sum 1 over its last two dims."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(*x_shape, generator=g, dtype=dtype)
    k = torch.rand(*k_shape, generator=g, dtype=dtype)
    return x, k / k.sum(dim=(-2, -1), keepdim=True)


@pytest.fixture
def fresh_warnings(monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setattr(be, "_warned", set())
    monkeypatch.delenv(be.ENV_VAR, raising=False)


def test_auto_backend_cpu_and_report(fresh_warnings) -> None:  # noqa: ANN001
    assert be.backend_name("downscale", "cpu") == be.CPU_DEFAULT["downscale"]
    report = be.backend_report()
    for op in be.OPS:
        assert report[f"{op} (cpu)"] in ("torch", "numba")
        assert report[f"{op} (cuda)"] in ("torch", "numba_cuda", "cupy")
    assert report["numba"].startswith("yes")
    if not HAS_CUPY:
        assert report["cupy"].startswith("no: cupy not installed")
    if not HAS_CUDA:
        assert report["downscale (cuda)"] == "torch"


@pytest.mark.parametrize(
    ("usable", "want"),
    [
        ({"cupy", "numba_cuda"}, {"downscale": "torch", "sample_patches": "cupy"}),
        ({"numba_cuda"}, {"downscale": "torch", "sample_patches": "numba_cuda"}),
        (set(), {"downscale": "torch", "sample_patches": "torch"}),
    ],
)
def test_auto_backend_cuda_follows_the_measured_table(monkeypatch, usable, want) -> None:  # noqa: ANN001
    """On CUDA: cuDNN's convolution for downscale (it beat the CuPy kernel on an H200), the
    first usable custom kernel for patch sampling, else torch."""
    monkeypatch.setattr(be, "availability", lambda name: (name in usable, "test"))
    be.auto_backend.cache_clear()
    try:
        assert {op: be.auto_backend(op, "cuda") for op in be.OPS} == want
    finally:
        be.auto_backend.cache_clear()


def test_override_argument_env_and_single_warning(fresh_warnings, monkeypatch) -> None:  # noqa: ANN001
    assert be.backend_name("downscale", "cpu", "torch") == "torch"
    monkeypatch.setenv(be.ENV_VAR, "torch")
    assert be.backend_name("downscale", "cpu") == "torch"
    assert be.backend_name("downscale", "cpu", "numba") == "numba"  # argument beats env var
    monkeypatch.setenv(be.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="KGENGINE_OPS_BACKEND"):
        be.backend_name("downscale", "cpu")
    monkeypatch.delenv(be.ENV_VAR)
    with pytest.raises(ValueError, match="expected one of"):
        be.backend_name("downscale", "cpu", "cuda")
    x, k = _inputs((1, 1, 8, 8), (3, 3), torch.float64)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):  # cupy never runs on CPU tensors: torch, warned once
            assert torch.equal(downscale(x, k, 2, backend="cupy"), downscale_ref(x, k, 2))
    assert len([w for w in rec if "unavailable" in str(w.message)]) == 1


def test_resolve_returns_the_backend_modules_function(fresh_warnings, monkeypatch) -> None:  # noqa: ANN001
    from kgengine.ops import _numba_cpu, _torch

    assert be.resolve("downscale", "cpu") is _numba_cpu.downscale
    assert be.resolve("sample_patches", torch.device("cpu")) is _numba_cpu.sample_patches
    assert be.resolve("downscale", "cpu", "torch") is _torch.downscale is downscale_ref
    monkeypatch.setenv(be.ENV_VAR, "torch")  # read when resolving, not when calling
    assert be.resolve("sample_patches", "cpu") is _torch.sample_patches
    with pytest.raises(ValueError, match="op: expected one of"):
        be.resolve("upscale", "cpu")
    with pytest.warns(RuntimeWarning, match="unavailable"):
        assert be.resolve("downscale", "cpu", "cupy") is _torch.downscale
    x, k = _inputs((2, 3, 17, 29), (2, 13, 13), torch.float32)
    x = x.transpose(2, 3).contiguous().transpose(2, 3)  # non-contiguous
    fn = be.resolve("downscale", "cpu", "numba")
    for s in (2, 3):  # resolved once, called many times: same as the public op
        assert torch.equal(fn(x, k, s), downscale(x, k, s, backend="numba"))
        assert torch.equal(fn(x, k, s, "valid"), downscale(x, k, s, "valid", backend="numba"))


def _signature(fn: ast.FunctionDef) -> list[tuple[str, str | None]]:
    """(name, default source) of every parameter of ``fn``."""
    assert not fn.args.kwonlyargs and fn.args.vararg is None and fn.args.kwarg is None
    params = fn.args.posonlyargs + fn.args.args
    defaults = [None] * (len(params) - len(fn.args.defaults)) + fn.args.defaults
    pairs = zip(params, defaults, strict=True)
    return [(a.arg, None if d is None else ast.unparse(d)) for a, d in pairs]


@pytest.mark.parametrize("name", be.BACKENDS)
def test_every_backend_has_the_public_signature(name) -> None:  # noqa: ANN001
    """Read from the source, so that the CUDA backends are checked without CuPy or a GPU."""
    from kgengine.ops import downscale as public_downscale
    from kgengine.ops import sample_patches as public_patches

    path = ROOT / (be.MODULES[name].replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for op, public in (("downscale", public_downscale), ("sample_patches", public_patches)):
        params = list(inspect.signature(public).parameters.values())
        assert params[-1].name == "backend"
        want = [
            (p.name, None if p.default is inspect.Parameter.empty else repr(p.default))
            for p in params[:-1]
        ]
        assert op in found, f"{path.name} has no {op}()"
        assert _signature(found[op]) == want, f"{path.name}: {op}() differs from the public op"


def test_degrade_dispatches_to_op(fresh_warnings, monkeypatch) -> None:  # noqa: ANN001
    img = np.random.default_rng(0).random((23, 31, 3))
    k = np.random.default_rng(1).random((7, 7))
    fast = degrade(img, k, 3)
    monkeypatch.setenv(be.ENV_VAR, "torch")
    ref = degrade(img, k, 3)
    assert fast.shape == (8, 11, 3)
    np.testing.assert_allclose(fast, ref, atol=1e-12)
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
    np.testing.assert_allclose(
        degrade(t, torch.from_numpy(k), 5).numpy()[0].transpose(1, 2, 0),
        degrade(img, k, 5),
        atol=1e-12,
    )


def test_import_does_not_load_numba() -> None:
    code = "import sys, kgengine, kgengine.ops, kgengine.degrade; print('numba' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.stdout.strip() == "False", res.stderr
