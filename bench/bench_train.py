"""Trainer speed: the composed-kernel trainer vs the layer-by-layer reference, side by side.

For a few development images (../shared/data/hr, degraded x2 with a known anisotropic
kernel), runs KernelGAN with ``mode="composed"`` (kgengine) and ``mode="layers"`` (the
authors' computation: the six convolutions applied to every crop) in one process, and
prints wall seconds per image and ms/iteration, with the ratio and the machine.

The layer-by-layer mode costs ~0.15 s/iteration on a 2-core CPU, so by default it runs
``--layers-iters`` iterations and its per-image time is extrapolated to ``--iters``
(reported as such). Usage::

    python bench/bench_train.py                      # 3 images alone + 8 as one batch
    python bench/bench_train.py --images 1 --iters 500 --layers-iters 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from kgengine.api import estimate_kernel, estimate_kernels
from kgengine.config import KernelGANConfig
from kgengine.degrade import degrade
from kgengine.imageio import read_image
from kgengine.kernel import anisotropic_gaussian
from kgengine.metrics import aligned_kernel_psnr
from kgengine.sysinfo import cpu_name

#: the benchmark photos (override with KGENGINE_HR_DIR, e.g. on a machine without ../shared)
HR_DIR = Path(os.environ.get("KGENGINE_HR_DIR",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hr"))
SAMPLE = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_hr.png"
NAMES = ["kodim05.png", "urban_010.png", "kodim13.png", "urban_030.png", "kodim20.png"]


def machine() -> str:
    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def lr_images(n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR image, true kernel) for ``n`` development images (bundled sample fallback)."""
    paths = [HR_DIR / name for name in NAMES if (HR_DIR / name).exists()] or [SAMPLE]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = paths[i % len(paths)]
        hr = read_image(path)
        k = anisotropic_gaussian(13, rng.uniform(2.5, 5.0), rng.uniform(0.6, 1.2),
                                 rng.uniform(0, np.pi))
        out.append((f"{path.stem}", degrade(hr, k, 2).astype(np.float32), k))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--layers-iters", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--batch", type=int, default=8,
                    help="also train this many images as one batch (0 = skip)")
    ap.add_argument("--sweep", default="",
                    help="only time the batched trainer at these batch sizes, e.g. 1,8,64,auto "
                         "(auto = the farm's automatic batch size for this image on --device)")
    ap.add_argument("--sweep-iters", type=int, default=300)
    ap.add_argument("--sweep-e2e-iters", type=int, default=3000,
                    help="iterations of the sweep's end-to-end one run vs --restarts 4 (0: skip)")
    ap.add_argument("--sweep-backends", default="",
                    help="also time the sweep's numeric batch sizes with these op backends")
    ap.add_argument("--sweep-graph", action="store_true",
                    help="also time them with the step captured as a CUDA graph")
    ap.add_argument("--authors", type=Path, default=None,
                    help="folder made by ../shared/baseline/build.sh: time the authors' code "
                         "side by side (only this comparison is run)")
    args = ap.parse_args()
    if args.authors is not None:
        side_by_side(args.authors, args.iters)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}, device {args.device}")
    if args.sweep:
        batch_sweep(args.sweep, args.sweep_iters, args.device, args.sweep_backends,
                    args.sweep_e2e_iters, args.sweep_graph)
        return
    images = lr_images(args.images)
    estimate_kernel(images[0][1], iters=20, device=args.device)  # warm-up (allocator, JIT)
    rows = []
    for name, lr, k in images:
        t0 = time.perf_counter()
        res = estimate_kernel(lr, iters=args.iters, device=args.device, seed=0)
        wall = time.perf_counter() - t0
        ref = estimate_kernel(lr, iters=args.layers_iters, device=args.device, seed=0,
                              mode="layers")
        ref_ms = ref.report["ms_per_iter"]
        rows.append({
            "name": name, "size": f"{lr.shape[1]}x{lr.shape[0]}", "wall": wall,
            "ms": res.report["ms_per_iter"], "ref_ms": ref_ms,
            "ref_wall": ref.report["wall_s"] - ref.report["train_s"] + ref_ms * args.iters / 1000,
            "psnr": aligned_kernel_psnr(res.kernel_x2, k).psnr,
        })
        r = rows[-1]
        print(f"{name}: composed {r['wall']:.1f} s ({r['ms']:.2f} ms/it), layers "
              f"{r['ref_ms']:.1f} ms/it -> {r['ref_wall']:.0f} s extrapolated", flush=True)
    # kgengine's batched trainer: --batch images (the dev images, other kernels) at once
    batch_wall = batch_ms = 0.0
    if args.batch:
        batch_imgs = lr_images(args.batch)
        t0 = time.perf_counter()
        batch = estimate_kernels([lr for _, lr, _ in batch_imgs], seeds=[0] * args.batch,
                                 iters=args.iters, device=args.device)
        batch_wall, batch_ms = time.perf_counter() - t0, batch[0].report["ms_per_iter"]
    med = statistics.median
    print()
    print("| image | LR size | layers (authors) ms/it | layers s/image | composed ms/it | "
          "composed s/image | speed-up | aligned kernel PSNR |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['size']} | {r['ref_ms']:.1f} | {r['ref_wall']:.0f} | "
              f"{r['ms']:.2f} | {r['wall']:.1f} | {r['ref_wall'] / r['wall']:.1f}x | "
              f"{r['psnr']:.1f} dB |")
    print(f"| median | | {med(r['ref_ms'] for r in rows):.1f} | "
          f"{med(r['ref_wall'] for r in rows):.0f} | {med(r['ms'] for r in rows):.2f} | "
          f"{med(r['wall'] for r in rows):.1f} | "
          f"{med(r['ref_wall'] / r['wall'] for r in rows):.1f}x | |")
    if args.batch:
        per_img = batch_wall / args.batch
        print(f"| {args.batch} images as one batch | | | | {batch_ms / args.batch:.2f} per image | "
              f"{per_img:.1f} | {med(r['ref_wall'] for r in rows) / per_img:.1f}x | |")
    print(f"\n{args.iters} iterations for composed; layers timed over {args.layers_iters} "
          f"iterations and extrapolated. Machine: {machine()}.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def launches_per_step(trainer: object, device: torch.device, table: bool = False) -> str:
    """CUDA kernels launched by one training step (torch profiler), or why not counted;
    ``table``: also print the step's ops by self CPU time and the GPU's busy time."""
    if device.type != "cuda":
        return "-"
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            trainer.step()
            _sync(device)
        events = prof.key_averages()
        gpu = [e for e in events if e.device_type.name == "CUDA"]
        if table:
            busy = sum(getattr(e, "self_device_time_total", 0.0) for e in gpu) / 1000.0
            print(f"one step at B={trainer.b}: GPU kernels busy {busy:.2f} ms in all")
            print(events.table(sort_by="self_cpu_time_total", row_limit=12,
                               max_name_column_width=40))
        return str(sum(e.count for e in gpu))
    except Exception as exc:  # noqa: BLE001 - a measurement aid, never fatal
        return f"not counted ({type(exc).__name__})"


def host_syncs_per_step(trainer: object, device: torch.device, steps: int = 5) -> str:
    """Host synchronisations in ``steps`` training steps, as torch's sync debug mode reports
    them (``torch.cuda.set_sync_debug_mode("warn")``), with the first one's message."""
    if device.type != "cuda":
        return "-"
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                trainer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()
             and "prototype" not in str(w.message)]
    if not syncs:
        return "0"
    w = syncs[0]
    return f"{len(syncs) / steps:g} (first: {str(w.message)[:120]} at {w.filename}:{w.lineno})"


