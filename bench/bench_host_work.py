"""Benchmark: the per-image host work of a batch (reading, crop maps, post-processing) on one
thread against the host's threads (``kgengine.host_threads``), and what it does to a farm.

Why. Training costs the same whatever an LR image's size (crops), but reading an image, its
crop maps and the post-processing of its kernel (width calibration and spectral fit on up to
1024×1024 pixels, confidence) grow with it, and ran one image after the other on one thread.
Real photos are large: a farm's speed on them had not been measured.

What.
1. Host work per image: ``estimate_kernels`` on B images with 20 iterations (so nearly all
   of its time is host work), with 1 worker (the code before, exactly) and with the host's
   threads, alternately, ``--rounds`` times; host time = wall time − the trainer's own
   (``report["wall_s"]``). Sizes: Kodak photos (768×512), Urban100 photos (1024 px wide),
   and Urban100 photos upscaled (bicubic) to 2040 px wide (DIV2K's size) and 4000×3000 (a
   12 MP camera). The upscaled ones time the work only; their kernels mean nothing. Each
   pair of results is checked to be the same bytes.
2. The real farm (:func:`kgengine.farm.runner.run_farm`, defaults: 3000 iterations, ``--stop
   auto``) on ``--farm-images`` of the 2040 px images at ``--batch``, with 1 worker and with
   the host's threads, one after the other in fresh pool folders; the two pools must be the
   same bytes.

Run: ``python bench/bench_host_work.py`` (about 8 min on 2 cores) -> ``bench/data/host_work.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import kgengine.host_threads as ht
from kgengine.api import estimate_kernels
from kgengine.atomic import save_text
from kgengine.farm.runner import run_farm
from kgengine.pool import load_pool
from kgengine.sysinfo import machine_line

HR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hr"
OUT = Path(__file__).resolve().parent / "data" / "host_work.md"


def photo_sets(tmp: Path, b: int) -> dict[str, list[Path]]:
    """Label -> B image files: real photos as they are, and Urban100 photos upscaled."""
    kodak = sorted(HR.glob("kodim*.png"))[:b]
    urban = sorted(HR.glob("urban_*.png"))[:b]
    sets = {"Kodak photo (768×512)": kodak, "Urban100 photo (1024 px wide)": urban}
    for label, size in (("upscaled to 2040×1356", (2040, 1356)),
                        ("upscaled to 4000×3000", (4000, 3000))):
        files = []
        for p in urban[: b if size[0] < 4000 else max(2, b // 2)]:
            q = tmp / f"{p.stem}_{size[0]}.png"
            Image.open(p).convert("RGB").resize(size, Image.BICUBIC).save(q)
            files.append(q)
        sets[label] = files
    return sets


def host_seconds(paths: list[Path], workers: int) -> tuple[float, list]:
    """(host seconds of one ``estimate_kernels`` call on ``paths``, its results)."""
    ht.default_workers = lambda: workers  # the module's own hook, read at each call
    t0 = time.perf_counter()
    res = estimate_kernels([str(p) for p in paths], seeds=list(range(len(paths))), x4=True,
                           iters=20, stop="full")
    return time.perf_counter() - t0 - res[0].report["wall_s"], res


def same(a: list, b: list) -> bool:
    return all(np.array_equal(x.kernel_x2, y.kernel_x2) and np.array_equal(x.kernel_x4, y.kernel_x4)
               and x.confidence == y.confidence for x, y in zip(a, b, strict=True))


def host_table(sets: dict[str, list[Path]], threads: int, rounds: int) -> list[str]:
    lines = ["| images | B | host s per image, 1 thread (runs) | host s per image, "
             f"{threads} threads (runs) | ratio | same bytes |", "|---|---:|---:|---:|---:|---|"]
    for label, paths in sets.items():
        t1, tn, ok = [], [], True
        for _ in range(rounds):
            a, ra = host_seconds(paths, 1)
            b, rb = host_seconds(paths, threads)
            t1.append(a / len(paths))
            tn.append(b / len(paths))
            ok &= same(ra, rb)
        runs1 = " / ".join(f"{t:.2f}" for t in t1)
        runsn = " / ".join(f"{t:.2f}" for t in tn)
        lines.append(f"| {label} | {len(paths)} | {np.median(t1):.2f} ({runs1}) | "
                     f"{np.median(tn):.2f} ({runsn}) | {np.median(t1) / np.median(tn):.2f}× | "
                     f"{'yes' if ok else 'NO'} |")
        print(lines[-1], flush=True)
    return lines


def farm_rows(paths: list[Path], batch: int, threads: int, root: Path) -> list[str]:
    out, pools = [], {}
    for workers in (1, threads):
        ht.default_workers = lambda w=workers: w
        t0 = time.perf_counter()
        run_farm([str(p) for p in paths], root / f"pool_{workers}", batch=batch, device="cpu")
        wall = time.perf_counter() - t0
        pools[workers] = load_pool(root / f"pool_{workers}")
        out.append((workers, wall))
        print(f"farm, {workers} host thread(s): {wall:.1f} s", flush=True)
    a, b = pools[1], pools[threads]
    same_pool = a.sources == b.sources and np.array_equal(a.kernels, b.kernels)
    n = len(paths)
    lines = ["| farm host threads | wall s | images/hour | vs 1 thread |", "|---|---:|---:|---:|"]
    for workers, wall in out:
        lines.append(f"| {workers} | {wall:.1f} | {3600 * n / wall:.0f} | "
                     f"{out[0][1] / wall:.2f}× |")
    lines.append("")
    lines.append(f"The two pools are {'the same bytes' if same_pool else 'DIFFERENT'}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--farm-images", type=int, default=8, help="0: no farm")
    p.add_argument("--out", type=Path, default=OUT, help="the report (.md)")
    a = p.parse_args(argv)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = photo_sets(root, a.batch)
        host_seconds(sets["Kodak photo (768×512)"][:2], 1)  # warm-up (Numba cache, allocator)
        host = host_table(sets, threads, a.rounds)
        farm = (farm_rows(sets["upscaled to 2040×1356"][: a.farm_images], a.batch, threads, root)
                if a.farm_images > 0 else ["(not run: `--farm-images 0`)"])
    text = "\n".join([
        "# Per-image host work on the host's threads", "",
        f"`python bench/bench_host_work.py` (module docstring). {machine_line()}; "
        f"{threads} torch threads.", "",
        "## Host work per image (reading, crop maps, post-processing; x2 and x4)", "",
        *host, "",
        f"## The farm: {a.farm_images} images of 2040×1356 at `--batch {a.batch}`, "
        "3000 iterations, `--stop auto`" if a.farm_images > 0 else "## The farm", "", *farm,
        ""])
    save_text(a.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
