"""The Python API: ``estimate_kernel`` (one image) and ``estimate_kernels`` (a batch).

>>> from kgengine import estimate_kernel                              # doctest: +SKIP
>>> res = estimate_kernel("photo.png", x4=True, seed=0)               # doctest: +SKIP
>>> res.kernel_x2.shape, res.kernel_x4.shape, res.report["ms_per_iter"]  # doctest: +SKIP
((13, 13), (37, 37), 6.1)
"""

from __future__ import annotations

import hashlib
import numbers
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgengine.compiled import backends_used
from kgengine.confidence import agreement_score, confidence_of
from kgengine.config import MAX_SEED, KernelGANConfig
from kgengine.consensus import RULES, Consensus, combine
from kgengine.devices import resolve_device
from kgengine.errors import TrainingDivergedError
from kgengine.host_threads import map_images
from kgengine.imageio import check_array, read_image
from kgengine.kernel import (
    analytic_x4,
    center_kernel,
    center_of_mass,
    clean_kernel,
    collapsed,
    principal_axes,
    shrink_elongation,
)
from kgengine.prepare import min_image_side, prepare_image
from kgengine.release import released_clean_n, released_prior
from kgengine.spectral import gaussian_of, mix_covariance, spectral_covariance
from kgengine.split_trainer import make_trainer
from kgengine.stopping import StopRule, stop_rule_of, stop_setting
from kgengine.sysinfo import machine_info
from kgengine.width import MIN_SIDE as WIDTH_MIN_SIDE
from kgengine.width import calibrate_width, choose_elongation

ImageLike = str | os.PathLike | np.ndarray


@dataclass
class EstimateResult:
    """One image's estimate.

    Attributes:
        name: image stem (or ``image<i>`` for arrays).
        kernel_x2: (K, K) float64, sums to 1, centred at (K//2, K//2) (kgengine convention).
        kernel_x4: (3K-2, 3K-2) float64 analytic x4 kernel, or None.
        report: JSON-able dict (config, seed, versions, device, timings, losses, kernel stats).
        generator_weights: the six trained G weights, (out, in, k, k) float32 each.
        raw_kernel: (K, K) float64 composed kernel of the final G before clean-up.
            With restarts, both come from the medoid restart.
        confidence: in [0, 1], how far to trust the kernel: the agreement of KernelGAN's
            kernel with the LR spectrum's Gaussian (:mod:`kgengine.confidence`; None where
            the image is too small for a spectrum); with ``spectral_confidence=False``, the
            agreement of the restarts (:mod:`kgengine.consensus`; None for a single run).
    """

    name: str
    kernel_x2: np.ndarray
    kernel_x4: np.ndarray | None
    report: dict[str, Any]
    generator_weights: list[np.ndarray] = field(repr=False)
    raw_kernel: np.ndarray = field(repr=False)
    confidence: float | None = None


def finish_kernel(raw: np.ndarray, n_filtering: int) -> np.ndarray:
    """Raw composed kernel -> saved kernel: :func:`clean_kernel` then :func:`center_kernel`."""
    return center_kernel(clean_kernel(raw, n_filtering))


def finish_restarts(raws: Sequence[np.ndarray], n_filtering: int, rule: str = "mean",
                    restarts: int | None = None, elongation_power: float = 1.0
                    ) -> tuple[np.ndarray, list[np.ndarray], Consensus | None]:
    """The raw kernels of one image's finite restarts -> its saved x2 kernel.

    Each raw kernel is finished (:func:`finish_kernel`). A single run (``restarts`` = 1;
    default ``len(raws)``) gives its finished kernel; with restarts, the
    :func:`kgengine.consensus.combine` of the finished kernels by ``rule`` (also when only
    one of them is left finite). Last, :func:`kgengine.kernel.shrink_elongation` by
    ``elongation_power`` (1: unchanged; the config's default is 0.4).

    Returns:
        (kernel (K, K) float64, the K finished kernels (before the shrink), the consensus or
        None for K = 1).
    """
    finished = [finish_kernel(r, n_filtering) for r in raws]
    if (restarts if restarts is not None else len(raws)) == 1:
        return shrink_elongation(finished[0], elongation_power), finished, None
    cons = combine(finished, rule)
    return shrink_elongation(cons.kernel, elongation_power), finished, cons