def batch_sweep(spec: str, iters: int, device_name: str, backends: str = "",
                e2e_iters: int = 3000, graph: bool = False) -> None:
    """ms per iteration of the batched trainer at each batch size in ``spec`` (one image of
    the development set repeated with seeds 0..B-1, so only B changes), then ``--restarts 4``
    against one run end to end (``e2e_iters`` iterations, 0 = skip); iterations after 20
    warm-up ones, timed with a device synchronisation at both ends. ``backends`` (e.g.
    ``torch,cupy``): also time the numeric batch sizes with each op backend forced
    (``KGENGINE_OPS_BACKEND``). ``graph``: also time them with the step captured as a CUDA
    graph (``KGENGINE_CUDA_GRAPH=1``, :mod:`kgengine.graph_step`; the row says if the capture
    failed and why)."""
    from kgengine.config import KernelGANConfig
    from kgengine.farm.batching import auto_batch
    from kgengine.farm.settings import FarmSettings
    from kgengine.graph_step import ENV_VAR as GRAPH_VAR
    from kgengine.ops.backend import ENV_VAR, resolve
    from kgengine.prepare import prepare_image
    from kgengine.trainer import BatchTrainer

    device = torch.device(device_name)
    name, lr, _ = lr_images(1)[0]
    cfg = KernelGANConfig()
    img = prepare_image(lr, cfg)
    sizes = []
    for tok in spec.split(","):
        if tok == "auto":
            sizes.append(("auto", auto_batch(device, FarmSettings(), lr.shape[0] * lr.shape[1])))
        else:
            sizes.append((tok, int(tok)))
    runs = [("", label, b) for label, b in sizes]
    runs += [(be, label, b) for be in [*filter(None, backends.split(",")), *["graph"] * graph]
             for label, b in sizes if label != "auto"]
    print(f"batched trainer on {name} ({lr.shape[1]}x{lr.shape[0]} LR), {iters} timed "
          f"iterations after 20 warm-up ones")
    print("| ops backend | B | ms/iteration | ms per image-iteration | images/min at 3000 it | "
          "x B=1 | CUDA kernels/step |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base: dict[str, float] = {}
    for backend, label, b in runs:
        if backend:
            var, value = (GRAPH_VAR, "1") if backend == "graph" else (ENV_VAR, backend)
            os.environ[var] = value
        try:
            t = BatchTrainer([img] * b, list(range(b)), cfg, device=device)
            used = resolve("sample_patches", device).__module__.split("._", 1)[-1]
            t.run(20)
            if backend == "graph":
                used = "captured" if t._static.graph is not None else t._static.reason
            launches = launches_per_step(t, device, table=not base and b == 1)
            if not base:
                print(f"host synchronisations per step: {host_syncs_per_step(t, device)}")
            _sync(device)
            t0 = time.perf_counter()
            t.run(iters)
            ms = 1000.0 * (time.perf_counter() - t0) / iters
        except Exception as exc:  # noqa: BLE001 - report and go on with the next row
            print(f"| {backend or 'default'} | {b} | failed: {type(exc).__name__}: {exc} |")
            continue
        finally:
            os.environ.pop(ENV_VAR, None)
            os.environ.pop(GRAPH_VAR, None)
        per_img = ms / b
        base.setdefault(backend, per_img)
        tag = f"{b} (auto)" if label == "auto" else str(b)
        print(f"| {backend or 'default'} ({used}) | {tag} | {ms:.2f} | {per_img:.3f} | "
              f"{60000.0 / (3000 * per_img):.1f} | {base[backend] / per_img:.1f}x | "
              f"{launches} |", flush=True)
        del t
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not e2e_iters:
        return
    walls = {}
    cfg = KernelGANConfig(iters=e2e_iters)  # restarts: restart_iters each (the default)
    for k in (1, 4):
        _sync(device)
        t0 = time.perf_counter()
        estimate_kernel(lr, config=cfg, device=device_name, restarts=k)
        walls[k] = time.perf_counter() - t0
    print(f"\nend to end: one run ({cfg.run_iters(1)} iterations) {walls[1]:.1f} s, --restarts 4 "
          f"({cfg.run_iters(4)} iterations each) {walls[4]:.1f} s ({walls[4] / walls[1]:.2f}x "
          "one run)")


def authors_ms_per_iter(baseline: Path, image: Path, short: int = 100, long: int = 400) -> float:
    """The authors' code, ms per iteration on one core: two runs, the difference divided by
    the extra iterations (so start-up and output writing cancel)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_authors import run_one

    t = [run_one(baseline, image, 2, 0, n)["seconds"] for n in (short, long)]
    return 1000.0 * (t[1] - t[0]) / (long - short)


def side_by_side(baseline: Path, iters: int) -> None:
    """ms/iteration of the authors' code and kgengine (1 and 2 threads) on one image, and
    the wall time of ``--restarts 4`` (as ``kgengine estimate --restarts 4`` runs it:
    ``restart_iters`` iterations each, and with ``--stop auto``) against one run of ``iters``,
    in one process."""
    import tempfile

    from kgengine.imageio import write_png

    name, lr, _ = lr_images(1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_png(Path(tmp) / f"{name}.png", lr)
        lr = read_image(path)  # both trainers get the same 8-bit image
        ref_ms = authors_ms_per_iter(baseline, path)
    old = torch.get_num_threads()
    estimate_kernel(lr, iters=20, device="cpu")  # warm-up (allocator, JIT)
    rows = []
    cfg = KernelGANConfig(iters=iters)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        single = estimate_kernel(lr, iters=iters, device="cpu")
        t1 = time.perf_counter()
        four = estimate_kernel(lr, config=cfg, device="cpu", restarts=4)
        t2 = time.perf_counter()
        auto = estimate_kernel(lr, config=cfg, device="cpu", restarts=4, stop="auto")
        rows.append((threads, single.report["ms_per_iter"], t1 - t0, t2 - t1,
                     time.perf_counter() - t2, max(auto.report["restarts"]["iters_used"])))
        four_iters = four.report["iters"]
    torch.set_num_threads(old)
    print(f"\nside by side on {name} ({lr.shape[1]}x{lr.shape[0]} LR), {iters} iterations; "
          f"machine: {machine()}")
    print(f"--restarts 4: {four_iters} iterations each (restart_iters)")
    print("| trainer | threads | ms/iteration | vs authors | one run s | --restarts 4 s | "
          "restarts 4 / one run | --restarts 4 --stop auto s (iterations) | that / one run |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| authors' code (../shared/baseline) | 1 | {ref_ms:.1f} | 1.0x | "
          f"{ref_ms * iters / 1000:.0f} (extrapolated) | | | | |")
    for threads, ms, wall, four_wall, auto_wall, auto_iters in rows:
        print(f"| kgengine | {threads} | {ms:.2f} | {ref_ms / ms:.1f}x | {wall:.1f} | "
              f"{four_wall:.1f} | {four_wall / wall:.2f}x | {auto_wall:.1f} ({auto_iters}) | "
              f"{auto_wall / wall:.2f}x |")


if __name__ == "__main__":
    main()
