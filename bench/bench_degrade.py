"""Benchmark: degrading 2040x1356 RGB images, onnxruntime vs PyTorch eager vs SciPy.

Images per second (median of ``--repeats`` timed runs after one warm-up), side by side in
one run, with the ratio to PyTorch eager (``kgengine.degrade.degrade_torch``), for x2 with
a 13x13 kernel and x4 with a 25x25 kernel:

- ``torch eager``: ``degrade_torch`` on the CPU (all usable cores);
- ``ort fixed``: the fixed-kernel ONNX model (tiled Conv, see ``kgengine.export.degraders``);
- ``ort pool``: the pool model (kernel as input), what ``kgengine degrade`` runs;
- ``ort pool tile=1``: the pool model as a plain Pad + Conv graph (ablation);
- ``scipy``: ``ndimage.correlate(mode='mirror')`` per channel, then ``[::s, ::s]``.

Every output is checked against PyTorch (max abs difference printed). On a machine with a
CUDA GPU it also times onnxruntime's CUDA and TensorRT providers against PyTorch CUDA (data
already on the device, IOBinding, synchronised); otherwise it says why that part is skipped.

Section ``pipeline``: pairs per second for 2040x1356 HR images through the full degradation
pipeline (pool kernel x2 + Gaussian noise + JPEG -> 8-bit LR, ``Pipeline.degrade_image``,
in memory) side by side with the same steps written with SciPy + Pillow
(``ndimage.correlate`` per channel, ``[::2, ::2]``, NumPy noise, Pillow JPEG) in the same
run, and the offline job end to end (``degrade_folder``: PNG read, pipeline, PNG writes,
manifest) on ``--pipeline-images`` files. Section ``module``: the training-time
``Degrader`` on 256x256 HR batches (kernel + noise, and kernel + noise + JPEG), CPU and, when
present, CUDA, in images per second.

Run: ``python bench/bench_degrade.py [--repeats 5] [--batch 1 4] [--no-scipy]
[--sections onnx pipeline module] [--pipeline-images 4] [--module-batch 16 64]``.
Smallest: ``--sections pipeline module --repeats 1 --pipeline-images 1 --module-batch 2``.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import scipy
import torch
from PIL import Image
from scipy import ndimage

from kgengine.degradation import Degrader, Pipeline, PipelineConfig, degrade_folder
from kgengine.degradation.stages import unit_normal
from kgengine.degrade import degrade_torch
from kgengine.export import build_fixed_model, build_pool_model
from kgengine.imageio import to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import make_pool
from kgengine.providers import cuda_device_count, make_session, usable_cores
from kgengine.sysinfo import cpu_name

H, W = 1356, 2040
CASES = [(2, 13), (4, 25)]


def median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None
                ) -> float:
    fn()  # warm-up (session/kernel initialisation, allocator)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scipy_degrade(x: np.ndarray, k: np.ndarray, s: int) -> np.ndarray:
    """(N,C,H,W) float32 -> (N,C,ceil(H/s),ceil(W/s)); 'mirror' = whole-sample reflect."""
    out = np.empty((*x.shape[:2], -(-x.shape[2] // s), -(-x.shape[3] // s)), np.float32)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[n, c] = ndimage.correlate(x[n, c], k, mode="mirror")[::s, ::s]
    return out


def kernel_for(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    var = rng.uniform(0.6, 5, 2) * (size / 13) ** 2  # x4 kernels are wider
    return anisotropic_gaussian(size, *var, rng.uniform(0, np.pi)).astype(np.float32)


def print_rows(title: str, rows: list[tuple[str, float, float]], batch: int) -> None:
    base = next(t for name, t, _ in rows if name.startswith("torch"))
    print(f"\n{title}")
    print(f"  {'method':24s} {'img/s':>8s} {'ms/img':>8s} {'vs torch':>9s} {'max|diff|':>10s}")
    for name, t, diff in rows:
        print(f"  {name:24s} {batch / t:8.2f} {1000 * t / batch:8.1f} {base / t:8.2f}x "
              f"{diff:10.1e}")


def cpu_case(scale: int, size: int, batch: int, repeats: int, with_scipy: bool) -> None:
    """One (scale, kernel size, batch) row group on the CPU."""
    k = kernel_for(size, seed=size)
    fixed = make_session(build_fixed_model(k, scale).SerializeToString(), "cpu").session
    pool = make_session(build_pool_model(size, scale).SerializeToString(), "cpu").session
    plain = make_session(build_pool_model(size, scale, tile=1).SerializeToString(), "cpu").session
    x = np.random.default_rng(batch).random((batch, 3, H, W), dtype=np.float32)
    xt, kt = torch.from_numpy(x), torch.from_numpy(k)
    ks = np.repeat(k[None, None], batch, axis=0)
    with torch.no_grad():
        ref = degrade_torch(xt, kt, scale).numpy()
        rows = [("torch eager", median_time(lambda: degrade_torch(xt, kt, scale), repeats), 0.0)]
    runs = {
        "ort fixed": lambda: fixed.run(None, {"hr": x})[0],
        "ort pool": lambda: pool.run(None, {"hr": x, "kernel": ks})[0],
        "ort pool tile=1": lambda: plain.run(None, {"hr": x, "kernel": ks})[0],
    }
    if with_scipy and batch == 1:
        runs["scipy correlate"] = lambda: scipy_degrade(x, k, scale)
    for name, fn in runs.items():
        diff = float(np.abs(fn() - ref).max())
        n = max(1, repeats // 2) if "scipy" in name else repeats  # SciPy is slow
        rows.append((name, median_time(fn, n), diff))
    print_rows(f"x{scale}, {size}x{size} kernel, batch {batch} of {W}x{H} RGB (CPU)", rows, batch)


def gpu_case(scale: int, size: int, batch: int, repeats: int) -> None:
    """One row group on the GPU: torch CUDA vs onnxruntime CUDA / TensorRT (tile 1 and 4)."""
    k = kernel_for(size, seed=size)
    x = np.random.default_rng(batch).random((batch, 3, H, W), dtype=np.float32)
    xt, kt = torch.from_numpy(x).cuda(), torch.from_numpy(k).cuda()
    ks = np.repeat(k[None, None], batch, axis=0)
    sync = torch.cuda.synchronize
    with torch.no_grad():
        ref = degrade_torch(xt, kt, scale).cpu().numpy()
        rows = [("torch cuda", median_time(lambda: degrade_torch(xt, kt, scale), repeats, sync),
                 0.0)]
    for provider in ("cuda", "tensorrt"):
        for tile in (1, 4):
            model = build_pool_model(size, scale, tile=tile).SerializeToString()
            try:
                sess = make_session(model, provider).session
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"  {provider}: skipped ({exc})")
                break
            io = sess.io_binding()
            io.bind_ortvalue_input("hr", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            io.bind_ortvalue_input("kernel", ort.OrtValue.ortvalue_from_numpy(ks, "cuda", 0))
            io.bind_output("lr", "cuda")
            t = median_time(lambda s=sess, b=io: (s.run_with_iobinding(b), b.synchronize_outputs()),
                            repeats)
            diff = float(np.abs(io.copy_outputs_to_cpu()[0] - ref).max())
            rows.append((f"ort {provider} pool t={tile}", t, diff))
    print_rows(f"x{scale}, {size}x{size} kernel, batch {batch} (GPU, data on device)", rows, batch)


def bench_gpu(repeats: int, batches: list[int]) -> None:
    count, why = cuda_device_count()
    if count == 0:
        print(f"\nGPU part skipped: {why}")
        return
    if not torch.cuda.is_available():
        print("\nGPU part skipped: this torch build has no CUDA (torch.cuda.is_available() False)")
        return
    print(f"\nGPU: {torch.cuda.get_device_name(0)}")
    for scale, size in CASES:
        for batch in batches:
            gpu_case(scale, size, batch, repeats)


# --- the degradation pipeline ------------------------------------------------------------
#: The pipeline of the ``pipeline`` and ``module`` sections: kernel x2, Gaussian noise, JPEG.
SIGMA, QUALITY = (0.0, 0.03), (40, 90)
PIPE_CFG = PipelineConfig(gaussian_prob=1.0, gaussian_sigma=SIGMA, jpeg_prob=1.0,
                          jpeg_quality=QUALITY, order=("gaussian", "jpeg"))


def bench_pool(n: int = 8) -> object:
    """``n`` seeded 13x13 x2 kernels as a KernelPool."""
    ks = [kernel_for(13, seed) for seed in range(n)]
    return make_pool(ks, [f"k{i}" for i in range(n)], [f"s{i}" for i in range(n)], 2,
                     seeds=list(range(n)))


def scipy_pillow_pipeline(hr: np.ndarray, k: np.ndarray, sigma: float, seed: int, q: int
                          ) -> np.ndarray:
    """The same steps with SciPy + Pillow: (H,W,3) float32 -> (H/2,W/2,3) uint8."""
    lr = np.stack([ndimage.correlate(hr[..., c], k, mode="mirror")[::2, ::2]
                   for c in range(3)])  # (3, h, w)
    lr = np.clip(lr + np.float32(sigma) * unit_normal(seed, lr.shape), 0, 1)
    buf = io.BytesIO()
    Image.fromarray(to_uint8(lr.transpose(1, 2, 0))).save(buf, format="JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def bench_pipeline(repeats: int, n_files: int) -> None:
    """Pairs/s of the pipeline in memory vs SciPy + Pillow, and of the offline job."""
    pool = bench_pool()
    pipe = Pipeline(pool, PIPE_CFG)
    hr = np.random.default_rng(0).random((H, W, 3), dtype=np.float32)
    d = pipe.draw(0, "bench.png")
    g, j = d.stages["gaussian"], d.stages["jpeg"]
    ours = pipe.degrade_image(hr, 0, "bench.png")[0]
    theirs = scipy_pillow_pipeline(hr, pool.kernels[d.kernel_row], g["sigma"], g["seed"],
                                   j["quality"])
    diff = float(np.abs(ours.astype(np.int16) - theirs).mean())
    kernel_only = Pipeline(pool, PIPE_CFG.replace(gaussian_prob=0.0, jpeg_prob=0.0))
    rows = [("kgengine kernel only", median_time(
                lambda: kernel_only.degrade_image(hr, 0, "bench.png"), repeats), 0.0),
            ("kgengine pipeline", median_time(lambda: pipe.degrade_image(hr, 0, "bench.png"),
                                              repeats), 0.0),
            ("scipy + pillow", median_time(lambda: scipy_pillow_pipeline(
                hr, pool.kernels[d.kernel_row], g["sigma"], g["seed"], j["quality"]),
                max(1, repeats // 2)), diff)]
    print(f"\npipeline (kernel x2 13x13 + Gaussian noise + JPEG), {W}x{H} HR, CPU, in memory")
    print(f"  {'method':24s} {'pairs/s':>8s} {'ms/pair':>8s} {'mean|diff|':>11s} (8-bit levels)")
    for name, t, dd in rows:
        print(f"  {name:24s} {1 / t:8.2f} {1000 * t:8.1f} {dd:11.3f}")
    print(f"  pipeline / kernel only: {rows[1][1] / rows[0][1]:.2f}x the time per pair")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hr"
        folder.mkdir()
        for i in range(n_files):
            Image.fromarray(to_uint8(hr[:, ::-1] if i % 2 else hr)).save(folder / f"{i}.png")
        times = {}
        for label, cfg in (("kernel only", None), ("pipeline", PIPE_CFG)):
            t0 = time.perf_counter()
            report = degrade_folder(folder, pool, Path(tmp) / f"out_{label[0]}", pipeline=cfg)
            times[label] = (time.perf_counter() - t0) / report.written
            print(f"  {'degrade_folder ' + label:24s} {1 / times[label]:8.2f} "
                  f"{1000 * times[label]:8.1f}   PNG read + degrade + PNG/manifest writes")
    print(f"  files: pipeline / kernel only: {times['pipeline'] / times['kernel only']:.2f}x")


def bench_module(repeats: int, batches: list[int]) -> None:
    """The training-time Degrader on 256x256 HR batches, images per second."""
    pool = bench_pool()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    # the per-image stages are small elementwise ops: on a loaded machine torch's intra-op
    # threads can cost more than they save (measured 25x slower with 2 threads than 1 on a
    # 2-core machine already running 2 benchmarks), so the thread count is printed
    print(f"\nDegrader (nn.Module), 256x256 HR -> 128x128 LR, images/s, torch "
          f"{torch.get_num_threads()} threads")
    print(f"  {'device':8s} {'batch':>5s} {'kernel+noise':>13s} {'+JPEG':>9s}")
    for dev in devices:
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        for b in batches:
            hr = torch.rand(b, 3, 256, 256, generator=torch.Generator().manual_seed(b)).to(dev)
            rates = []
            for cfg in (PIPE_CFG.replace(jpeg_prob=0.0), PIPE_CFG):
                deg = Degrader(pool, cfg, seed=0)
                rates.append(b / median_time(lambda d=deg, x=hr: d(x), repeats, sync))
            print(f"  {dev:8s} {b:5d} {rates[0]:13.1f} {rates[1]:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="images per call")
    parser.add_argument("--no-scipy", action="store_true", help="skip the (slow) SciPy baseline")
    parser.add_argument("--sections", nargs="+", default=["onnx", "pipeline", "module"],
                        choices=["onnx", "pipeline", "module"], help="what to time")
    parser.add_argument("--pipeline-images", type=int, default=4,
                        help="files for the offline pipeline job")
    parser.add_argument("--module-batch", type=int, nargs="+", default=[16, 64],
                        help="batch sizes of the Degrader")
    args = parser.parse_args()
    torch.set_num_threads(usable_cores())
    print(f"machine: {cpu_name()}, {usable_cores()} usable cores, {platform.machine()}")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
          f"{ort.__version__}, numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"images: {W}x{H} RGB float32, seeded; median of {args.repeats} after 1 warm-up")
    if "onnx" in args.sections:
        for scale, size in CASES:
            for batch in args.batch:
                cpu_case(scale, size, batch, args.repeats, not args.no_scipy)
        bench_gpu(args.repeats, args.batch)
    if "pipeline" in args.sections:
        bench_pipeline(args.repeats, args.pipeline_images)
    if "module" in args.sections:
        bench_module(args.repeats, args.module_batch)


if __name__ == "__main__":
    main()
