"""Study: do the restarts' discriminators tell which restart's kernel is right?

``--restarts 4`` trains four GANs on one image and keeps the consensus of their kernels; its
``confidence`` (their agreement) does not predict accuracy (``vs_authors.md``), and picking
the best restart with the truth would gain about 1 dB over the consensus. This study tries a
score that needs no truth: each restart's generator judged by the *other* restarts'
discriminators. For each (image, seed) of the development set it trains the four restarts
as one batch, exactly as ``--restarts 4`` does (seeds ``restart_seed(seed, r)``; the raw
kernels are checked byte for byte against ``raw_kernels.json``), keeps every G and D, and on
64 fixed 64×64 crops of the LR image (uniform positions, NumPy seed 0) computes

    S[i, j] = mean over crops and D-map pixels of D_j(G_i(crop))      (D's "real" verdict)
    cross_i = mean over j != i of (S[i, j] - mean_k S[k, j])          (each D's bias removed)

It reports, against the true kernel (aligned kernel PSNR, the canvas of
``bench_vs_authors.py``): restart 0 alone (one run), the consensus (the default), the
restart with the highest ``cross`` score, and the best restart picked with the truth (a
bound); the Spearman correlation of ``cross`` with PSNR over each image's restarts; and
across images, ρ between the score spread and the consensus' PSNR. Results resume from
``bench/data/dscore_study.json``; the table goes to ``bench/data/dscore_study.md``.

Run::

    OMP_NUM_THREADS=1 python bench/study_dscore.py --images 5-20 --seeds 0 --scale 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from kgengine import discriminator as D
from kgengine.api import finish_restarts, restart_seed
from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.imageio import read_image
from kgengine.prepare import prepare_image
from kgengine.sysinfo import machine_line
from kgengine.trainer import BatchTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import DEFAULT_OUT, ensure_devset  # noqa: E402
from study_postprocess import STORE as RAW_STORE  # noqa: E402
from study_postprocess import _gt, _psnr  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
RESULTS = DATA / "dscore_study.json"
RESTARTS = 4
N_CROPS = 64


def fixed_crops(pixels: np.ndarray, n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` crops (n, 3, size, size) float32 of an (h, w, 3) image at uniform positions."""
    h, w = pixels.shape[:2]
    rng = np.random.default_rng(seed)
    tops, lefts = rng.integers(0, h - size + 1, n), rng.integers(0, w - size + 1, n)
    crops = np.stack([pixels[t:t + size, x:x + size] for t, x in zip(tops, lefts, strict=True)])
    return torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))


def judge(trainer: BatchTrainer, crops: torch.Tensor) -> np.ndarray:
    """S[i, j]: mean of D_j's map on G_i's outputs of ``crops`` (every D sees every G)."""
    b = trainer.b
    with torch.no_grad():
        k = trainer.kernel()
        out = np.zeros((b, b))
        for i in range(b):
            g_out = trainer._g_forward(crops, k[i : i + 1].contiguous())  # (n, 3, s, s)
            g_out = g_out.unsqueeze(1).expand(-1, b, -1, -1, -1)  # crop c of G_i to every D
            # the power iteration updates D's spectral state in place: judge with copies
            params = {name: v.clone() for name, v in trainer.d_params.items()}
            out[i] = D.forward(g_out, params).mean(dim=(0, 2, 3)).double().numpy()
    return out


def cross_scores(s: np.ndarray) -> np.ndarray:
    """``cross_i = mean_{j != i} (S[i, j] - mean_k S[k, j])``."""
    centred = s - s.mean(axis=0, keepdims=True)
    b = s.shape[0]
    return np.array([np.mean([centred[i, j] for j in range(b) if j != i]) for i in range(b)])


