"""Numba helpers: kernels compiled one dtype at a time give the code of all signatures at
once, and a cold disk cache is told from a warm one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from numba import njit

from kgengine.numba_util import LazyKernel, compiled_in_digest, first_arg_type

SIGS = [f"void({t}[:, ::1], {t}, {t}[:, ::1])" for t in ("float32", "float64")]


def _axpy(x, a, out):  # noqa: ANN001, ANN202
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = a * x[i, j] + out[i, j] * 0.5


def test_first_arg_type():
    assert first_arg_type("void(float32[:,:,:,:], float64[:,:,:], int64)") == "float32"
    assert first_arg_type("void(int64, float64[::1])") == "int64"
    assert first_arg_type("float64(float64)") == "float64"


def test_lazy_kernel_compiles_one_dtype_at_a_time_with_the_same_bits():
    lazy = LazyKernel(_axpy, SIGS, {"fastmath": {"contract"}})
    whole = njit(SIGS, fastmath={"contract"})(_axpy)  # every signature at once
    rng = np.random.default_rng(0)
    assert lazy.signatures == []
    for n, dtype in enumerate((np.float32, np.float64), start=1):
        x = rng.standard_normal((5, 7)).astype(dtype)
        out_lazy, out_whole = x[::-1].copy(), x[::-1].copy()
        lazy(x, dtype(1.3), out_lazy)
        whole(x, dtype(1.3), out_whole)
        assert out_lazy.tobytes() == out_whole.tobytes()
        # only the called dtypes are compiled, each as its signature string says
        assert len(lazy.signatures) == n
        assert str(lazy.signatures[-1][0].dtype) == np.dtype(dtype).name
    lazy(x.astype(np.float32), np.float32(2.0), out_lazy.astype(np.float32))
    assert len(lazy.signatures) == 2  # nothing compiled again


def test_cold_cache_tells_an_empty_disk_cache(tmp_path):
    """A cached kernel in a fresh module: cold before its first call, warm after it and in
    the next process (the private Numba API cold_cache reads is still there)."""
    (tmp_path / "toy.py").write_text(textwrap.dedent("""
        from numba import njit

        @njit(cache=True)
        def twice(x):
            return 2 * x
    """))
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        import toy
        from kgengine.numba_util import cold_cache
        before = cold_cache(toy.twice)
        toy.twice(3)
        print(before, cold_cache(toy.twice))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, check=True,
                           capture_output=True, text=True, timeout=300).stdout.split()
            for _ in range(2)]
    assert runs == [["True", "False"], ["False", "False"]]


# --- what cached kernels compile in from other modules (0.9.22) ---

ROOT = Path(__file__).resolve().parents[1] / "kgengine"
#: Names whose code or value Numba compiles into a caller, and the modules that define them:
#: a cached kernel module that imports one must record it in COMPILED_IN.
COMPILED_NAMES = {"put2d": "kgengine.numba_util", "make_scalar_rng": "kgengine.ops.rng",
                  "make_crop_origin": "kgengine.ops._spec", "BN_EPS": "kgengine.discriminator",
                  "SN_EPS": "kgengine.discriminator"}


def _modules_with(text: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
                  for p in ROOT.rglob("*.py") if text in p.read_text(encoding="utf-8"))


def test_every_cached_kernel_module_records_what_it_compiles_in() -> None:
    import importlib

    recorded = _modules_with("COMPILED_IN_DIGEST = ")
    assert len(recorded) >= 3
    for name in recorded:
        mod = importlib.import_module(name)
        want = compiled_in_digest(*mod.COMPILED_IN)
        assert mod.COMPILED_IN_DIGEST == want, (
            f"{name}: a helper or constant its cached kernels compile in changed; set "
            f"COMPILED_IN_DIGEST = {want!r} (this also refreshes Numba's disk cache)")
    for name in _modules_with("cache=True"):
        mod = importlib.import_module(name)
        for attr, home in COMPILED_NAMES.items():
            obj = getattr(importlib.import_module(home), attr)
            if name != home and any(v is obj for v in vars(mod).values()):
                assert any(o is obj for o in getattr(mod, "COMPILED_IN", ())), (
                    f"{name} compiles in {home}.{attr}: list it in its COMPILED_IN")


def test_compiled_in_digest_sees_sources_values_and_arrays() -> None:
    def helper(x):  # noqa: ANN001, ANN202
        return x + 1

    def other(x):  # noqa: ANN001, ANN202
        return x + 2

    base = compiled_in_digest(helper, 1e-5, np.arange(3.0))
    assert base == compiled_in_digest(helper, 1e-5, np.arange(3.0))
    assert base == compiled_in_digest(njit(helper), 1e-5, np.arange(3.0))  # the Python source
    assert len({base, compiled_in_digest(other, 1e-5, np.arange(3.0)),
                compiled_in_digest(helper, 1e-6, np.arange(3.0)),
                compiled_in_digest(helper, 1e-5, np.arange(3.0, dtype=np.float32)),
                compiled_in_digest(helper, 1e-5, np.arange(1.0, 4.0))}) == 5
