"""Helpers of the compiled Numba kernels: single-threaded BLAS, serial twins of parallel
kernels, tasks on threads, reusable work buffers, the digest of what a cached kernel
compiles in from other modules."""

from __future__ import annotations

import collections
import functools
import hashlib
import inspect
import math
import os
import re
import stat
import tempfile
import threading
import types
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import torch
from numba import njit


def _cache_probe() -> int:  # pragma: no cover - compiled by Numba only if ever called
    return 0


def ensure_cache_location(decorate: Callable[[Callable], object] | None = None) -> str | None:
    """Give Numba a folder to cache kgengine's kernels in where it has none.

    Numba writes a kernel's cache next to its source, else under the user's home
    (``~/.cache``), else in ``NUMBA_CACHE_DIR``; where none of these is writable (a package
    installed read-only, run as a user without a writable home: ``docker --user``, a service
    account) every ``@njit(cache=True)`` raised ``RuntimeError`` at import. Then this sets
    Numba's cache folder to ``<tmp>/kgengine-numba-<uid>`` (made private to this user; a
    fresh temporary folder if that one is not ours) and warns once, naming
    ``NUMBA_CACHE_DIR``. Called when this module is imported, before any cached kernel is
    defined (every module with cached kernels imports this one first).

    Args:
        decorate: the probe (``njit(cache=True)``, which finds the location when applied).
    Returns:
        The folder set, or None where Numba had a location.
    """
    try:
        (decorate or njit(cache=True))(_cache_probe)
        return None
    except RuntimeError:
        pass
    folder = Path(tempfile.gettempdir()) / f"kgengine-numba-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise PermissionError  # another user's folder: its cache would run as our code
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="kgengine-numba-"))
    numba.config.CACHE_DIR = str(folder)
    warnings.warn(f"kgengine: Numba cannot write its cache next to kgengine or in your home; "
                  f"compiled kernels are cached in {folder} (set NUMBA_CACHE_DIR to choose)",
                  RuntimeWarning, stacklevel=2)
    return str(folder)


ensure_cache_location()


@functools.cache
def single_threaded_blas() -> int:
    """Run the BLAS that Numba's ``np.dot`` calls (SciPy's) on one thread; returns how many
    libraries were set.

    D's and G's products are too small to split well, and a BLAS thread pool next to
    PyTorch's and Numba's oversubscribes the cores (measured on 2 cores, 2 threads each: 46 vs
    9 ms/iteration; one 64x9 by 9x1600 product on a busy machine: 16 ms vs 0.1 ms). This is
    process-wide: NumPy's own BLAS copy keeps its threads when it is a separate library (pip
    wheels), but where NumPy and SciPy share one BLAS (e.g. conda) NumPy's products run on
    one thread too.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library Numba calls)
    from threadpoolctl import ThreadpoolController

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    mine = [lib for lib in libs
            if not any("numpy" in part for part in Path(lib.filepath).parent.parts)] or libs
    for lib in mine:
        lib.set_num_threads(1)
    return len(mine)


def compiled_in_digest(*objects: object) -> str:
    """The first 12 hex digits of SHA-256 over what a module's cached kernels compile in from
    other modules: each function's source (:func:`inspect.getsource`), each array's dtype,
    shape and bytes, each other value's ``repr``.

    Numba's disk cache is keyed on a hash of the kernel's own file only, so an edit of such
    a helper or constant alone would leave stale compiled code in every cache. Each such
    module therefore keeps the tuple ``COMPILED_IN`` and this digest of it as a literal,
    ``COMPILED_IN_DIGEST``; ``tests/test_numba_util.py`` compares the two, and updating the
    literal changes the module's text, which refreshes the cache.
    """
    h = hashlib.sha256()
    for obj in objects:
        if isinstance(obj, np.ndarray):
            h.update(f"{obj.dtype}{obj.shape}".encode() + np.ascontiguousarray(obj).tobytes())
        elif callable(obj):
            h.update(inspect.getsource(inspect.unwrap(getattr(obj, "py_func", obj))).encode())
        else:
            h.update(repr(obj).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


@njit(cache=True, inline="always")
def put2d(dst, src):  # noqa: ANN001, ANN201
    """``dst[...] = src`` for two 2-D arrays of one shape, element by element: a copy, the
    same bits. Compiled kernels use it instead of a slice assignment from an array, for which
    Numba compiles a shape-mismatch error message (f-strings, string joins) at every site:
    about 10 s of a first run's compile on 2 cores (0.9.16)."""
    for i in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[i, j] = src[i, j]


