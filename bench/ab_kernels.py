"""A/B of two source trees on this host: the saved kernels of the same trainings.

Trains the first six development images (``bench/devset.py``) at x2 and at x4 (``--x4``
post-processing), seed 0, the API's defaults, as one batch per scale, and writes each
image's kernel SHA-256 (16 hex digits) and confidence as JSON. Run it once per tree and
compare the files; the tree is the one Python imports (``PYTHONPATH=<other tree>``):

    PYTHONPATH=/tmp/base python bench/ab_kernels.py /tmp/ab_base.json
    python bench/ab_kernels.py /tmp/ab_new.json

Stored kernels (``bench/check_stored.py``) were trained on the AVX2 host; on another vector
width (AVX-512) float32 training takes other bytes whatever the code, so there two trees
are compared on the same host instead (0.9.28).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import kgengine
from kgengine.api import estimate_kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import ensure_devset  # noqa: E402


def main() -> None:
    root = ensure_devset()
    out = {}
    for scale in (2, 4):
        paths = sorted((root / f"lr_x{scale}").glob("im_*.png"))[:6]
        res = estimate_kernels([str(p) for p in paths], seeds=[0] * len(paths), x4=scale == 4)
        for p, r in zip(paths, res, strict=True):
            digest = hashlib.sha256(np.ascontiguousarray(r.kernel_x2).tobytes()).hexdigest()
            out[f"x{scale}/{p.stem}"] = (digest[:16], r.confidence)
    print(kgengine.__file__)
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
