"""Bugs found by the 0.9.27 review of the kernel maths and the exports, one test each: every
assertion here failed before its fix."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from kgengine.consensus import combine
from kgengine.degrade import degrade
from kgengine.errors import BadKernelError
from kgengine.export.degraders import build_pool_model
from kgengine.export.generator import VALID_CONVENTION, build_generator_model
from kgengine.export.metadata import read_metadata
from kgengine.kernel import anisotropic_gaussian, center_kernel, gaussian_kernel, shift_kernel
from kgengine.metrics import aligned_kernel_psnr, lr_resynthesis_psnr
from kgengine.release import released_prior
from kgengine.spectral import mix_covariance, spectral_covariance
from kgengine.width import calibrate_width
from tests.synthetic import power_law_image


@pytest.fixture(scope="module")
def small_lr() -> np.ndarray:
    """A 1024 px power-law image degraded x2 with a known Gaussian (variances 2, 2)."""
    return degrade(power_law_image(1024, 11), anisotropic_gaussian(13, 2.0, 2.0, 0.0), 2)


@pytest.mark.parametrize("side", [64, 96])
def test_spectral_fit_ignores_a_gain_on_small_images(small_lr: np.ndarray, side: int) -> None:
    """Below ~112 px some inner polar bins are empty; their made-up log power 0 was read as
    data, so the fit moved with the image's gain (the docstring: "a gain cancels")."""
    crop = small_lr[:side, :side]
    fits = [np.linalg.eigvalsh(spectral_covariance(crop * gain)) for gain in (1.0, 255.0, 1 / 255)]
    np.testing.assert_allclose(fits[1], fits[0], rtol=1e-6)
    np.testing.assert_allclose(fits[2], fits[0], rtol=1e-6)


def test_consensus_survives_a_kernel_with_a_negative_lobe() -> None:
    """A kernel with a positive sum and a large negative lobe had its centre of mass far off
    the canvas: the whole consensus came out NaN with confidence 0."""
    g = gaussian_kernel(13, 1.0)
    bad = g - 0.99 * shift_kernel(g, 0.0, 3.0)
    for kernels in ([g, shift_kernel(g, 0.2, 0.0), gaussian_kernel(13, 1.1), bad], [bad]):
        out = combine(kernels)
        assert np.isfinite(out.kernel).all() and out.kernel.min() >= 0.0
        assert out.kernel.sum() == pytest.approx(1.0)


def test_aligned_psnr_stays_in_its_box() -> None:
    """A grid step that does not divide max_shift reached past it (returned shift −1.2 for a
    box of ±1.1); a step of 0 divided by zero."""
    g = gaussian_kernel(13, 1.0)
    res = aligned_kernel_psnr(shift_kernel(g, 1.1, 1.1), g, max_shift=1.1, step=0.4)
    assert max(abs(t) for t in res.shift) <= 1.1 + 1e-12
    with pytest.raises(ValueError, match="step"):
        aligned_kernel_psnr(g, g, step=0.0)


def test_resynthesis_psnr_names_a_nan_image() -> None:
    """NaN pixels gave ``math domain error`` from deep inside."""
    hr = np.random.default_rng(0).random((64, 64))
    lr = degrade(hr, gaussian_kernel(13, 1.0), 2)
    with pytest.raises(ValueError, match="hr has NaN"):
        lr_resynthesis_psnr(hr * np.nan, lr, gaussian_kernel(13, 1.0), 2)
    with pytest.raises(ValueError, match="lr has NaN"):
        lr_resynthesis_psnr(hr, lr * np.nan, gaussian_kernel(13, 1.0), 2)


def test_mix_covariance_refuses_a_non_square_kernel() -> None:
    """A (13, 11) kernel failed on a broadcast inside."""
    with pytest.raises(ValueError, match="square"):
        mix_covariance(np.ones((13, 11)) / 143, np.diag([1.8, 1.6]), 0.5)


def test_a_nan_prior_is_refused(small_lr: np.ndarray) -> None:
    """NaN passed ``prior < 0``: the calibration took the smallest scale (argmin of NaN)."""
    with pytest.raises(ValueError, match="prior"):
        calibrate_width(small_lr[:128, :128], gaussian_kernel(13, 1.3), prior=float("nan"))
    with pytest.raises(ValueError, match="prior"):
        released_prior(float("nan"), None)


