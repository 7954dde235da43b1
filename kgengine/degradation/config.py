"""``PipelineConfig``: the declarative degradation pipeline, its TOML file and CLI overrides.

The pipeline (:mod:`kgengine.degradation.pipeline`) always starts with the pool kernel and
the strided downscale (kgengine's convention, ``LR = (HR ⋆ k)↓s``); then come the LR-side
stages of :data:`STAGES`, each applied to an image with its probability ``<stage>_prob``
(0 = off, the default: ``PipelineConfig()`` is the kernel-only pipeline), in the order
``order`` or, with ``shuffle``, in a per-image random permutation of it:

- ``second``: second round: blur with a second kernel (a random anisotropic Gaussian of
  ``second_size``, or a pool kernel) at LR resolution, then resize by ``r`` and back;
- ``gaussian``: ``x + σ·n``, ``n ~ N(0, 1)`` (per channel, or one ``n`` for all channels
  with probability ``gray_prob``), then clip to [0, 1];
- ``poisson``: ``Poisson(peak · x) / peak`` (shot noise, ``peak`` photons at white), clip;
- ``real``: ``x + a·patch`` with a real-noise patch from ``kgengine noise collect``, clip;
- ``jpeg``: 8-bit round trip through Pillow's JPEG at a random quality.

Ranges are ``(lo, hi)`` pairs drawn uniformly (``poisson_peak`` log-uniformly; ``jpeg_quality``
as integers, ``hi`` included). A TOML file holds any subset of the fields at its top level::

    order = ["second", "gaussian", "poisson", "jpeg"]
    shuffle = false
    gaussian_prob = 1.0
    gaussian_sigma = [0.0, 0.04]
    jpeg_prob = 1.0
    jpeg_quality = [30, 95]

Unknown keys and wrong types fail with one line naming the key (:class:`KGEngineError`),
and so does a stage with a positive probability that ``order`` leaves out (the CLI flags
that turn a stage on add it at the end of ``order`` when it is missing). ``poisson_peak``
is at most :data:`MAX_PEAK` (NumPy's Poisson sampler refuses larger means), ``second_size``
at most :data:`MAX_SECOND_SIZE`, ``second_resize`` at most :data:`MAX_RESIZE` and
``gaussian_sigma`` at most 1 (one image range): larger values only exhaust memory or
saturate the image. ``second_sigma`` is at least :data:`MIN_SECOND_SIGMA` (a narrower
Gaussian is a delta, and a degenerate one cannot be built). Every number is finite.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgengine.errors import KGEngineError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: The LR-side stages, in their default order.
STAGES = ("second", "gaussian", "poisson", "real", "jpeg")
#: ``F.interpolate`` modes of the second round's resize.
RESIZE_MODES = ("bilinear", "bicubic", "area")
SECOND_KERNELS = ("gaussian", "pool")
#: Smallest ``poisson_peak`` (0.9.27: 1e-50 rounded to 0 in float32 and gave black LR).
MIN_PEAK = 1e-3
#: Largest ``real_scale`` (patch amplitude factor; 0.9.27: 3.5e38 gave NaN).
MAX_REAL_SCALE = 100.0
#: Largest ``poisson_peak`` (photons at white).
MAX_PEAK = 1e12
#: Largest ``second_size`` (LR pixels) and ``second_resize`` factor.
MAX_SECOND_SIZE = 63
MAX_RESIZE = 4.0
#: Smallest ``second_sigma`` (LR pixels). Any Gaussian below about 0.2 px is already a
#: delta (its neighbours weigh exp(-1/(2·0.2²)) ≈ 4e-6 of the centre), so this floor only
#: refuses what cannot be built: a far smaller sigma underflows to a singular covariance
#: (:func:`kgengine.kernel.anisotropic_gaussian`). The default range is 0.2-1.5
#: (Real-ESRGAN's second blur).
MIN_SECOND_SIGMA = 0.01


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of the degradation pipeline, with its default (module docstring).

    Probabilities are in [0, 1]; sigmas and noise in [0, 1] image units; the second
    round's sigmas in LR pixels.
    """

    order: tuple[str, ...] = STAGES  # LR-side stages after kernel + downscale
    shuffle: bool = False  # a per-image random permutation of ``order``
    # --- second round: blur (second kernel) then resize by r and back ---
    second_prob: float = 0.0
    second_kernel: str = "gaussian"  # "gaussian" (random anisotropic) or "pool"
    second_sigma: tuple[float, float] = (0.2, 1.5)  # σ of each Gaussian axis, LR pixels
    second_size: int = 7  # odd size of the random Gaussian
    second_resize: tuple[float, float] = (0.5, 1.0)  # r: LR -> round(r·h, r·w) -> (h, w)
    resize_modes: tuple[str, ...] = RESIZE_MODES  # one drawn per image
    # --- additive Gaussian noise ---
    gaussian_prob: float = 0.0
    gaussian_sigma: tuple[float, float] = (0.0, 0.04)
    gray_prob: float = 0.0  # same noise on every channel (gaussian and poisson)
    # --- Poisson (shot) noise ---
    poisson_prob: float = 0.0
    poisson_peak: tuple[float, float] = (30.0, 1000.0)  # photons at white, log-uniform
    # --- real-noise patches (``kgengine noise collect``) ---
    real_prob: float = 0.0
    real_noise: str = ""  # folder (or .npy) of the patches
    real_scale: tuple[float, float] = (1.0, 1.0)  # patch amplitude factor a
    # --- JPEG ---
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> PipelineConfig:
        """A copy with ``changes`` (strings are parsed as on the command line: ranges as
        ``"30-95"``, ``"30,95"`` or one value; lists as ``"a,b"``); unknown keys and bad
        values raise :class:`KGEngineError`."""
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON/TOML values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """The config of :meth:`to_dict` (or any subset of the fields) over the defaults."""
        return cls().replace(**data)

    def active(self) -> tuple[str, ...]:
        """The stages of ``order`` whose probability is positive, in order."""
        return tuple(s for s in self.order if getattr(self, f"{s}_prob") > 0)


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(PipelineConfig)}


