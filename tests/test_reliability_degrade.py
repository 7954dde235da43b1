"""Fault injection for ``degrade``: random write failures and kills, rerun until done.

Every pair must end in the manifest exactly once, no ``.tmp`` may be left, and the LR
images must equal those of an undisturbed run, byte for byte — with the ONNX degrader and
with the CPU pipeline (noise + JPEG).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from faults import Killed, inject_write_faults
from PIL import Image

from kgengine.degradation import PipelineConfig, degrade_folder
from kgengine.errors import KGEngineError
from kgengine.imageio import to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import make_pool, save_pool


@pytest.fixture()
def inputs(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(5)
    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(8):
        h, w = 40 + 2 * (i % 3), 44
        Image.fromarray(to_uint8(rng.random((h, w, 3)))).save(hr / f"im{i}.png")
    kernels = [anisotropic_gaussian(13, v1, v2, t) for v1, v2, t in
               [(0.8, 3.0, 0.3), (2.0, 2.0, 0.0), (4.0, 1.0, 1.2)]]
    pool = make_pool(kernels, ["k0", "k1", "k2"], ["a", "b", "c"], 2, seeds=[0, 1, 2])
    return hr, save_pool(tmp_path / "pool", pool)


def _pairs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "lr").glob("*.png"))}


def _manifest_names(out: Path) -> list[str]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line)["name"] for line in lines if line.strip()]


@pytest.mark.parametrize("pipeline", [None, PipelineConfig(gaussian_prob=1.0,
                                                           gaussian_sigma=(0.01, 0.03),
                                                           jpeg_prob=1.0)])
def test_degrade_survives_random_write_failures_and_kills(inputs, tmp_path, monkeypatch,
                                                          pipeline):
    hr, pool = inputs
    kw = {"noise": 0.0 if pipeline else 0.02, "seed": 3, "batch": 2, "provider": "cpu",
          "pipeline": pipeline}
    calm = degrade_folder(hr, pool, tmp_path / "calm", **kw)
    assert calm.written == 8 and not calm.failed
    injected = inject_write_faults(monkeypatch, 99, kill_below=0.1, fail_below=0.3)
    out = tmp_path / "out"
    for _ in range(200):
        try:
            report = degrade_folder(hr, pool, out, **kw)
        except (Killed, KGEngineError):
            continue
        if not report.failed and report.written + report.skipped == 8:
            break
    else:
        pytest.fail("degrade never finished")
    assert injected["fail"] > 2 and injected["kill"] > 0, injected
    names = _manifest_names(out)
    assert sorted(names) == sorted(_manifest_names(tmp_path / "calm"))  # each pair once
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert _pairs(out) == _pairs(tmp_path / "calm")
