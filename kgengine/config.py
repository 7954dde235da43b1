"""``KernelGANConfig``: every training setting, with the paper's / authors' defaults."""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

#: Seeds are integers in [0, MAX_SEED] (non-negative 64-bit signed: what torch takes).
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class KernelGANConfig:
    """KernelGAN hyper-parameters (Bell-Kligler et al. 2019; authors' code defaults).

    The three ``authors_*`` switches are defects 1-3 of the authors' code (see
    ``docs/ALGORITHM.md`` section 7). Since 0.2 they default to the authors' behaviour: fixing
    them measured worse on the development set (``bench/bench_vs_authors.py``,
    docs/ACCURACY.md), so the fixes are opt-in (:meth:`defects_fixed`, ``--fix-defects``)
    until they are re-calibrated.

    One default differs from the authors' code on purpose: ``n_filtering`` is 50, not 40
    (since 0.5.1; 0.5.0 had 60). The authors' clean-up of the saved kernel cuts its tails and
    left kgengine's kernels too narrow; 50 measured +0.41 ± 0.12 dB (x2) and +0.51 ± 0.17 dB
    (x4) aligned kernel PSNR on the development set, 48 runs per scale; 60 gained a little more
    on average but put more runs below the isotropic Gaussian (``bench/study_postprocess.py``,
    docs/ACCURACY.md). It changes only the saved kernel, not the training. :meth:`authors` has 40.

    Since 0.9 a second one: ``elongation_power`` β = 0.4 (the authors' code: 1, no change).
    The saved kernel keeps its axes and area, and its log-elongation is multiplied by β
    (:func:`kgengine.kernel.shrink_elongation`): KernelGAN's estimated axis is often wrong,
    and on the development set this measured better than keeping the elongation (README,
    ``bench/study_elongation.py``). It too changes only the saved kernel.

    Since 0.9.4 a third: ``width_calibration`` (the authors' code: none). KernelGAN finds a
    kernel's shape but not its width (the saved kernels' area has Spearman ρ ≈ 0 with the
    true one's, for both codes); the saved x2 kernel's second moments are scaled by the
    factor the LR image's cross-scale spectrum prefers (:mod:`kgengine.width`, with the
    pull ``width_prior`` toward no change). It too changes only the saved kernel.

    Since 0.9.5, with the calibration, ``elongation_choice``: the unshrunk kernel (β = 1) is
    calibrated as well and kept where the LR spectrum fits it clearly better
    (:func:`kgengine.width.choose_elongation`): the shrink's loss on kernels whose elongation
    KernelGAN got right is partly won back (README, ``bench/study_width.py``).

    Since 0.9.6 a fourth: ``spectral_mix`` w = 0.5 (the authors' code: 0). The saved kernel
    is ``(1 − w)·k + w·g``, ``g`` the Gaussian that the LR spectrum fits in closed form
    (:mod:`kgengine.spectral`), unless the two disagree about the width. Its errors are not
    KernelGAN's, so the mean gains on average (README, ``bench/study_spectral.py``).

    Since 0.9.7, ``spectral_confidence``: a kernel's ``confidence`` is the agreement of
    KernelGAN's kernel with that Gaussian, discounted by the saved kernel's elongation
    (:mod:`kgengine.confidence`), for one run too; False gives the restarts' agreement
    (:mod:`kgengine.consensus`; None for one run), which did not rank kernels by accuracy.
    It changes no kernel.

    Since 0.9.8, ``width_refine``: the calibration's ``s`` is refined between the points of
    its grid (:func:`kgengine.width.refine_scale`, a parabola through the three criterion
    values around the grid's minimum), so the width no longer jumps by 1/6 octave steps;
    False gives the grid's point. Neutral on average, it halves the restarts' seed spread
    at x2 (docs/ACCURACY.md, ``bench/study_image_bias.py``).

    Since 0.9.10, ``width_release``: the calibration's pull toward KernelGAN's width
    (``width_prior``) is weakened where the LR spectrum's Gaussian fit is sharp, and gone
    where it is very sharp (:func:`kgengine.release.released_prior`): KernelGAN's kernels are
    3-5× too wide in area on sharp kernels, the regime of real photos, and the pull held the
    calibration near that width (docs/ACCURACY.md, ``bench/study_sharp.py``). False gives the full
    pull everywhere.

    Since 0.9.11, ``clean_release``: the clean-up's n (``n_filtering``, and
    ``restart_n_filtering`` for restarts) is lowered where the LR spectrum's Gaussian fit is
    sharp (:func:`kgengine.release.released_clean_n`): a sharp kernel has few entries above the
    raw kernel's noise floor, and keeping 50-70 of them kept that floor, a wide skirt
    (docs/HISTORY.md, ``bench/study_clean_release.py``). False gives the fixed n everywhere.

    ``restart_iters`` and ``restart_n_filtering`` are kgengine's own (the authors' code has no
    restarts): see :meth:`run_iters` and :meth:`clean_n`.
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
    restart_iters: int = 1250  # each restart's iterations with restarts K > 1 (see run_iters)
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
    n_filtering: int = 50  # the saved kernel keeps ~ its n largest entries (authors: 40)
    restart_n_filtering: int = 70  # each restart's clean-up n when K > 1 are combined
    elongation_power: float = 0.4  # saved kernel's elongation^β, β in [0, 1] (authors: 1)
    width_calibration: bool = True  # scale the saved kernel's width by the LR spectrum's choice
    width_prior: float = 0.3  # λ of the calibration's pull toward no change, ≥ 0
    width_refine: bool = True  # the calibration's scale refined between its grid's points
    width_release: bool = True  # the pull weakened where the LR spectrum looks sharp
    clean_release: bool = True  # the clean-up's n lowered where the LR spectrum looks sharp
    elongation_choice: bool = True  # with the calibration: keep β = 1 where the spectrum fits it
    spectral_mix: float = 0.5  # weight of the LR spectrum's own Gaussian in the saved kernel
    spectral_confidence: bool = True  # confidence: KernelGAN vs the spectrum (False: restarts')
    # --- authors' defects (True = behave like the authors' code) ---
    authors_bicubic_rgb_sum: bool = True  # defect 1: bicubic target = sum of R,G,B
    authors_noise_accumulates: bool = True  # defect 2: D's real-crop noise accumulates in image
    authors_d_init_ignored: bool = True  # defect 3: D's Xavier init overwritten by spectral norm
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

    def __post_init__(self) -> None:
        """Every setting checked and converted (:func:`_checked`), at construction too."""
        for key, value in _checked({k: getattr(self, k) for k in _fields()}).items():
            object.__setattr__(self, key, value)
        if self.d_output_size < 2:  # BatchNorm needs 2 values a channel for one crop
            g, d = self.kernel_size, self.d_kernel_size
            raise ValueError(f"config crop_size: {self.crop_size} is too small for a {g}x{g} "
                             f"generator and a {d}x{d} discriminator (D's map must be 2x2 or more)")

    def replace(self, **changes: Any) -> KernelGANConfig:
        """A copy with ``changes``; unknown keys, wrong types and values out of range
        (non-integral ints, NaN/inf, values outside :data:`_RANGES`, bad layer sizes, a crop
        too small for the networks) raise ``ValueError`` naming the key."""
        return dataclasses.replace(self, **_checked(changes))

    def with_iters(self, iters: int) -> KernelGANConfig:
        """A copy that trains ``iters`` iterations, one run or each of K restarts alike."""
        return self.replace(iters=iters, restart_iters=iters)

    def run_iters(self, restarts: int = 1) -> int:
        """Iterations of each training of an image: ``iters`` for one run (K = 1), and
        ``min(iters, restart_iters)`` for each of K > 1 restarts.

        Why 1250 per restart (since 0.9.18; 1500 from 0.8, 3000 before): the learning rate
        falls from 2e-4 to 2e-5 at 750, and a kernel moves little after that (``--stop
        auto``'s study). The restarts' saved kernel at 1250 against 1500, paired on the same
        trainings (``bench/study_restart_iters.py``, 3 seeds): −0.013 ± 0.015 dB (x2) and
        +0.002 ± 0.014 (x4) on the development set's 60 runs per scale, −0.025 ± 0.018 and
        +0.035 ± 0.026 on the held-out check set's 36: mean changes far within the seed
        spread (0.18 / 0.49 dB against 0.17 / 0.48; #11's bar for a speed change), as many
        runs below the isotropic Gaussian, the worst group −0.46 / −0.40 (development) and
        −0.56 / −0.55 (check). At 0.83× the arithmetic, ``--restarts 4`` takes 1.40-1.84×
        one run's wall time against 1.71-2.19× (``bench/bench_restarts.py``). 1000 loses up
        to 1.1 dB on a group and adds a run below the Gaussian at x4.
        """
        return self.iters if restarts <= 1 else min(self.iters, self.restart_iters)

    def clean_n(self, restarts: int = 1) -> int:
        """The clean-up n of each training's raw kernel (:func:`kgengine.kernel.clean_kernel`):
        ``n_filtering`` for one run (K = 1), ``restart_n_filtering`` for each of K > 1
        restarts, which are then averaged (:func:`kgengine.consensus.combine`).

        Why a larger n for restarts (since 0.9.3): the clean-up trades the true kernel's tails
        against the raw kernel's noise floor, and averaging K restarts lowers that noise, so
        the mean can keep more of the tails. ``--restarts 4`` with 70 against 50, aligned
        kernel PSNR (``bench/study_restart_cleanup.py``, README): development set +0.35 ±
        0.12 dB (x2) and +0.59 ± 0.18 dB (x4), 60 runs each; held-out check set +0.72 ± 0.16
        and +1.01 ± 0.25, 36 each. It costs 2-3 more development runs below the isotropic
        Gaussian per 60 and a wider seed spread. One run keeps 50: a larger n gained less
        there and put more runs below the Gaussian.

        This is the n for wide kernels: with ``clean_release`` (since 0.9.11) the API lowers
        it where the LR spectrum looks sharp (:func:`kgengine.release.released_clean_n`) and
        reports the n applied as ``clean_n``.
        """
        return self.n_filtering if restarts <= 1 else self.restart_n_filtering

    def chooses_elongation(self) -> bool:
        """Whether the saved kernel's elongation is chosen (``elongation_choice`` with the
        width calibration and a shrink, ``elongation_power`` < 1); otherwise it is the
        shrunk kernel."""
        return self.width_calibration and self.elongation_choice and self.elongation_power < 1

    @staticmethod
    def from_stored(d: dict[str, Any]) -> KernelGANConfig:
        """The config of a stored :meth:`to_dict` (checked like :meth:`replace`). One stored
        before 0.8 has no ``restart_iters``: its restarts ran ``iters``, and so they stay; one
        stored before 0.9 has no ``elongation_power``: its kernels kept their elongation (1);
        one stored before 0.9.3 has no ``restart_n_filtering``: its restarts were cleaned
        with ``n_filtering``; one stored before 0.9.4 has no ``width_calibration``: its
        kernels kept their width; one stored before 0.9.5 has no ``elongation_choice``: its
        kernels kept the shrink; one stored before 0.9.6 has no ``spectral_mix``: 0; one
        stored before 0.9.7 has no ``spectral_confidence``: its confidence was the restarts'
        agreement (False); one stored before 0.9.8 has no ``width_refine``: its calibration
        kept the grid's point (False); one stored before 0.9.10 has no ``width_release``:
        its calibration had the full pull (False); one stored before 0.9.11 has no
        ``clean_release``: its clean-up kept the fixed n (False)."""
        return KernelGANConfig().replace(**{
            "restart_iters": d.get("iters", 3000), "elongation_power": 1.0,
            "width_calibration": False, "elongation_choice": False, "spectral_mix": 0.0,
            "spectral_confidence": False, "width_refine": False, "width_release": False,
            "clean_release": False,
            "restart_n_filtering": d.get("n_filtering", KernelGANConfig.n_filtering), **d})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    @staticmethod
    def authors() -> KernelGANConfig:
        """The authors' code's behaviour: defects 1-3 included (as the default), their
        kernel clean-up ``n_filtering = 40`` (the default has 50), the elongation kept
        (``elongation_power = 1``; the default has 0.4) and the width kept
        (``width_calibration = False``, so no ``elongation_choice``), no spectral mix
        (``spectral_mix = 0``) and, as kgengine before 0.9.7, the restarts' agreement as the
        confidence (``spectral_confidence = False``; the authors' code has none); as before
        0.9.8, no refined calibration (``width_refine = False``; it acts only with the
        calibration), as before 0.9.10 the calibration's full pull (``width_release =
        False``) and as before 0.9.11 the fixed clean-up n (``clean_release = False``)."""
        return KernelGANConfig._with_defects(True).replace(
            n_filtering=40, elongation_power=1.0, width_calibration=False,
            elongation_choice=False, spectral_mix=0.0, spectral_confidence=False,
            width_refine=False, width_release=False, clean_release=False)

    @staticmethod
    def defects_fixed() -> KernelGANConfig:
        """Defects 1-3 fixed (kgengine 0.1's default; measured worse, see the README)."""
        return KernelGANConfig._with_defects(False)

    @staticmethod
    def _with_defects(on: bool) -> KernelGANConfig:
        return KernelGANConfig(authors_bicubic_rgb_sum=on, authors_noise_accumulates=on,
                               authors_d_init_ignored=on)


_INF = math.inf
#: Allowed range of each numeric setting: (low, high, low allowed, high allowed). Sizes and
#: counts start at their structural minimum (d_layers: D's first conv, >= 1 [1x1 conv, BN,
#: ReLU] block, its last conv); the lr and the bicubic weight are divided by their decay rates.
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    **dict.fromkeys(("shave", "noise_std", "lambda_sum2one", "lambda_boundaries",
                     "lambda_bicubic", "lambda_sparse_end", "lambda_centralized_end",
                     "boundary_penalty", "boundary_sigma", "bic_loss_threshold", "bic_min",
                     "bic_constraints_below", "width_prior"), (0, _INF, True, False)),
    **dict.fromkeys(("iters", "restart_iters", "lr_decay_every", "lr_decay_factor",
                     "bic_decay_every", "bic_decay_rate", "n_filtering", "restart_n_filtering"),
                    (1, _INF, True, False)),  # sizes: structural maxima (0.9.28: huge hung)
    **dict.fromkeys(("g_channels", "d_channels"), (1, 1024, True, True)),
    "crop_size": (1, 2048, True, True), "grad_window": (1, 255, True, True),
    "d_kernel_size": (1, 63, True, True),
    **dict.fromkeys(("lr_g", "lr_d", "g_init_gain", "d_init_gain", "sparse_power"),
                    (0, _INF, False, False)),
    **dict.fromkeys(("grad_percent", "elongation_power", "spectral_mix"), (0, 1, True, True)),
    **dict.fromkeys(("beta1", "beta2"), (0, 1, True, False)),
    "d_layers": (3, 64, True, True),
}


def _fields() -> dict[str, Any]:
    """Each setting's name and default (``extra`` left out)."""
    return {f.name: f.default for f in dataclasses.fields(KernelGANConfig) if f.name != "extra"}


def _in_range(key: str, number: float) -> None:
    """Raise unless ``number`` lies in ``key``'s range (:data:`_RANGES`; none: any number)."""
    low, high, low_ok, high_ok = _RANGES.get(key, (-_INF, _INF, True, True))
    if (low <= number if low_ok else low < number) and (
            number <= high if high_ok else number < high):
        return
    allowed = ((f"at least {low:g}" if low_ok else f"greater than {low:g}") if high == _INF
               else f"in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}")
    raise ValueError(f"config {key}: must be {allowed}, got {number!r}")


def _checked(changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` with values converted to the fields' types, each checked.

    Raises:
        ValueError: an unknown key; a bool not true/false/1/0; an int field given ``2.7``; a
            float field given NaN/inf or beyond float32; a number outside its range
            (:data:`_RANGES`); bad ``g_kernel_sizes`` (:func:`_kernel_sizes`).
    """
    defaults = _fields()
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in defaults:  # with the nearest keys (lr_G: lr_g)
            near = difflib.get_close_matches(key.lower(), defaults, 3, 0.6)
            raise ValueError(f"unknown config key {key!r}" + (
                f"; did you mean {', '.join(near)}?" if near else ""))
        default = defaults[key]
        if isinstance(default, bool):
            value = _bool(key, value)
        elif isinstance(default, tuple):
            value = _kernel_sizes(key, value)
        elif isinstance(default, int):
            value = _int(key, value)
        else:
            value = _float(key, value)
        out[key] = value
    return out


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise ValueError(f"config {key}: expected a bool, got {value!r}")
    return value


def _number(key: str, value: Any, kind: str) -> float:
    """``value`` (a number or its text) as a float; bools and other types are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | str):
        raise ValueError(f"config {key}: expected {kind}, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"config {key}: expected {kind}, got {value!r}") from None
    if not abs(number) <= 3.4e38:  # NaN, inf, or beyond float32 (1e39 trained as inf)
        raise ValueError(f"config {key}: expected a finite {kind} (float32), got {value!r}")
    return number


def _int(key: str, value: Any) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    else:
        as_float = _number(key, value, "int")
        if not as_float.is_integer():
            raise ValueError(f"config {key}: expected an integer, got {value!r}")
        number = int(as_float)
    _in_range(key, number)
    return number


def _float(key: str, value: Any) -> float:
    number = _number(key, value, "float")
    _in_range(key, number)
    return number


def _kernel_sizes(key: str, value: Any) -> tuple[int, ...]:
    """G's layer sizes: odd, some > 1 first, then at least one 1x1 layer (e.g. 7,5,3,1,1,1)."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        sizes = tuple(_int(key, v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"config {key}: expected odd sizes like 7,5,3,1,1,1, got {value!r}"
                         ) from None
    spatial = [s for s in sizes if s > 1]
    ok = (all(s >= 1 and s % 2 == 1 for s in sizes) and spatial and sizes[-1] == 1
          and list(sizes[: len(spatial)]) == spatial)
    if not ok:
        raise ValueError(f"config {key}: expected odd sizes, the larger ones first and at "
                         f"least one 1 at the end (like 7,5,3,1,1,1), got {value!r}")
    return sizes


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``["key=value", ...]`` CLI overrides (checked by :meth:`KernelGANConfig.replace`)."""
    bad = [item for item in items if "=" not in item]
    if bad:
        raise ValueError(f"config override {bad[0]!r}: expected key=value")
    return {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in items)}