def _coerce(key: str, value: Any) -> Any:
    """``value`` converted to the type of field ``key`` (see :meth:`PipelineConfig.replace`)."""
    if key not in _fields():
        raise KGEngineError(f"pipeline: unknown key {key!r}; known: {', '.join(_fields())}")
    default = getattr(PipelineConfig(), key)
    try:
        if isinstance(default, bool):
            return _to_bool(value)
        if key in ("order", "resize_modes"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(v).strip() for v in items if str(v).strip())
        if isinstance(default, tuple):
            return _to_range(value, type(default[0]))
        if isinstance(default, str):
            if not isinstance(value, str | os.PathLike):
                raise TypeError
            return str(value)
        if isinstance(value, bool):
            raise TypeError
        number = type(default)(value)
        if isinstance(default, int) and number != float(value):
            raise ValueError
        return number
    except (TypeError, ValueError, OverflowError):  # int(inf): OverflowError
        raise KGEngineError(
            f"pipeline: {key} expects {_kind(default)}, got {value!r}"
        ) from None


def _kind(default: Any) -> str:
    if isinstance(default, tuple) and isinstance(default[0], int | float):
        return f"a range lo-hi of {type(default[0]).__name__}"
    if isinstance(default, tuple):
        return "a list of names"
    return type(default).__name__


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise TypeError


