"""The pool's job settings: stored in the manifest by the first run, fixed for the pool's life.

What a pool's kernels depend on (job seed, x4, dtype, mode, restarts, the stop rule and the
full training config) is stored as JSON in the manifest; settings stored before ``restarts``
or ``stop`` existed read as ``restarts = 1`` and ``stop = "full"``; a new pool stops each
image by the ``auto`` rule unless told ``full`` (since 0.9.12). A later run takes the
stored value of every option it does not give and refuses one that differs (results would
mix): :func:`resolve_settings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from kgengine.config import KernelGANConfig
from kgengine.errors import KGEngineError
from kgengine.stopping import StopRule, stop_rule_of, stop_setting

#: Training precisions a pool may use.
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Generator computations a pool may use (see :func:`kgengine.api.estimate_kernels`).
MODES = ("composed", "layers")


@dataclass(frozen=True)
class FarmSettings:
    """What a pool's kernels depend on; stored in the manifest, fixed for the pool's life."""

    seed: int = 0
    x4: bool = False
    dtype: str = "float32"
    mode: str = "composed"
    config: KernelGANConfig = field(default_factory=KernelGANConfig)
    #: trainings per image combined into its kernel (:func:`kgengine.api.estimate_kernels`)
    restarts: int = 1
    #: "full" (every iteration) or a stop rule's fields (:func:`kgengine.stopping.stop_setting`);
    #: a new pool's default is the ``auto`` rule's (since 0.9.12)
    stop: Any = field(default_factory=lambda: stop_setting(StopRule()))

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored in the manifest (plain JSON values, tuples as lists)."""
        d = {"seed": self.seed, "x4": self.x4, "dtype": self.dtype, "mode": self.mode,
             "restarts": self.restarts, "stop": self.stop, "config": self.config.to_dict()}
        return json.loads(json.dumps(d))  # tuples -> lists, as stored

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FarmSettings:
        """The inverse of :meth:`to_dict` (a dict without ``restarts`` or ``stop``, from an
        older pool, means 1 and "full"; a config without ``restart_iters``, ``iters``).

        Raises:
            KGEngineError: the settings are not usable (a missing key, a value of the wrong
                type, a NaN/inf config value written by an older kgengine, ...).
        """
        try:
            return FarmSettings(int(d["seed"]), bool(d["x4"]), str(d["dtype"]),
                                str(d["mode"]), KernelGANConfig.from_stored(d["config"]),
                                int(d.get("restarts", 1)), stored_stop(d.get("stop", "full")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KGEngineError(f"the pool's stored settings are not usable ({exc}); "
                                "use a new pool folder") from None

    @property
    def torch_dtype(self) -> torch.dtype:
        """``dtype`` as a torch dtype."""
        return DTYPES[self.dtype]


def resolve_settings(stored: dict[str, Any] | None, *, seed: int | None = None,
                     x4: bool | None = None, iters: int | None = None,
                     config: KernelGANConfig | None = None,
                     overrides: dict[str, Any] | None = None, dtype: str | None = None,
                     mode: str | None = None, restarts: int | None = None,
                     stop: str | None = None) -> FarmSettings:
    """The job settings: stored ones (or defaults) with the given options applied.

    Args:
        stored: the manifest's settings (:meth:`FarmSettings.to_dict`), None for a new pool.
        seed, x4, iters, config, dtype, mode, restarts, stop ("full" or "auto"): the options
            given; None = the stored value.
        overrides: config fields to change (``--set``), applied to ``config`` or, without
            it, to the stored config, before ``iters``.
    Raises:
        KGEngineError: an unknown ``dtype`` or ``stop``, ``restarts < 1``, or a given option
            differs from the stored one (naming each, with both values).
    """
    base = FarmSettings.from_dict(stored) if stored is not None else FarmSettings()
    cfg = config if config is not None else base.config
    try:
        cfg = cfg.replace(**overrides) if overrides else cfg
        for key in ("iters", "restart_iters"):  # --iters N sets both, as estimate's
            if iters is not None and key in (overrides or {}) and getattr(cfg, key) != iters:
                raise KGEngineError(f"--iters {iters} and --set {key}={getattr(cfg, key)} "
                                    "disagree: give one of them")
        cfg = cfg.with_iters(iters) if iters is not None else cfg
    except ValueError as exc:
        raise KGEngineError(str(exc)) from None
    if dtype is not None and dtype not in DTYPES:
        raise KGEngineError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    if restarts is not None and restarts < 1:
        raise KGEngineError(f"restarts must be at least 1, got {restarts}")
    if stop is not None and stop not in ("full", "auto"):
        raise KGEngineError(f"stop: expected full or auto, got {stop!r}")
    want = FarmSettings(
        base.seed if seed is None else int(seed), base.x4 if x4 is None else bool(x4),
        base.dtype if dtype is None else dtype, base.mode if mode is None else mode, cfg,
        base.restarts if restarts is None else int(restarts),
        base.stop if stop is None else stored_stop(stop))
    if stored is not None:
        check_same(base, want)
    return want


def check_same(pool: FarmSettings, given: FarmSettings) -> None:
    """Raise if ``given`` differs from the ``pool``'s stored settings.

    Raises:
        KGEngineError: ``"... seed (pool: 7, given: 8), config.iters (pool: ..."``.
    """
    old, new = pool.to_dict(), given.to_dict()
    diff = [k for k in ("seed", "x4", "dtype", "mode", "restarts", "stop") if old[k] != new[k]]
    one_run = old["restarts"] == new["restarts"] == 1  # then the restart_* keys do not matter
    diff += [f"config.{k}" for k in old["config"] if old["config"][k] != new["config"].get(k)
             and not (one_run and k in ("restart_iters", "restart_n_filtering"))]
    if diff:
        shown = ", ".join(f"{k} (pool: {_get(old, k)}, given: {_get(new, k)})" for k in diff)
        raise KGEngineError(
            f"this pool folder was started with other settings: {shown}; "
            "rerun with the pool's settings (or leave those options out) or use a new folder"
        )


def stored_stop(stop: Any) -> Any:
    """"full", "auto" or a stored rule's fields -> the stored form ("full" or the fields).

    Raises:
        ValueError: anything else (a bad option value or a damaged stored rule).
    """
    return stop_setting(stop_rule_of(stop))


def check_mode(settings: FarmSettings) -> None:
    """Raise :class:`KGEngineError` unless ``settings.mode`` is one of :data:`MODES`."""
    if settings.mode not in MODES:
        raise KGEngineError(f"mode: expected composed or layers, got {settings.mode!r}")


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d