def kernel_stats(k: np.ndarray) -> dict[str, Any]:
    """Size, sum, centre of mass and second-moment axes of a kernel, for reports.

    ``axes``: :func:`kgengine.kernel.principal_axes` as ``var_long``, ``var_short`` (px² in
    the kernel's own grid) and ``theta_deg`` (the long axis, counter-clockwise from the column
    axis, in [0, 180)).
    """
    cy, cx = center_of_mass(k)
    v1, v2, theta = principal_axes(k)
    return {"size": list(k.shape), "sum": float(k.sum()), "center_of_mass": [cy, cx],
            "axes": {"var_long": v1, "var_short": v2, "theta_deg": float(np.degrees(theta))}}


def _device_name(dev: torch.device) -> str:
    return f"{dev} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else str(dev)


def _load(image: ImageLike, index: int, min_size: int = 0) -> tuple[str, np.ndarray]:
    if isinstance(image, np.ndarray):
        return f"image{index}", check_array(image, f"image{index}")
    if not isinstance(image, str | bytes | os.PathLike):
        raise TypeError(f"image{index}: expected a path or an (H,W,3) NumPy array, got "
                        f"{type(image).__name__}")
    path = Path(os.fsdecode(image))
    return path.stem, read_image(path, min_size)  # a small file is refused naming its path


def _is_int(value: object, low: int) -> bool:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return ok and low <= value <= MAX_SEED


