"""``KernelGANConfig``: every training setting, with the paper's / authors' defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KernelGANConfig:
    """KernelGAN hyper-parameters (Bell-Kligler et al. 2019; authors' code defaults).

    The three ``authors_*`` switches reproduce defects 1-3 of the authors' code (see
    ``docs/ALGORITHM.md`` section 7) for comparison; kgengine's defaults fix them.
    """

    # --- data ---
    crop_size: int = 64  # G's input crop (D's crop is G's output size, 26)
    shave: int = 10  # pixels shaved off each border before training (authors: synthetic input)
    noise_std: float = 1.0 / 255.0  # noise on D's real input and G's output seen by D ([0,1] units)
    grad_window: int = 5  # box window that smooths the gradient-magnitude map
    grad_percent: float = 0.97  # gradient maps are clipped at this quantile
    grad_clip_magnitude: bool = False  # also clip the |∇| term (kgengine 0.1; authors: raw |∇|)
    # --- generator: deep linear network ---
    g_kernel_sizes: tuple[int, ...] = (7, 5, 3, 1, 1, 1)
    g_channels: int = 64
    g_init_gain: float = 0.1  # Xavier-normal gain
    # --- discriminator ---
    d_kernel_size: int = 7
    d_channels: int = 64
    d_layers: int = 7  # first conv + 5 [1x1 conv, BN, ReLU] blocks + final 1x1 conv
    d_init_gain: float = 0.1  # Xavier-normal gain (only effective when defect 3 is fixed)
    # --- optimisation / schedule ---
    iters: int = 3000
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_every: int = 750
    lr_decay_factor: float = 10.0
    # --- loss weights ---
    lambda_sum2one: float = 0.5
    lambda_boundaries: float = 0.5
    lambda_bicubic: float = 5.0
    lambda_sparse_end: float = 5.0
    lambda_centralized_end: float = 1.0
    sparse_power: float = 0.2
    boundary_penalty: float = 30.0
    boundary_sigma: float = 0.0  # σ of the boundary mask's Gaussian; 0 = kernel size (authors)
    bic_loss_threshold: float = 0.4  # "similar to bicubic" once below this 3 times in a row
    bic_decay_every: int = 200
    bic_decay_rate: float = 100.0
    bic_min: float = 5e-6
    bic_constraints_below: float = 5e-3  # sparse/centre priors switch on below this weight
    # --- extraction ---
    n_filtering: int = 40
    # --- authors' defects (True = behave like the authors' code) ---
    authors_bicubic_rgb_sum: bool = False  # defect 1: bicubic target = sum of R,G,B
    authors_noise_accumulates: bool = False  # defect 2: D's real-crop noise accumulates in image
    authors_d_init_ignored: bool = False  # defect 3: D's Xavier init overwritten by spectral norm
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def kernel_size(self) -> int:
        """Receptive field of G = size of the composed kernel (13 by default)."""
        return sum(self.g_kernel_sizes) - len(self.g_kernel_sizes) + 1

    @property
    def g_output_size(self) -> int:
        """G's output size for a ``crop_size`` input (26 by default)."""
        return (self.crop_size - self.kernel_size) // 2 + 1

    @property
    def d_output_size(self) -> int:
        """D's output map size for a G-output-sized input (20 by default)."""
        return self.g_output_size - self.d_kernel_size + 1

    def replace(self, **changes: Any) -> KernelGANConfig:
        """A copy with ``changes``; unknown keys and wrong types raise ``ValueError``."""
        return dataclasses.replace(self, **_checked(changes))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    @staticmethod
    def authors() -> KernelGANConfig:
        """The authors' behaviour, defects 1-3 included (for comparison runs)."""
        return KernelGANConfig(
            authors_bicubic_rgb_sum=True,
            authors_noise_accumulates=True,
            authors_d_init_ignored=True,
        )


def _checked(changes: dict[str, Any]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(KernelGANConfig)}
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in fields or key == "extra":
            raise ValueError(f"unknown config key {key!r}")
        default = getattr(KernelGANConfig(), key)
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"config {key}: expected a bool, got {value!r}")
                value = value.lower() in ("true", "1")
            elif not isinstance(value, bool):
                raise ValueError(f"config {key}: expected a bool, got {value!r}")
        elif isinstance(default, tuple):
            if isinstance(value, str):
                value = tuple(int(v) for v in value.split(","))
            value = tuple(value)
        else:
            try:
                value = type(default)(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"config {key}: expected {type(default).__name__}, got {value!r}"
                ) from None
        out[key] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``["key=value", ...]`` CLI overrides (checked by :meth:`KernelGANConfig.replace`)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"config override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out
