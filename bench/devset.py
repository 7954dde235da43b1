"""The development set for accuracy work: 20 seeded DIV2KRK-like LR images, x2 and x4.

The 16 Urban100 images of ``../shared/data/hr`` (full size, about 1024 px on the long side,
the closest to real use) plus 4 Kodak crops (500×500, evenly spread) become, sorted by file
name (so ``im_1 .. im_4`` are Kodak, ``im_5 .. im_20`` Urban100), the images of
:func:`kgengine.accuracy.synth.make_div2krk_like` with set seed 0. The set is a pure function of
those files and the seed, so it is rebuilt rather than committed.

Run: ``python bench/devset.py [--out bench_out/devset]`` (about 30 s).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kgengine.accuracy.synth import make_div2krk_like, select_evenly

HR_DIR = Path(__file__).resolve().parents[1].parent / "shared/data/hr"
DEFAULT_OUT = Path("bench_out/devset")
SET_SEED = 0
N_KODAK = 4


def dev_sources(hr_dir: Path = HR_DIR) -> list[Path]:
    """The 20 HR files of the development set, in ``im_N`` order (sorted by name)."""
    urban = list(hr_dir.glob("urban_*.png"))
    kodak = select_evenly(sorted(hr_dir.glob("kodim*.png")), N_KODAK)
    return sorted(kodak + urban)


def ensure_devset(out: Path = DEFAULT_OUT, hr_dir: Path = HR_DIR) -> Path:
    """Build the set into ``out`` unless ``out/synth.json`` already describes the same sources."""
    return ensure_set(out, dev_sources(hr_dir), SET_SEED)


def ensure_set(out: Path, sources: list[Path], seed: int) -> Path:
    """Build the synthetic set of ``sources`` with set ``seed`` into ``out``, unless
    ``out/synth.json`` already lists the same source files."""
    manifest = out / "synth.json"
    if manifest.exists():
        done = json.loads(manifest.read_text())
        if [m["source"] for m in done["images"]] == [p.name for p in sources]:
            return out
    make_div2krk_like(sources, out, seed=seed)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    out = ensure_devset(args.out)
    for m in json.loads((out / "synth.json").read_text())["images"]:
        print(m["name"], m["source"], m["hr_shape"], f"var {m['var1']:.2f}/{m['var2']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