class LazyKernel:
    """``njit(sigs, **flags)(py_func)``, made on the first call rather than at import, and one
    dtype at a time: a call compiles (or loads from Numba's disk cache) only the signatures
    whose first argument has the dtype of the call's first array (all of them where none
    does). The same signature strings, so the same compiled code; a process pays only for the
    kernels and dtypes it calls. Training calls the ops' float32 serial twins and the width
    calibration their float64 parallel kernels: on a cold cache the parallel variants took
    about 11 s of a first run's compile (0.9.0), the unused dtypes about 4 s (0.9.16)."""

    def __init__(self, py_func: Callable, sigs: list[str], flags: dict) -> None:
        self.py_func, self._sigs, self._flags = py_func, sigs, flags
        self._kernels: dict[str, Callable] = {}  # first array's dtype -> dispatcher
        self._lock = threading.Lock()  # host threads (kgengine.host_threads) compile it once

    def __call__(self, *args: object) -> object:
        dtype = next((str(a.dtype) for a in args if hasattr(a, "dtype")), "")
        kernel = self._kernels.get(dtype)
        if kernel is None:
            with self._lock:
                kernel = self._kernels.get(dtype)
                if kernel is None:
                    sigs = [s for s in self._sigs if first_arg_type(s) == dtype] or self._sigs
                    kernel = self._kernels[dtype] = njit(sigs, **self._flags)(self.py_func)
        return kernel(*args)

    @property
    def signatures(self) -> list:
        """The signatures compiled so far (every dtype called)."""
        return [sig for k in self._kernels.values() for sig in k.signatures]


def first_arg_type(sig: str) -> str:
    """The element type of a signature string's first argument:
    ``"void(float32[:,:], int64)"`` -> ``"float32"``."""
    return re.split(r"[\[,)]", sig.split("(", 1)[1], maxsplit=1)[0].strip()


def lazy_njit(sigs: list[str], **flags: object) -> Callable[[Callable], LazyKernel]:
    """A decorator: :class:`LazyKernel` of the function with these signatures and flags."""
    return lambda fn: LazyKernel(fn, sigs, flags)


def serial_twin(kernel: Callable, sigs: list[str] | None = None, **flags: object) -> Callable:
    """``kernel`` (an ``njit(parallel=True)`` dispatcher) compiled without ``parallel``:
    ``prange`` runs as ``range`` and the loop bodies compile to the same code, so the results
    have the same bits (tested) without waking the thread pool for small calls. A copy of the
    Python function under another name, so that Numba's disk cache keeps the two apart."""
    fn = kernel.py_func
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                              fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_serial"
    if sigs:
        return LazyKernel(twin, sigs, {"cache": True, **flags})
    return njit(cache=True, **flags)(twin)


def cold_cache(kernel: Callable) -> bool:
    """True when Numba's disk cache holds nothing compiled from ``kernel``'s current source
    (an ``njit(cache=True)`` dispatcher), so that its next call compiles it first. False
    where that cannot be told (no disk cache, or Numba's cache internals changed)."""
    try:
        return not kernel._cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - a private Numba API: no notice rather than an error
        return False


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per size, kept for the process (the threads sleep when idle)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="kgengine-tasks")


# a forked child has none of the parent's threads: it makes its own pools
os.register_at_fork(after_in_child=_pool.cache_clear)