def test_center_kernel_always_clips_and_normalises() -> None:
    """An already-centred kernel came back as given: sum 2, or negative entries kept."""
    g = gaussian_kernel(13, 1.0)
    assert center_kernel(2 * g).sum() == pytest.approx(1.0, abs=1e-12)
    neg = g - 0.01 * (np.arange(169).reshape(13, 13) % 2)
    neg = (neg + neg[::-1, ::-1]) / 2  # symmetric: centred as it is
    out = center_kernel(neg)
    assert out.min() >= 0.0 and out.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(center_kernel(g), g)  # a clean centred kernel: untouched
    with pytest.raises(BadKernelError, match="NaN"):
        center_kernel(g * np.nan)


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def test_generator_metadata_states_its_own_mapping() -> None:
    """The generator said it used the degraders' centred, reflect-padded convention, and a
    non-square generator's size and output shape came from its height only."""
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(4, 1, 7, 3)), rng.normal(size=(1, 4, 1, 1))]
    model = build_generator_model(weights)
    meta = read_metadata(model)
    assert meta["kernel_convention"] == VALID_CONVENTION
    assert meta["kernel_size"] == "7x3"
    out = _run(model, {"hr": rng.random((1, 1, 21, 21), dtype=np.float32)})
    assert out.shape == (1, 1, (21 - 7) // 2 + 1, (21 - 3) // 2 + 1)
    assert "floor((W-3)/2)+1" in model.doc_string


@pytest.mark.parametrize("n_kernels", [1, 3])
def test_pool_model_refuses_another_number_of_kernels(n_kernels: int) -> None:
    """With 3 kernels for 2 images the third was ignored without a word (and with 1 the
    error named a Gather inside the Loop): the model now fails in a node that says why."""
    model = build_pool_model(5, 2)
    rng = np.random.default_rng(0)
    hr = rng.random((2, 1, 12, 12), dtype=np.float32)
    kernels = rng.random((n_kernels, 1, 5, 5), dtype=np.float32)
    with pytest.raises(Exception, match="kernel_rows_must_equal_hr_images"):
        _run(model, {"hr": hr, "kernel": kernels})
    assert _run(model, {"hr": hr, "kernel": kernels[:1].repeat(2, 0)}).shape == (2, 1, 6, 6)


def test_a_shared_kernel_with_a_batch_axis_works_at_every_scale() -> None:
    """(1, h, w) was taken at scales 1-4 (ops.downscale) and refused above (degrade_torch)."""
    x = torch.rand(2, 3, 20, 20, dtype=torch.float64)
    k = torch.from_numpy(gaussian_kernel(5, 1.0))
    for scale in (2, 5):
        torch.testing.assert_close(degrade(x, k[None], scale), degrade(x, k, scale))


def test_work_buffers_keep_a_bounded_number_of_sizes() -> None:
    """Each batch size a farm's shrinking batches went through kept its buffer sets for the
    whole job (~4.4 MB an image per size); now the least recently used sizes are dropped."""
    from kgengine import numba_util

    saved = dict(numba_util._FREE)
    numba_util._FREE.clear()
    try:
        for size in range(40):
            numba_util.give(("test", size), np.zeros(1))
        assert len(numba_util._FREE) == numba_util.FREE_KEYS
        assert ("test", 39) in numba_util._FREE and ("test", 0) not in numba_util._FREE
        kept = numba_util.take(("test", 30), lambda: pytest.fail("made"))  # a kept set
        assert kept.shape == (1,)
        numba_util.give(("test", 30), kept)
        numba_util.give(("test", 99), np.zeros(1))  # evicts the oldest, not the one used
        assert ("test", 30) in numba_util._FREE and ("test", 24) not in numba_util._FREE
    finally:
        numba_util._FREE.clear()
        numba_util._FREE.update(saved)


def test_pool_files_are_compressed_and_old_ones_still_load(tmp_path) -> None:
    """The index (UTF-32 JSON of every report) made a 2000-image pool 27.7 MB."""
    from kgengine.pool import load_pool, make_pool, save_pool

    n = 300
    report = {"config": {f"key{i}": i for i in range(60)}, "note": "x" * 400}
    pool = make_pool([gaussian_kernel(13, 1.0 + i / n) for i in range(n)],
                     [f"img{i}" for i in range(n)], [f"/photos/img{i}.png" for i in range(n)],
                     2, reports=[report] * n)
    path = save_pool(tmp_path / "pool.npz", pool)
    index_bytes = np.load(path)["index"].nbytes
    assert path.stat().st_size < index_bytes / 5  # the index alone, uncompressed
    back = load_pool(path)
    np.testing.assert_array_equal(back.kernels, pool.kernels.astype(np.float32))
    assert back.ids == pool.ids and back.reports == pool.reports
    with np.load(path) as data:  # an uncompressed pool (before 0.9.27) reads the same
        np.savez(tmp_path / "old.npz", **{k: data[k] for k in data.files})
    old = load_pool(tmp_path / "old.npz")
    assert old.fingerprint() == back.fingerprint() and old.reports == back.reports


def test_a_killed_exports_hidden_folder_is_removed_by_the_next(tmp_path) -> None:
    """A SIGKILL mid-export left its ``.export-*`` folder in ``out`` for good."""
    import subprocess
    import sys

    from kgengine import pool_interop
    from kgengine.atomic import process_dir_prefix
    from kgengine.pool import make_pool

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    prefix = process_dir_prefix(".export")
    orphan = out / f"{prefix}{dead}-abc"
    orphan.mkdir()
    (orphan / "0.npy").write_bytes(b"partial")
    live = out / f"{prefix}{os.getpid()}-def"  # a running export's
    live.mkdir()
    other = out / ".export-another_host-1-ghi"  # another machine's: its pid means nothing
    other.mkdir()
    young = out / f"{prefix}{dead}-jkl"  # written into lately: perhaps another container's
    young.mkdir()
    for folder in (orphan, live, other):
        os.utime(folder, (0, 0))  # untouched for long
    pool = make_pool([gaussian_kernel(13, 1.0)], ["k"], ["k.npy"], 2)
    pool_interop.export_pool(pool, out, "npy")
    assert not orphan.exists() and live.exists() and other.exists() and young.exists()
    assert (out / "k.npy").is_file()


_TWO_DEGRADES = """
import threading, numpy as np, kgengine
k = np.full((13, 13), 1 / 169.0)
hr = np.random.default_rng(0).random((256, 256, 3))
ref = kgengine.degrade(hr, k, 2)
bad = []
def loop():
    for _ in range(60):
        if not np.array_equal(kgengine.degrade(hr, k, 2), ref):
            bad.append(1)
ts = [threading.Thread(target=loop) for _ in range(3)]
[t.start() for t in ts]
[t.join(240) for t in ts]
print("differing", len(bad), "alive", sum(t.is_alive() for t in ts))
"""


def test_parallel_kernels_from_several_threads_do_not_abort() -> None:
    """Two threads in Numba's workqueue layer at once aborted the process (SIGABRT, exit
    134): a service calling ``degrade`` or ``estimate_kernel`` from a thread pool died. Run
    in a child process, since a regression kills the process it happens in."""
    import subprocess
    import sys

    env = {**os.environ, "KGENGINE_OPS_BACKEND": "numba"}
    out = subprocess.run([sys.executable, "-c", _TWO_DEGRADES], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "differing 0 alive 0" in out.stdout


def test_overlapping_calls_restore_torchs_thread_count() -> None:
    """A call that began during another's saved torch's 1 and restored it last: every thread
    made later ran torch on one thread, and a trainer made during the overlap got 1 thread."""
    import threading

    from kgengine.host_threads import torch_single_threaded, torch_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def call_a() -> None:
        with torch_single_threaded():
            a_in.set()
            b_in.wait(30)
        a_out.set()

    def call_b() -> None:
        a_in.wait(30)
        with torch_single_threaded():
            seen["budget"] = torch_threads()  # what a trainer made now takes
            b_in.set()
            a_out.wait(30)  # A ends first

    def fresh() -> None:
        seen["fresh"] = torch.get_num_threads()

    try:
        threads = [threading.Thread(target=call_a), threading.Thread(target=call_b)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        probe = threading.Thread(target=fresh)
        probe.start()
        probe.join(30)
        assert seen == {"budget": 2, "fresh": 2}
        assert torch.get_num_threads() == 2 and torch_threads() == 2
    finally:
        torch.set_num_threads(before)


_CONCURRENT_ESTIMATES = """
import hashlib
from concurrent.futures import ThreadPoolExecutor
import numpy as np
import kgengine
from kgengine.imageio import read_image
full = read_image("kgengine/data/sample_lr.png")
images = {"a": full, "b": np.ascontiguousarray(full[16:144, 20:148])}
jobs = [("a", 0), ("b", 0), ("a", 1)]
def run(job):
    res = kgengine.estimate_kernel(images[job[0]], seed=job[1], iters=300, stop="full")
    return hashlib.sha256(res.raw_kernel.tobytes() + res.kernel_x2.tobytes()).hexdigest()
alone = [run(j) for j in jobs]
with ThreadPoolExecutor(3) as ex:
    together = list(ex.map(run, jobs))
print("same" if together == alone else f"differ {together} {alone}")
"""


def test_concurrent_estimates_give_the_bytes_of_single_runs() -> None:
    """Three ``estimate_kernel`` calls from three threads at once (300 float32 iterations,
    the 160 px sample and a 128 px crop, two seeds): each kernel the bytes of the same call
    alone. Before 0.9.27 this aborted the process (the calls' width calibration entered
    Numba's thread pool together). In a child process, for the same reason."""
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", _CONCURRENT_ESTIMATES], capture_output=True,
                         text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "same", out.stdout


def test_a_call_that_ends_first_gives_its_thread_the_saved_count() -> None:
    """A pool thread whose first torch use fell inside another call read 1 as its own
    count and got 1 back when its call ended first: later trainers there had 1 thread."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from kgengine.host_threads import torch_single_threaded, torch_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    a_in, b_out = threading.Event(), threading.Event()

    def call_a() -> None:
        with torch_single_threaded():
            a_in.set()
            b_out.wait(30)  # B ends first

    def call_b() -> tuple[int, int]:
        a_in.wait(30)
        with torch_single_threaded():
            pass
        b_out.set()
        return torch.get_num_threads(), torch_threads()

    try:
        with ThreadPoolExecutor(1) as pool:  # B's thread is made while A is inside
            a = threading.Thread(target=call_a)
            a.start()
            a_in.wait(30)
            b_counts = pool.submit(call_b).result(60)
            a.join(60)
            after = pool.submit(lambda: (torch.get_num_threads(), torch_threads())).result(60)
        assert b_counts == (2, 2) and after == (2, 2)
    finally:
        torch.set_num_threads(before)


def _final_of(raws: list[np.ndarray]) -> object:
    """A finished batch of restarts with the given raw kernels (NaN: diverged)."""
    from kgengine.api import _Final

    n = len(raws)
    return _Final(np.stack(raws), np.array([np.isfinite(r).all() for r in raws]),
                  [{"l_g": 0.0}] * n, list(range(10, 10 + n)), [[torch.zeros(1)]] * n,
                  [40] * n)


def test_a_partly_diverged_restarts_report_indexes_every_restart() -> None:
    """With restart 1 of 3 diverged, ``kernels`` held 2 entries and ``medoid``/``inliers``
    indexed those, so ``inliers`` named the diverged restart; with 2 of 3 diverged the
    agreement (the confidence without the spectrum) read 1.0000000000000002."""
    from kgengine.api import _image_result
    from kgengine.config import KernelGANConfig

    cfg = KernelGANConfig(spectral_confidence=False)
    arr = np.full((24, 24, 3), 0.5, np.float32)  # under 32 px: no spectrum
    g, nan = gaussian_kernel(13, 1.0), np.full((13, 13), np.nan)
    res = _image_result(_final_of([g, nan, shift_kernel(gaussian_kernel(13, 1.1), 0.2, 0)]),
                        [0, 1, 2], "img", arr, 0, {}, False, cfg, "mean")
    rs = res.report["restarts"]
    assert rs["diverged"] == 1 and rs["seeds"] == [10, 11, 12]
    assert rs["kernels"][1] is None and rs["kernels"][0] is not None and rs["kernels"][2]
    assert rs["medoid"] in (0, 2) and set(rs["inliers"]) <= {0, 2}
    assert 0.6 < rs["agreement"] <= 2 / 3 and res.confidence == rs["agreement"]
    res = _image_result(_final_of([nan, g, nan]), [0, 1, 2], "img", arr, 0, {}, False, cfg,
                        "mean")
    rs = res.report["restarts"]
    assert rs["medoid"] == 1 and rs["inliers"] == [1] and rs["kernels"][0] is None
    assert rs["agreement"] == pytest.approx(1 / 3) and res.confidence <= 1 / 3 + 1e-12


def test_the_spectral_report_gives_the_fits_own_variances(small_lr: np.ndarray) -> None:
    """``var_short`` (the moments of the Gaussian sampled on 13×13) read 0.144 with
    ``at_floor`` true for a fit whose floor is 0.2 px²: the fit's eigenvalues are now there."""
    cov = np.diag([3.773, 0.2])
    _, info = mix_covariance(gaussian_kernel(13, 1.3), cov, 0.5)
    assert info["at_floor"] and info["fit_var_short"] == pytest.approx(0.2)
    assert info["fit_var_long"] == pytest.approx(3.773) and info["var_short"] < 0.2