def _to_range(value: Any, kind: type) -> tuple:
    """``"lo-hi"``, ``"lo,hi"``, ``"x"``, ``[lo, hi]`` or a number -> ``(lo, hi)`` of ``kind``."""
    if isinstance(value, str):
        parts = _split_range(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        parts = [value]
    else:
        parts = list(value)
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or any(isinstance(p, bool) for p in parts):
        raise ValueError
    values = tuple(float(p) for p in parts)
    if kind is int and any(not v.is_integer() for v in values):
        raise ValueError
    return tuple(kind(v) for v in values)


def _split_range(text: str) -> list[str]:
    """``"lo,hi"`` or ``"lo-hi"`` -> ``[lo, hi]``, ``"x"`` -> ``[x]`` (texts, stripped).

    Signs are kept: the ``-`` between two bounds is the first one that follows a digit, a
    point or a letter other than an exponent's ``e``, so ``"-1-2"`` is ``["-1", "2"]`` (then
    refused as a negative bound) and ``"1e-3-0.1"`` is ``["1e-3", "0.1"]``. An empty bound
    (``"0.1-"``) stays empty, and ``float`` refuses it.
    """
    if "," in text:
        return [p.strip() for p in text.split(",")]
    s = text.strip()
    for i in range(1, len(s)):
        before = s[:i].rstrip()
        if s[i] == "-" and before and before[-1] not in "eE+-":
            return [before, s[i + 1:].strip()]
    return [s]


def _validate(cfg: PipelineConfig) -> None:
    """Raise :class:`KGEngineError` for the first bad field of ``cfg``."""
    def bad(msg: str) -> KGEngineError:
        return KGEngineError(f"pipeline: {msg}")

    for stage in cfg.order:
        if stage not in STAGES:
            raise bad(f"order: unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if len(set(cfg.order)) != len(cfg.order):
        raise bad(f"order: a stage is listed twice in {list(cfg.order)}")
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name.endswith("_prob") and not 0.0 <= v <= 1.0:
            raise bad(f"{f.name} must be in [0, 1], got {v}")
        if isinstance(v, tuple) and v and isinstance(v[0], int | float):
            if not (len(v) == 2 and all(math.isfinite(x) and x >= 0 for x in v) and v[0] <= v[1]):
                raise bad(f"{f.name} must be a range lo-hi with 0 <= lo <= hi, got {v}")
    if cfg.second_kernel not in SECOND_KERNELS:
        raise bad(f"second_kernel must be one of {SECOND_KERNELS}, got {cfg.second_kernel!r}")
    if not 1 <= cfg.second_size <= MAX_SECOND_SIZE or cfg.second_size % 2 == 0:
        raise bad(f"second_size must be odd, 1-{MAX_SECOND_SIZE}, got {cfg.second_size}")
    if cfg.second_resize[1] > MAX_RESIZE:
        raise bad(f"second_resize must be at most {MAX_RESIZE:g}, got {cfg.second_resize}")
    if cfg.gaussian_sigma[1] > 1.0:
        raise bad(f"gaussian_sigma must be at most 1 (image range 0-1), got {cfg.gaussian_sigma}")
    if cfg.second_sigma[0] < MIN_SECOND_SIGMA:
        raise bad(f"second_sigma must be at least {MIN_SECOND_SIGMA:g} (LR pixels), got "
                  f"{cfg.second_sigma}")
    if cfg.second_resize[0] <= 0:
        raise bad("second_resize must be > 0")
    if cfg.poisson_peak[0] < MIN_PEAK:  # below it float32 rounds the peak to 0: 0/0, black
        raise bad(f"poisson_peak must be at least {MIN_PEAK:g}, got {cfg.poisson_peak}")
    if cfg.real_scale[1] > MAX_REAL_SCALE:
        raise bad(f"real_scale must be at most {MAX_REAL_SCALE:g}, got {cfg.real_scale}")
    if cfg.poisson_peak[1] > MAX_PEAK:
        raise bad(f"poisson_peak must be at most {MAX_PEAK:g}, got {cfg.poisson_peak}")
    for stage in STAGES:
        prob = getattr(cfg, f"{stage}_prob")
        if prob > 0 and stage not in cfg.order:
            raise bad(f"{stage}_prob is {prob} but order {list(cfg.order)} has no "
                      f"{stage!r}; add it to order")
    if not cfg.resize_modes or any(m not in RESIZE_MODES for m in cfg.resize_modes):
        raise bad(f"resize_modes must be a non-empty subset of {RESIZE_MODES}")
    if not (1 <= cfg.jpeg_quality[0] and cfg.jpeg_quality[1] <= 100):
        raise bad(f"jpeg_quality must be within 1-100, got {cfg.jpeg_quality}")
    if cfg.real_prob > 0 and not cfg.real_noise:
        raise bad("real_prob > 0 needs real_noise (a folder from `kgengine noise collect`)")


def load_config(path: str | os.PathLike) -> PipelineConfig:
    """Read a TOML file of :class:`PipelineConfig` fields (module docstring).

    A relative ``real_noise`` path is taken relative to the TOML file's folder.

    Raises:
        KGEngineError: no such file, invalid TOML, unknown key or bad value (naming the file).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KGEngineError(f"{path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KGEngineError(f"{path}: not valid TOML ({exc})") from None
    if isinstance(data.get("real_noise"), str) and data["real_noise"] \
            and not Path(data["real_noise"]).is_absolute():
        data["real_noise"] = str(path.parent / data["real_noise"])
    try:
        return PipelineConfig.from_dict(data)
    except KGEngineError as exc:
        raise KGEngineError(f"{path}: {exc}") from None


def build_config(
    base: PipelineConfig | str | os.PathLike | None = None, *, noise: float = 0.0,
    noise_range: str | None = None, poisson: bool = False, real_noise: str | None = None,
    second_order: bool = False, jpeg: str | None = None, shuffle: bool = False,
    sets: dict[str, Any] | None = None,
) -> PipelineConfig:
    """A config from a TOML file (or config, or the defaults), then the CLI flags, then
    ``sets`` (``--set key=value``), each overriding the previous.

    Flags: ``noise`` σ (> 0: Gaussian noise of exactly σ) or ``noise_range`` ``"lo-hi"``
    (not both); ``poisson``; ``real_noise`` folder; ``second_order``; ``jpeg`` ``"lo-hi"``;
    ``shuffle``. Each turns its stage on (probability 1; added at the end of ``order`` when
    the base leaves it out).

    Raises:
        KGEngineError: as :func:`load_config`, or both ``noise`` and ``noise_range``.
    """
    if noise > 0 and noise_range:
        raise KGEngineError("give at most one of --noise and --noise-range")
    cfg = base if isinstance(base, PipelineConfig) else (
        load_config(base) if base is not None else PipelineConfig())
    changes: dict[str, Any] = {}
    if noise > 0 or noise_range:
        changes.update(gaussian_prob=1.0, gaussian_sigma=noise_range or (noise, noise))
    if poisson:
        changes["poisson_prob"] = 1.0
    if real_noise:
        changes.update(real_prob=1.0, real_noise=str(real_noise))
    if second_order:
        changes["second_prob"] = 1.0
    if jpeg:
        changes.update(jpeg_prob=1.0, jpeg_quality=jpeg)
    if shuffle:
        changes["shuffle"] = True
    turned_on = [k[:-5] for k, v in changes.items() if k.endswith("_prob") and v > 0]
    missing = tuple(s for s in STAGES if s in turned_on and s not in cfg.order)
    if missing:
        changes["order"] = cfg.order + missing
    return cfg.replace(**changes).replace(**(sets or {}))


def parse_sets(items: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` -> dict (checked later by :meth:`PipelineConfig.replace`)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise KGEngineError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out