def run_tasks(fn: Callable, threads: int, n_tasks: int, *args: object, offset: int = 0) -> None:
    """``fn(lo, hi, *args)`` over tasks offset..offset+n_tasks-1, one contiguous chunk per
    thread (the calling thread takes the first chunk). ``fn`` is compiled with
    ``nogil=True`` and its tasks write disjoint outputs, so the split does not change a bit.

    A plain thread pool rather than ``prange``: Numba's ``workqueue`` layer made the tasks
    slower on 2 threads than on one (B = 4: 33 vs 24 ms/iteration), and its ``omp`` layer
    brings a second OpenMP runtime next to PyTorch's."""
    threads = min(threads, n_tasks)
    if threads <= 1:
        fn(offset, offset + n_tasks, *args)
        return
    edges = [offset + n_tasks * i // threads for i in range(threads + 1)]
    futures = [_pool(threads - 1).submit(fn, edges[i], edges[i + 1], *args)
               for i in range(1, threads)]
    fn(edges[0], edges[1], *args)
    for f in futures:
        f.result()


def submit(fn: Callable, *args: object) -> Future:
    """``fn(*args)`` on the one worker of the 2-thread task pool (the one :func:`run_tasks`
    uses with 2 threads), while the caller goes on; ``.result()`` waits for it."""
    return _pool(1).submit(fn, *args)


#: Work buffers returned by finished passes, by shape: a pass that takes them avoids
#: touching megabytes of fresh pages (page faults, which also serialise the threads; measured
#: with B = 4: D's forward 7.5 -> 3.6 ms, and 2 threads 1.1x -> 1.75x). At most
#: :data:`FREE_KEYS` keys, the least recently used dropped first: a farm's batches shrink
#: through every size as images stop, and each size's sets (~4.4 MB an image) were kept for
#: the whole job (0.9.27; a step uses 4-8 keys).
_FREE: collections.OrderedDict[tuple, list] = collections.OrderedDict()
_FREE_LOCK = threading.Lock()
FREE_KEYS = 16


def _forget_free() -> None:
    """In a forked child: the parent's free sets are its own to reuse (and the lock may be
    held by a thread the child does not have)."""
    global _FREE_LOCK
    _FREE_LOCK = threading.Lock()
    _FREE.clear()


os.register_at_fork(after_in_child=_forget_free)


def take(key: tuple, make: Callable[[], object]) -> object:
    """A free buffer set of ``key`` (given back by :func:`give`), or ``make()``."""
    with _FREE_LOCK:
        free = _FREE.get(key)
        if free:
            _FREE.move_to_end(key)
            return free.pop()
    return make()


def give(key: tuple, bufs: object) -> None:
    """Return a set that nothing uses any more (at most 4 kept per key, and at most
    :data:`FREE_KEYS` keys)."""
    with _FREE_LOCK:
        free = _FREE.setdefault(key, [])
        _FREE.move_to_end(key)
        if len(free) < 4:
            free.append(bufs)
        while len(_FREE) > FREE_KEYS:
            _FREE.popitem(last=False)


def slots(shapes: list[tuple[int, ...]], out: np.ndarray | None, dtype: np.dtype
          ) -> list[np.ndarray]:
    """Views of one flat buffer, ``out`` (made if None), of the given shapes, one after the
    other: how the trainer lays out a network's parameters, so gradients written into them
    are the flat gradient its optimiser takes."""
    flat = np.empty(sum(math.prod(sh) for sh in shapes), dtype) if out is None else out
    views, start = [], 0
    for sh in shapes:
        n = math.prod(sh)
        views.append(flat[start : start + n].reshape(sh))
        start += n
    return views


def shared_view(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a contiguous CPU tensor (shares memory: in-place updates reach it)."""
    if not t.is_contiguous():
        raise ValueError("compiled kernels: expected contiguous tensors")
    return t.detach().numpy()
