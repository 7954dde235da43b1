"""Is training batch invariant on this device? Three crops of the bundled sample, 300
float32 iterations, alone (B = 1) and as one batch (B = 3); prints whether the kernels are
byte-identical and, if not, how far apart they are. On CPU this is asserted by
``tests/test_batch_invariance.py``; on CUDA it is measured here (``bench/gpu_check.sh``).

    python bench/check_invariance.py [--device cuda] [--iters 300]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kgengine.config import KernelGANConfig
from kgengine.imageio import read_image
from kgengine.prepare import prepare_image
from kgengine.trainer import BatchTrainer

SAMPLE = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_hr.png"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    cfg = KernelGANConfig(iters=args.iters, lr_decay_every=100, bic_decay_every=100)
    hr = read_image(SAMPLE)
    images = [prepare_image(c, cfg) for c in
              (hr[:100, :120], hr[150:250, 40:136], hr[200:, 200:])]
    seeds = [3, 17, 29]

    def train(which: list[int]) -> np.ndarray:
        t = BatchTrainer([images[i] for i in which], [seeds[i] for i in which], cfg,
                         device=args.device)
        t.run(args.iters)
        return t.final_kernels()

    alone = [train([i])[0] for i in range(3)]
    batch = train([0, 1, 2])
    same = all(a.tobytes() == b.tobytes() for a, b in zip(alone, batch, strict=True))
    worst = max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(alone, batch,
                                                                             strict=True))
    print(f"batch invariance on {args.device}, {args.iters} float32 iterations, B=1 vs B=3: "
          f"{'byte-identical' if same else 'DIFFERENT'} (max difference {worst:.3g} of the peak)")
    for i, (a, b) in enumerate(zip(alone, batch, strict=True)):
        print(f"  image {i}: alone peak {np.abs(a).max():.4g} sum {a.sum():.4f}, in the batch "
              f"peak {np.abs(b).max():.4g} sum {b.sum():.4f}")
    again = train([0])[0]
    print(f"repeatability on {args.device}: image 0 alone twice: "
          f"{'byte-identical' if again.tobytes() == alone[0].tobytes() else 'DIFFERENT'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