def _check_args(images: list, seeds: list, names: Sequence[str] | None, restarts: int,
                on_diverge: str, dtype: torch.dtype, config: object, rule: str, x4: object
                ) -> None:
    """One-line errors for the arguments of :func:`estimate_kernels` it cannot use."""
    if not images:
        raise ValueError("images: no images given")
    for what, got in (("seeds", seeds), ("names", names)):
        if got is not None and len(got) != len(images):
            raise ValueError(f"{what}: {len(got)} for {len(images)} images (one per image)")
    bad = [s for s in seeds if not _is_int(s, 0)]
    if bad:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {bad[0]!r}")
    if not _is_int(restarts, 1):
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
    if on_diverge not in ("raise", "return"):
        raise ValueError(f"on_diverge: expected 'raise' or 'return', got {on_diverge!r}")
    if not isinstance(x4, bool | np.bool_):  # "no" was true (0.9.28)
        raise TypeError(f"x4: expected True or False, got {x4!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    if config is not None and not isinstance(config, KernelGANConfig):
        raise TypeError(f"config: expected a KernelGANConfig, got {type(config).__name__}")


#: peak bytes of reading one image (a guess: a file's size bounds its pixels loosely), per
#: pixel of :func:`prepare_image` (103 measured with tracemalloc on a 12 MP image), and of one
#: image's post-processing (its spectra read at most 1024×1024 pixels: about 0.3 GB), for
#: :func:`kgengine.host_threads.map_images`' memory cap
READ_BYTES, PREP_BYTES_PER_PIXEL, POST_BYTES = 50 << 20, 110, 400 << 20


def estimate_kernels(
    images: Sequence[ImageLike],
    *,
    seeds: Sequence[int] | None = None,
    seed: int = 0,
    x4: bool = False,
    iters: int | None = None,
    device: str = "auto",
    config: KernelGANConfig | None = None,
    dtype: torch.dtype = torch.float32,
    mode: str = "composed",
    callback: Callable[[int], None] | None = None,
    names: Sequence[str] | None = None,
    on_diverge: str = "raise",
    restarts: int = 1,
    rule: str = "mean",
    stop: str | dict | StopRule = "auto",
) -> list[EstimateResult | TrainingDivergedError]:
    """Estimate the x2 (and x4) SR kernels of B images, trained together in one batch.

    Args:
        images: paths or (H, W, 3) float arrays in [0, 1] (LR images).
        seeds: one seed per image (default ``seed + i``); results do not depend on batching.
        x4: the images are x4 LR: also derive the x4 kernel; the x2 kernel's post-processing
            then reads the spectrum with the x4 model (another kernel than ``x4=False``).
        iters: iterations of each training, one run or each restart (default:
            ``config.run_iters(restarts)``, 3000 for one run and 1250 for each restart).
        device: "auto", "cpu", "cuda" or "cuda:N".
        config: a :class:`KernelGANConfig` (default ``KernelGANConfig()``: the authors'
            training, defects 1-3 included, and kgengine's post-processing).
        dtype: training precision (float32; float64 for exactness tests).
        mode: "composed" (fast) or "layers" (the authors' layer-by-layer computation).
        callback: called with the number of finished iterations every 50 iterations.
        names: output names (default: file stems, ``image<i>`` for arrays).
        on_diverge: "raise" (default) or "return": a diverged image's slot then holds the
            :class:`TrainingDivergedError` instead of a result; the others are unaffected.
        restarts: K ≥ 1 trainings per image (seeds :func:`restart_seed` (seed, r)), all in
            one batch, combined by :func:`kgengine.consensus.combine` with ``rule``. The
            result's ``confidence``: see :class:`EstimateResult`.
        stop: "auto" (the default since 0.9.12: the default :class:`StopRule`, stop an image
            once its kernel stopped changing; measured to cost no accuracy in
            ``bench/study_stop.py``), "full" (every iteration) or a :class:`StopRule`. Per
            image, independent of the batch; the report's ``iters_used`` says where each
            result comes from.
    Raises:
        BadImageError: an image cannot be used (the message names it).
        TrainingDivergedError: NaN/inf appeared for some image (in every restart).
        ValueError, TypeError: an argument that cannot be used (one line naming it).
    """
    if isinstance(images, str | bytes | os.PathLike) or getattr(images, "ndim", 4) < 4:
        raise TypeError("images: expected a list of images (estimate_kernel takes one)")
    images = list(images)
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(len(images))]
    _check_args(images, seeds, names, restarts, on_diverge, dtype, config, rule, x4)
    cfg = config or KernelGANConfig()
    if iters is not None:
        cfg = cfg.with_iters(iters)
    stop_rule = stop_rule_of(stop)
    # per-image host work on the host's threads (kgengine.host_threads), capped by memory
    loaded = map_images(lambda item: _load(item[1], item[0], min_image_side(cfg)),
                        list(enumerate(images)),
                        bytes_each=READ_BYTES)
    if names is not None:
        loaded = [(n, arr) for n, (_, arr) in zip(names, loaded, strict=True)]
    prepared = map_images(lambda item: prepare_image(item[1], cfg, item[0]), loaded,
                          bytes_each=PREP_BYTES_PER_PIXEL * max(a.size // 3 for _, a in loaded))
    run_seeds = [restart_seed(s, r) for s in seeds for r in range(restarts)]
    dev = resolve_device(device)
    t0 = time.perf_counter()
    # on CPU the batch trains as parts, one per host thread (kgengine.split_trainer)
    trainer = make_trainer([p for p in prepared for _ in range(restarts)], run_seeds, cfg, dev,
                           dtype, mode)
    setup_s = time.perf_counter() - t0
    n_iters = cfg.run_iters(restarts)
    train_s = trainer.run(n_iters, callback, stop=stop_rule)
    run = {"iters": n_iters, "batch_size": len(run_seeds), "mode": mode,
           "device": _device_name(dev), "dtype": str(dtype).replace("torch.", ""),
           "wall_s": setup_s + train_s, "train_s": train_s,
           "ms_per_iter": 1000.0 * train_s / max(trainer.iteration, 1), "config": cfg.to_dict(),
           "stop": stop_setting(stop_rule), "cuda_graph": trainer.graph_status,
           "train_parts": getattr(trainer, "n_parts", 1), "backends": backends_used(dev),
           "environment": machine_info(str(dev))}
    final = _Final(trainer.final_kernels(), trainer.final_finite(),
                   trainer.final_losses(), run_seeds, trainer.final_weights(),
                   trainer.iters_used)
    out = map_images(lambda i: _image_result(final, list(range(i * restarts, (i + 1) * restarts)),
                                             *loaded[i], seeds[i], run, x4, cfg, rule),
                     range(len(loaded)), bytes_each=POST_BYTES)
    for res in out:
        if isinstance(res, TrainingDivergedError) and on_diverge == "raise":
            raise res
    return out


def restart_seed(seed: int, r: int) -> int:
    """Seed of restart ``r`` of an image with seed ``seed``: ``seed`` itself for r = 0, else
    the first 7 bytes of ``sha256("kgengine-restart:<seed>:<r>")`` (independent streams)."""
    if r == 0:
        return int(seed)
    digest = hashlib.sha256(f"kgengine-restart:{int(seed)}:{r}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


@dataclass
class _Final:
    """What a finished batch leaves: raw kernels (N, K, K), finite flags, losses, seeds, G."""

    raw: np.ndarray
    finite: np.ndarray
    losses: list[dict[str, float]]
    seeds: list[int]
    g_weights: list[list[torch.Tensor]]  # per row: G's six weights
    iters_used: list[int]


def _image_result(final: _Final, rows: list[int], name: str, arr: np.ndarray, seed: int,
                  run: dict[str, Any], x4: bool, cfg: KernelGANConfig, rule: str
                  ) -> EstimateResult | TrainingDivergedError:
    """One image's result from its restarts' rows of the batch (finite ones only)."""
    raw = final.raw
    ok = [r for r in rows if final.finite[r] and np.isfinite(raw[r]).all()]
    if not ok:
        return TrainingDivergedError(f"{name}: training diverged (NaN/inf) with seed {seed}")
    # the LR image's spectrum sets the clean-up, sizes the kernel, chooses its elongation and
    # fits a Gaussian
    spectrum_ok = min(arr.shape[:2]) >= WIDTH_MIN_SIDE
    gray, sc = arr.mean(axis=2), 4 if x4 else 2
    spectral, cov = None, None
    if spectrum_ok and (cfg.spectral_mix > 0 or cfg.spectral_confidence or cfg.clean_release
                        or (cfg.width_calibration and cfg.width_release)):
        cov = spectral_covariance(gray, sc)
    n = cfg.clean_n(len(rows))
    n = released_clean_n(n, cov) if cfg.clean_release else n
    k2, finished, cons = finish_restarts([raw[r] for r in ok], n, rule, len(rows),
                                         cfg.elongation_power)
    unshrunk = cons.kernel if cons is not None else finished[0]
    k2, width = _calibrated(cfg, gray if spectrum_ok else None, sc, k2, unshrunk, cov)
    kernelgan = k2
    if cfg.spectral_mix > 0 and spectrum_ok:
        k2, spectral = mix_covariance(k2, cov, cfg.spectral_mix)
    # the restarts' mean cosine to their consensus, a diverged restart counted as 0
    agreement = None if cons is None else min(1.0, cons.confidence * len(ok) / len(rows))
    confidence, terms = _confidence(cfg, agreement, kernelgan, cov, k2)
    pick = ok[cons.medoid] if cons is not None else ok[0]
    gone = collapsed(raw[pick])  # G's kernel vanished: the saved one is the post-processing's
    confidence = 0.0 if gone and confidence is not None else confidence  # (null stays null)
    k4 = analytic_x4(k2) if x4 else None
    report = {
        "image": name,
        "image_size": [int(arr.shape[1]), int(arr.shape[0])],
        "seed": int(seed),
        **run,
        "iters_used": final.iters_used[pick],
        "clean_n": n,
        "final_losses": final.losses[pick],
        "kernel_x2": {**kernel_stats(k2), "axes_unshrunk": kernel_stats(unshrunk)["axes"]},
        "kernel_x4": kernel_stats(k4) if k4 is not None else None,
        "confidence": confidence,
        "confidence_terms": terms, "raw_sum": float(raw[pick].sum()), "collapsed": gone,
        "width": width,
        "spectral": spectral,
    }
    if cons is not None:
        report["restarts"] = _restarts_report(final, rows, ok, rule, cons, finished, agreement)
    weights = [w.detach().float().cpu().numpy() for w in final.g_weights[pick]]
    return EstimateResult(name, k2, k4, report, weights, raw[pick], confidence)


def _restarts_report(final: _Final, rows: list[int], ok: list[int], rule: str,
                     cons: Consensus, finished: list[np.ndarray], agreement: float
                     ) -> dict[str, Any]:
    """The report's ``restarts``: per restart (``rows``, K) its seed, iterations and finished
    kernel (None where it diverged); ``medoid`` and ``inliers`` index the K restarts (since
    0.9.27)."""
    place = [rows.index(r) for r in ok]  # a finite restart's index among the K
    kernels: list[list | None] = [None] * len(rows)
    for i, k in zip(place, finished, strict=True):
        kernels[i] = k.tolist()
    return {"k": len(rows), "rule": rule, "seeds": [final.seeds[r] for r in rows],
            "diverged": len(rows) - len(ok), "medoid": place[cons.medoid],
            "agreement": agreement, "iters_used": [final.iters_used[r] for r in rows],
            "inliers": [place[i] for i in cons.inliers], "kernels": kernels}


def _calibrated(cfg: KernelGANConfig, gray: np.ndarray | None, sc: int, k2: np.ndarray,
                unshrunk: np.ndarray, cov: np.ndarray | None
                ) -> tuple[np.ndarray, dict[str, Any] | None]:
    """(the x2 kernel, the report's ``width``) after the width calibration and elongation
    choice (:mod:`kgengine.width`) on the LR image ``gray`` ((H, W); None: too small for a
    spectrum: width kept), the pull released by the spectrum's fit ``cov`` (width_release)."""
    if not cfg.width_calibration:
        return k2, None
    width: dict[str, Any] = {"scale": 1.0, "prior": cfg.width_prior,
                             "elongation_power": cfg.elongation_power,
                             "refine": cfg.width_refine, "release": cfg.width_release,
                             "prior_used": None}
    if gray is None:
        return k2, {**width, "skipped": "image too small"}
    prior = released_prior(cfg.width_prior, cov) if cfg.width_release else cfg.width_prior
    if cfg.chooses_elongation():
        fit, kept = choose_elongation(gray, k2, unshrunk, sc, prior, refine=cfg.width_refine)
        width["elongation_power"] = 1.0 if kept else cfg.elongation_power
    else:
        fit = calibrate_width(gray, k2, sc, prior, cfg.width_refine)
    return fit.kernel, {**width, "scale": fit.scale, "prior_used": prior}


def _confidence(cfg: KernelGANConfig, agreement: float | None, kernelgan: np.ndarray,
                cov: np.ndarray | None, saved: np.ndarray
                ) -> tuple[float | None, dict[str, Any] | None]:
    """(the result's confidence, the report's ``confidence_terms``): with
    ``spectral_confidence``, :func:`kgengine.confidence.spectral_confidence` of KernelGAN's
    kernel (before the mix) and the spectrum's Gaussian (None without a fit); else the
    restarts' ``agreement`` (None for one run)."""
    if not cfg.spectral_confidence:
        return agreement, None
    if cov is None:
        return None, None
    g = gaussian_of(cov, kernelgan.shape[0])
    dist, elong = agreement_score(kernelgan, g, saved)
    return confidence_of(dist, elong), {"distance": dist, "elongation": elong}


def estimate_kernel(image: ImageLike, *, seed: int = 0, **kwargs: Any) -> EstimateResult:
    """Estimate one image's kernel(s); see :func:`estimate_kernels` for the arguments (a
    divergence raises :class:`TrainingDivergedError`, whatever ``on_diverge``)."""
    result = estimate_kernels([image], seeds=[seed], **kwargs)[0]
    if isinstance(result, TrainingDivergedError):  # on_diverge="return": one image has no slot
        raise result
    return result
