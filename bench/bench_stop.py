"""``--stop auto`` on the development set: how much it saves and what it costs in accuracy.

Training is batch invariant (the same image and seed give the same kernel bytes in any
batch), so a run stopped at iteration t has exactly the kernel that a full run had at t.
This bench therefore trains every (scale, image, seed) once, for the full 3000 iterations,
and records every ``--check`` iterations (100) the relative change of the raw kernel since
the previous check and the aligned kernel PSNR of the finished kernel at that point. Stop
rules are then evaluated on those trajectories, exactly, without training again::

    python bench/bench_stop.py [--seeds 0,1,2] [--scales 2,4] [--batch 8] [--limit N]
    python bench/bench_stop.py --score-only

Results (resumable, rewritten atomically after every batch) go to
``bench/data/stop_trajectories.json``; the table of rules to ``bench/data/stop_auto.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from kgengine.api import finish_kernel
from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.imageio import read_image
from kgengine.kernel import analytic_x4, common_size
from kgengine.metrics import aligned_kernel_psnr
from kgengine.prepare import prepare_image
from kgengine.stopping import StopRule, stop_iteration
from kgengine.sysinfo import machine_line
from kgengine.trainer import BatchTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import DEFAULT_OUT, ensure_devset  # noqa: E402
from run_authors import job_key, job_order  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
RESULTS = DATA / "stop_trajectories.json"
REPORT = DATA / "stop_auto.md"
#: candidate rules: (tolerance, patience, min_iters)
GRID = [(tol, pat, lo) for tol in (1e-2, 5e-3, 3e-3, 1e-3, 3e-4) for pat in (1, 2, 3)
        for lo in (750, 1500)]


def train_batch(devset: Path, jobs: list[tuple[int, str, int]], cfg: KernelGANConfig,
                check: int) -> dict[str, dict]:
    """Train ``jobs`` (one scale) as one batch; per job the deltas and PSNRs at each check."""
    scale = jobs[0][0]
    prepared, gts = [], []
    for _, name, _ in jobs:
        prepared.append(prepare_image(read_image(devset / f"lr_x{scale}" / f"{name}.png"), cfg))
        idx = name.split("_")[1]
        gts.append(np.asarray(loadmat(devset / f"gt_k_x{scale}" / f"kernel_{idx}.mat")["Kernel"]))
    trainer = BatchTrainer(prepared, [s for _, _, s in jobs], cfg)
    out = {job_key(*j): {"iters": [], "delta": [], "psnr": []} for j in jobs}
    prev = [None] * len(jobs)

    def snapshot(done: int) -> None:
        if done % check:
            return
        raw = trainer.final_kernels()
        for b, job in enumerate(jobs):
            rec = out[job_key(*job)]
            k = finish_kernel(raw[b], cfg.n_filtering)
            k = analytic_x4(k) if scale == 4 else k
            size = common_size(k, gts[b])
            psnr = aligned_kernel_psnr(k, gts[b], size=size).psnr if np.isfinite(k).all() else None
            delta = (None if prev[b] is None else
                     float(np.linalg.norm(raw[b] - prev[b]) / max(np.linalg.norm(raw[b]), 1e-30)))
            rec["iters"].append(done)
            rec["delta"].append(delta)
            rec["psnr"].append(psnr)
            prev[b] = raw[b]

    t0 = time.perf_counter()
    trainer.run(cfg.iters, snapshot, every=check)
    sec = (time.perf_counter() - t0) / len(jobs)
    raw = trainer.final_kernels()
    for b, job in enumerate(jobs):
        rec = out[job_key(*job)]
        rec["seconds_per_run"] = round(sec, 1)
        k = finish_kernel(raw[b], cfg.n_filtering) if np.isfinite(raw[b]).all() else None
        # the full run's kernel (as estimate writes it), for bench_vs_authors.py --import-stop
        k = None if k is None else (analytic_x4(k) if scale == 4 else k)
        rec["kernel"] = None if k is None else np.round(k, 9).tolist()
    return out


def evaluate(runs: dict[str, dict], rule: StopRule, full: int) -> dict:
    """Mean PSNR change (stopped − full), the worst image, mean iterations used."""
    diffs, used = [], []
    for rec in runs.values():
        if rec["psnr"][-1] is None:
            continue
        t = stop_iteration(rec["iters"], rec["delta"], rule, full)
        diffs.append(rec["psnr"][rec["iters"].index(t)] - rec["psnr"][-1])
        used.append(t)
    d = np.asarray(diffs)
    return {"n": len(d), "mean": float(d.mean()), "worst": float(d.min()),
            "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0, "iters": float(np.mean(used))}


def report(runs: dict[str, dict], full: int) -> str:
    lines = [f"# `--stop auto`: stop rules on the development set ({len(runs)} runs)", "",
             f"Machine: {machine_line()}. Each rule applied exactly to full-length trajectories "
             "(batch-invariant training: a stopped run's kernel is the full run's kernel at "
             "that iteration). Δ = aligned kernel PSNR of the stopped run minus the full run.",
             "", "| tol | patience | min iters | scale | n | mean Δ (dB) | SD | worst Δ | "
             "mean iterations |", "|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for tol, pat, lo in GRID:
        rule = StopRule(tol, pat, lo)
        for scale in (2, 4):
            sub = {k: v for k, v in runs.items() if k.startswith(f"x{scale}/")}
            if not sub:
                continue
            e = evaluate(sub, rule, full)
            lines.append(f"| {tol:g} | {pat} | {lo} | x{scale} | {e['n']} | {e['mean']:+.3f} | "
                         f"{e['sd']:.3f} | {e['worst']:+.3f} | {e['iters']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devset", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--scales", default="2,4")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--check", type=int, default=100)
    p.add_argument("--limit", type=int, default=None, help="stop after this many batches")
    p.add_argument("--score-only", action="store_true")
    args = p.parse_args(argv)
    cfg = KernelGANConfig()
    store = json.loads(RESULTS.read_text()) if RESULTS.exists() else {
        "config": cfg.to_dict(), "check": args.check, "runs": {}}
    if not args.score_only:
        devset = ensure_devset(args.devset)
        names = [m["name"] for m in json.loads((devset / "synth.json").read_text())["images"]]
        seeds = tuple(int(s) for s in args.seeds.split(","))
        scales = tuple(int(s) for s in args.scales.split(","))
        todo = [j for j in job_order(names, seeds, scales) if job_key(*j) not in store["runs"]]
        batches = 0
        for scale in scales:
            group = [j for j in todo if j[0] == scale]
            for start in range(0, len(group), args.batch):
                if args.limit is not None and batches >= args.limit:
                    break
                store["runs"].update(train_batch(devset, group[start:start + args.batch], cfg,
                                                 args.check))
                save_json(RESULTS, store)
                batches += 1
                print(f"{len(store['runs'])} runs done", flush=True)
    if store["runs"]:
        text = report(store["runs"], cfg.iters)
        save_text(REPORT, text)
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
