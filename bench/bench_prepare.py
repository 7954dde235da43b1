"""Benchmark: an image's preparation for training (:func:`kgengine.prepare.prepare_image`:
the shave, the float64 copy, G's and D's crop-probability maps) by size, this checkout
against another one, side by side.

Why. Training costs the same at any image size (it sees crops), the preparation grows with
the image: on a 12-megapixel photo it was the largest part of the per-image host work
(``bench/bench_host_work.py``). 0.9.18 tried making the maps in place (no fresh array per
step, a partition instead of a full sort for the quantile; the same bits, commit 029c8a2)
and measured it against the code before (ddb9159): no gain beyond the noise (1.00-1.06×,
0.96× at 1024 px; ``bench/data/prepare.md``), so it was reverted.

What. For each size (the first image of each of ``bench/bench_host_work.py``'s photo sets: a
Kodak photo 768×512, an Urban100 photo 1024 px wide, and that photo upscaled to 2040×1356
and 4000×3000, for timing only; 0.9.18's figures were taken on a torch-bicubic upscale of
the same photo), ``--repeats`` preparations in one
process after one warm-up (a long-running farm reuses the memory the first image touched),
median seconds on one thread; the SHA-256 of both maps' bytes. With ``--against TREE``
each round runs this checkout and TREE (another checkout's root, e.g. a ``git worktree`` of
an earlier commit) in fresh processes, alternately, and the table gives both, the ratio and
whether the maps are the same bytes.

Run: ``python bench/bench_prepare.py --against /tmp/wt_old --rounds 2`` (about 3 min on 2
cores) -> ``bench/data/prepare.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: bench/bench_host_work.py's photo sets, one image each
SIZES = ("Kodak photo (768×512)", "Urban100 photo (1024 px wide)", "upscaled to 2040×1356",
         "upscaled to 4000×3000")


def measure(repeats: int) -> dict[str, dict]:
    """{size: {"s": median seconds, "sha": the maps' hash}} of the kgengine on sys.path."""
    import torch
    from bench_host_work import photo_sets

    from kgengine.config import KernelGANConfig
    from kgengine.imageio import read_image
    from kgengine.prepare import prepare_image

    torch.set_num_threads(1)
    cfg, out = KernelGANConfig(), {}
    with tempfile.TemporaryDirectory() as tmp:
        images = {name: read_image(paths[0]) for name, paths in photo_sets(Path(tmp), 1).items()}
    for name in SIZES:
        img = images[name]
        prepare_image(img, cfg)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            prep = prepare_image(img, cfg)
            times.append(time.perf_counter() - t0)
        sha = hashlib.sha256(prep.g_map.tobytes() + prep.d_map.tobytes()).hexdigest()[:16]
        out[name] = {"s": statistics.median(times), "sha": sha}
    return out


def run_tree(tree: Path, repeats: int) -> dict[str, dict]:
    """:func:`measure` in a fresh process that imports kgengine from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_prepare as b, json; print(json.dumps(b.measure({repeats})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", type=Path, default=None,
                   help="another checkout's root, timed alternately with this one")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "data" / "prepare.md")
    a = p.parse_args(argv)
    trees = {"this checkout": ROOT} | ({"against": a.against} if a.against else {})
    runs: dict[str, list] = {k: [] for k in trees}
    for _ in range(a.rounds):
        for key, tree in trees.items():
            runs[key].append(run_tree(tree, a.repeats))
    from kgengine.sysinfo import machine_line

    lines = ["# An image's preparation (crop maps) by size", "",
             f"`python bench/bench_prepare.py{' --against ' + str(a.against) if a.against else ''}"
             f" --rounds {a.rounds} --repeats {a.repeats}` (module docstring). "
             f"{machine_line('cpu')}; one thread; seconds per image, median of the repeats, "
             "each round's figure given.", ""]
    head = "| image | this checkout s (rounds) |"
    if a.against:
        head += " against s (rounds) | ratio (medians) | same map bytes |"
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for name in SIZES:
        mine = [r[name]["s"] for r in runs["this checkout"]]
        row = f"| {name} | {statistics.median(mine):.3f} ({' / '.join(f'{t:.3f}' for t in mine)}) |"
        if a.against:
            other = [r[name]["s"] for r in runs["against"]]
            shas = {r[name]["sha"] for rs in runs.values() for r in rs}
            row += (f" {statistics.median(other):.3f} ({' / '.join(f'{t:.3f}' for t in other)})"
                    f" | {statistics.median(other) / statistics.median(mine):.2f}× |"
                    f" {'yes' if len(shas) == 1 else 'NO'} |")
        lines.append(row)
    text = "\n".join(lines) + "\n"
    print(text)
    a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