def run_one(devset: Path, scale: int, name: str, seed: int, raw_store: dict,
            iters: int | None = None) -> dict:
    cfg = KernelGANConfig() if iters is None else KernelGANConfig(iters=iters)
    img = prepare_image(read_image(devset / f"lr_x{scale}" / f"{name}.png"), cfg, name)
    seeds = [restart_seed(seed, r) for r in range(RESTARTS)]
    trainer = BatchTrainer([img] * RESTARTS, seeds, cfg)
    trainer.run(cfg.iters)
    raws = trainer.final_kernels()
    stored = [raw_store.get(f"x{scale}/{name}/s{seed}/r{r}") for r in range(RESTARTS)]
    same = all(s is not None and np.array_equal(np.round(raw, 12), np.asarray(s))
               for raw, s in zip(raws, stored, strict=True))
    s = judge(trainer, fixed_crops(img.pixels, N_CROPS, cfg.crop_size))
    out = {"S": s.tolist(), "same_as_store": same}
    if not same:  # else the raw kernels are raw_kernels.json's (keeps this file small)
        out["raw"] = [np.round(r, 12).tolist() for r in raws]
    return out


def summarise(devset: Path, results: dict, scale: int) -> str:
    raw_store = json.loads(RAW_STORE.read_text())["runs"]
    rows, within, spreads, cons_psnrs = [], [], [], []
    def order(key: str) -> tuple[int, int]:
        _, name, seed = key.split("/")
        return int(seed), int(name.split("_")[1])

    for key, res in sorted(results.items(), key=lambda kv: order(kv[0])):
        sc, name, seed = key.split("/")
        if int(sc[1:]) != scale:
            continue
        gt = _gt(devset, scale, name)
        raws = [np.asarray(r) for r in res.get("raw") or
                [raw_store[f"{sc}/{name}/s{seed}/r{r}"] for r in range(RESTARTS)]]
        cons, finished, _ = finish_restarts(raws, 50, "mean", RESTARTS)
        p = [_psnr(k, gt, scale) for k in finished]
        score = cross_scores(np.asarray(res["S"]))
        p_cons = _psnr(cons, gt, scale)
        pick = int(np.argmax(score))
        rows.append((f"{name}/{seed}", p[0], p_cons, p[pick], max(p), res["same_as_store"]))
        within.append(spearmanr(score, p).statistic)
        spreads.append(float(np.ptp(score)))
        cons_psnrs.append(p_cons)
    if not rows:
        return "no runs yet\n"
    a = np.asarray([r[1:5] for r in rows])
    lines = [f"# Discriminator cross-score study (x{scale})", "",
             f"{len(rows)} (image, seed) runs, {RESTARTS} restarts each, default config, "
             f"{N_CROPS} fixed crops. Machine: {machine_line()}.", "",
             "| run | restart 0 | consensus (default) | pick by D cross-score | best (truth) | "
             "raw = store |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | "
              f"{'yes' if r[5] else 'NO'} |" for r in rows]
    d = a[:, 2] - a[:, 1]
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    lines += [f"| **mean** | {a[:, 0].mean():.2f} | {a[:, 1].mean():.2f} | {a[:, 2].mean():.2f} "
              f"| {a[:, 3].mean():.2f} | |", "",
              f"- pick − consensus: {d.mean():+.2f} ± {se:.2f} dB (paired, ± SE); the pick is "
              f"the truth's best restart in {int(np.sum(a[:, 2] == a[:, 3]))} of {len(rows)}",
              f"- Spearman ρ(cross score, PSNR) within an image's restarts: mean "
              f"{np.nanmean(within):+.2f} (by chance: 0)",
              f"- Spearman ρ(score spread, consensus PSNR) across runs: "
              f"{spearmanr(spreads, cons_psnrs).statistic:+.2f}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="5-20")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--devset", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--score-only", action="store_true")
    ap.add_argument("--iters", type=int, default=None, help="(smoke tests only)")
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="results file (one per process when several run at once)")
    args = ap.parse_args(argv)
    devset = ensure_devset(args.devset)
    first, last = (int(v) for v in args.images.split("-"))
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    if not args.score_only:
        raw_store = json.loads(RAW_STORE.read_text())["runs"]
        for seed in (int(s) for s in args.seeds.split(",")):
            for i in range(first, last + 1):
                key = f"x{args.scale}/im_{i}/{seed}"
                if key in results:
                    continue
                t0 = time.perf_counter()
                results[key] = run_one(devset, args.scale, f"im_{i}", seed, raw_store,
                                       args.iters)
                save_json(args.results, results)
                print(f"{key}: {time.perf_counter() - t0:.0f} s, raw = store: "
                      f"{results[key]['same_as_store']}", flush=True)
    text = summarise(devset, results, args.scale)
    save_text(DATA / f"dscore_study_x{args.scale}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
