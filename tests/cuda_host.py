"""Run the CUDA C kernels of ``kernels/*.cu`` on the CPU, to test them without a GPU.

The sources are compiled as C++ (``g++``) after a small prelude that maps the CUDA
keywords to host code (``__global__`` -> nothing, ``__shared__`` -> ``static``, ...) and
emulates a launch by calling the kernel once per (block, thread), blocks in order and, inside
a block, threads in order. That is a valid schedule of a CUDA launch for these kernels: the
only cross-thread dependency (thread 0 writes the crop origin to shared memory before
``__syncthreads()``) is met because thread 0 runs first. Arguments are passed the way
``cuLaunchKernel`` takes them (an array of pointers to the values) and come from the same
launch configurations as the CuPy backend (:mod:`kgengine.ops._launch`), so the tests cover
the CuPy path's arguments too. Needs a C++17 compiler.

The library is built once per process in a fresh private directory (``tempfile.mkdtemp``,
mode 0700, random name), loaded from there and the directory removed; nothing is read back
from a predictable path.
"""

from __future__ import annotations

import ctypes
import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from kgengine.ops._launch import CTYPE, Launch, kernel_source

SOURCES = ("rng.cu", "patches.cu", "downscale.cu")
KERNELS = ("kg_sample_patches", "kg_downscale")

PRELUDE = r"""
#include <math.h>
#include <cstddef>
#include <utility>
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
struct kg_dim3 { unsigned int x, y, z; };
static kg_dim3 blockIdx, threadIdx, blockDim, gridDim;
static inline void __syncthreads() {}
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
"""

LAUNCHER = r"""
template <typename... A, std::size_t... I>
static void kg_call(void (*k)(A...), void** p, std::index_sequence<I...>) {
    k(*static_cast<A*>(p[I])...);
}
template <typename... A>
static void kg_launch(void (*k)(A...), const unsigned int* g, void** p) {
    gridDim = {g[0], g[1], g[2]};
    blockDim = {g[3], g[4], g[5]};
    for (unsigned int z = 0; z < g[2]; ++z)
        for (unsigned int y = 0; y < g[1]; ++y)
            for (unsigned int x = 0; x < g[0]; ++x)
                for (unsigned int t = 0; t < g[3]; ++t) {
                    blockIdx = {x, y, z};
                    threadIdx = {t, 0, 0};
                    kg_call(k, p, std::index_sequence_for<A...>{});
                }
}
"""


def compiler() -> str | None:
    """Path of the host C++ compiler, or None."""
    return shutil.which("g++") or shutil.which("clang++")


def _symbol(name: str) -> str:
    return "run_" + re.sub(r"\W+", "_", name).strip("_")


def _source() -> str:
    """The kernels' sources after the prelude, with one ``extern "C"`` launcher per instance."""
    code = PRELUDE + "\n".join(kernel_source(s) for s in SOURCES) + LAUNCHER
    for kern in KERNELS:
        for t in CTYPE.values():
            sym = _symbol(f"{kern}<{t}>")
            code += (
                f'extern "C" void {sym}(const unsigned int* g, void** p) '
                f"{{ kg_launch(&{kern}<{t}>, g, p); }}\n"
            )
    return code


@functools.cache
def load() -> ctypes.CDLL:
    """Compile (once per process) the kernels for the host; raises if no compiler."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++ or clang++) on PATH")
    with tempfile.TemporaryDirectory(prefix="kgengine_cuda_host_") as tmp:
        src, lib = Path(tmp) / "kernels.cpp", Path(tmp) / "kernels.so"
        src.write_text(_source(), encoding="utf-8")
        cmd = [cxx, "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
               str(src), "-o", str(lib)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return ctypes.CDLL(str(lib))  # stays mapped after the directory is removed


def _cvalue(a: object) -> ctypes._SimpleCData:
    if isinstance(a, torch.Tensor):
        if a.is_cuda:
            raise ValueError("host emulation needs CPU tensors")
        return ctypes.c_void_p(a.data_ptr())
    if isinstance(a, np.int64):
        return ctypes.c_longlong(int(a))
    if isinstance(a, np.int32):
        return ctypes.c_int(int(a))
    if isinstance(a, np.float64):
        return ctypes.c_double(float(a))
    raise TypeError(f"unsupported kernel argument type {type(a).__name__}")


def run(launch: Launch) -> None:
    """Execute a launch configuration on the host (CPU tensors, written in place)."""
    name, grid, block, args = launch
    values = [_cvalue(a) for a in args]
    ptrs = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
    dims = (ctypes.c_uint * 6)(*grid, *block)
    getattr(load(), _symbol(name))(dims, ptrs)
