"""Numba helpers: kernels compiled one dtype at a time give the code of all signatures at
once, and a cold disk cache is told from a warm one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
from numba import njit

from kgengine.numba_util import LazyKernel, first_arg_type

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
