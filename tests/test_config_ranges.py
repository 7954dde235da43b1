"""Range checks of ``KernelGANConfig``: a meaningless value is one ``ValueError`` naming the
field, the value and the allowed range, at construction / ``replace`` time (so ``--set``
fails before any training or output), and the boundary values are accepted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.config import _RANGES, KernelGANConfig

SAMPLE = Path(__file__).resolve().parent.parent / "kgengine" / "data" / "sample_lr.png"

#: (field, bad value, the range's text in the message)
BAD = [
    ("n_filtering", 0, "at least 1"), ("n_filtering", -3, "at least 1"),
    ("restart_n_filtering", 0, "at least 1"), ("d_layers", 2, "in [3, 64]"),
    ("d_layers", 0, "in [3, 64]"), ("iters", 0, "at least 1"), ("restart_iters", 0, "at least 1"),
    ("crop_size", 0, "in [1, 2048]"), ("shave", -1, "at least 0"),
    ("grad_window", 0, "in [1, 255]"),
    ("g_channels", 0, "in [1, 1024]"), ("d_channels", 0, "in [1, 1024]"),
    ("d_kernel_size", 0, "in [1, 63]"), ("lr_decay_every", 0, "at least 1"),
    ("bic_decay_every", 0, "at least 1"),
    ("lr_g", -1, "greater than 0"), ("lr_g", 0, "greater than 0"), ("lr_d", 0, "greater than 0"),
    ("g_init_gain", 0, "greater than 0"), ("d_init_gain", -0.1, "greater than 0"),
    ("sparse_power", -1, "greater than 0"), ("sparse_power", 0, "greater than 0"),
    ("noise_std", -1, "at least 0"), ("grad_percent", 2, "in [0, 1]"),
    ("grad_percent", -0.5, "in [0, 1]"), ("beta1", 1, "in [0, 1)"), ("beta1", -0.1, "in [0, 1)"),
    ("beta2", 1.0, "in [0, 1)"), ("lr_decay_factor", 0, "at least 1"),
    ("lr_decay_factor", 0.5, "at least 1"), ("bic_decay_rate", 0, "at least 1"),
    ("bic_min", -1, "at least 0"), ("bic_loss_threshold", -0.1, "at least 0"),
    ("bic_constraints_below", -1e-3, "at least 0"), ("boundary_penalty", -1, "at least 0"),
    ("boundary_sigma", -1, "at least 0"), ("lambda_sum2one", -0.5, "at least 0"),
    ("lambda_boundaries", -1, "at least 0"), ("lambda_bicubic", -5, "at least 0"),
    ("lambda_sparse_end", -1, "at least 0"), ("lambda_centralized_end", -1, "at least 0"),
    ("elongation_power", 1.5, "in [0, 1]"), ("spectral_mix", -0.1, "in [0, 1]"),
    ("width_prior", -0.1, "at least 0"),
]

#: Boundary values that are legal (and values the tests and bench scripts use).
GOOD = [
    ("n_filtering", 1), ("restart_n_filtering", 1), ("d_layers", 3), ("iters", 1),
    ("restart_iters", 1), ("shave", 0), ("grad_window", 1), ("lr_decay_every", 1),
    ("bic_decay_every", 1), ("lr_g", 1e-12), ("noise_std", 0.0), ("grad_percent", 0.0),
    ("grad_percent", 1.0), ("beta1", 0.0), ("beta2", 0.9999), ("lr_decay_factor", 1.0),
    ("bic_decay_rate", 1.0), ("bic_min", 0.0), ("bic_loss_threshold", 0.0),
    ("bic_loss_threshold", 10.0), ("bic_constraints_below", 0.0), ("boundary_sigma", 0.0),
    ("boundary_penalty", 0.0), ("lambda_bicubic", 0.0), ("sparse_power", 1e-3),
    ("elongation_power", 0.0), ("elongation_power", 1.0), ("spectral_mix", 0.0),
    ("spectral_mix", 1.0), ("width_prior", 0.0),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD)
def test_out_of_range_value_is_one_clear_value_error(key, value, allowed):
    for bad in (value, str(value)):  # as the API passes it and as --set passes it
        with pytest.raises(ValueError) as info:
            KernelGANConfig().replace(**{key: bad})
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"config {key}: must be {allowed}")
        assert message.endswith(f"got {float(value)!r}") or message.endswith(f"got {value}")
    with pytest.raises(ValueError, match=f"config {key}: must be"):
        KernelGANConfig(**{key: value})  # construction is checked too


@pytest.mark.parametrize(("key", "value"), GOOD)
def test_boundary_values_are_accepted(key, value):
    assert getattr(KernelGANConfig().replace(**{key: value}), key) == value
    assert getattr(KernelGANConfig(**{key: value}), key) == value


def test_defaults_and_named_configs_validate():
    for cfg in (KernelGANConfig(), KernelGANConfig.authors(), KernelGANConfig.defects_fixed()):
        assert KernelGANConfig.from_stored(cfg.to_dict()) == cfg
        assert cfg.replace(**cfg.to_dict()) == cfg


def test_every_numeric_setting_has_a_range():
    numeric = {f.name for f in dataclasses.fields(KernelGANConfig)
               if type(f.default) in (int, float)}
    assert numeric == set(_RANGES)


def test_construction_converts_numpy_numbers():
    cfg = KernelGANConfig(iters=np.int64(20), lr_g=np.float32(1e-4))
    assert type(cfg.iters) is int and cfg.iters == 20 and type(cfg.lr_g) is float


@pytest.mark.parametrize("setting", ["n_filtering=0", "d_layers=2", "lr_g=-1"])
def test_cli_set_out_of_range_exits_1_before_any_output(tmp_path, setting):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["estimate", str(SAMPLE), "-o", str(out), "--set", setting])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    key = setting.split("=")[0]
    assert len(errors) == 1 and errors[0].startswith(f"error: config {key}: must be"), res.output
    assert not out.exists()


def test_farm_set_out_of_range_exits_1_before_the_pool_exists(tmp_path):
    pool = tmp_path / "pool"
    res = CliRunner().invoke(app, ["farm", str(SAMPLE), "-o", str(pool),
                                   "--set", "restart_n_filtering=0"])
    assert res.exit_code == 1, res.output
    assert [line for line in res.output.splitlines() if line.startswith("error:")] == [
        "error: config restart_n_filtering: must be at least 1, got 0"]
    assert not pool.exists()


def test_a_crop_that_leaves_d_a_1x1_map_is_refused() -> None:
    """D's BatchNorm needs two values a channel for one crop: the PyTorch D (the GPU path)
    fails on a 1×1 map, so the config refuses it; the smallest crop left runs D's reference
    on one crop of one image."""
    import torch

    from kgengine import discriminator as D

    with pytest.raises(ValueError, match=r"crop_size: 26 is too small .* 2x2 or more"):
        KernelGANConfig(crop_size=26)
    cfg = KernelGANConfig(crop_size=27)
    assert cfg.d_output_size == 2
    p = D.init_params(cfg.d_channels, cfg.d_kernel_size, cfg.d_layers, cfg.d_init_gain, False,
                      torch.Generator().manual_seed(0))
    p = {k: v[None] for k, v in p.items()}  # one image
    x = torch.rand(1, 1, 3, cfg.g_output_size, cfg.g_output_size, dtype=torch.float64)
    out = D.forward(x, p)
    assert out.shape == (1, 1, 2, 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="more than 1 value per channel"):  # why 2x2
        D.forward(x[..., :-1, :-1], p)
