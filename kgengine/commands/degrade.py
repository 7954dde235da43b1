"""``kgengine degrade``: a folder of HR images + a kernel pool -> LR/HR training pairs.

Without pipeline options it runs the ONNX pool degrader (kernel + optional Gaussian
``--noise``); with any of ``--pipeline``, ``--noise-range``, ``--noise-poisson``,
``--noise-patches``, ``--second-order``, ``--jpeg``, ``--shuffle`` or ``--set`` it runs the
degradation pipeline (:mod:`kgengine.degradation.pipeline`) on the CPU.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from kgengine.commands._common import at_least, check_counts, check_seed, cli_errors, fail
from kgengine.env_settings import check_env
from kgengine.hooks import JobHooks
from kgengine.progress import progress_hooks

# --- which of the pool's kernels ---
MinConfidence = Annotated[float | None, typer.Option(
    "--min-confidence", help="Only the pool's kernels whose confidence (0-1, docs/ACCURACY.md) "
                             "is known and at least this; a resume must give the same value.")]
Top = Annotated[float | None, typer.Option(
    "--top", help="Instead: only the most confident fraction (0-1] of the pool's kernels "
                  "with a known confidence (as `pool filter --top`).")]

# --- pipeline options (any of them switches to the pipeline) ---
PipelineFile = Annotated[Path | None, typer.Option(
    "--pipeline", help="TOML file of pipeline settings (the flags below override it).")]
NoiseRange = Annotated[str | None, typer.Option(
    "--noise-range", help="Gaussian noise, sigma drawn per image in LO-HI ([0,1] units), "
                          "e.g. 0-0.04.")]
NoisePoisson = Annotated[bool, typer.Option(
    "--noise-poisson", help="Poisson (shot) noise, peak photons drawn per image in "
                            "poisson_peak (default 30-1000).")]
NoisePatches = Annotated[Path | None, typer.Option(
    "--noise-patches", help="Add real-noise patches from this folder (kgengine noise collect).")]
SecondOrder = Annotated[bool, typer.Option(
    "--second-order", help="Second round: blur with a random Gaussian, resize and back.")]
Jpeg = Annotated[str | None, typer.Option(
    "--jpeg", help="JPEG at a quality drawn per image in LO-HI, e.g. 30-95.")]
Shuffle = Annotated[bool, typer.Option(
    "--shuffle", help="Run the LR-side stages in a random order per image.")]
Sets = Annotated[list[str] | None, typer.Option(
    "--set", help="Any pipeline setting as key=value (e.g. gray_prob=0.4); repeatable.")]


def register(app: typer.Typer) -> None:
    app.command("degrade")(degrade)


@cli_errors
def degrade(
    hr_dir: Annotated[Path, typer.Argument(
        help="Folder of HR images (its files, not sub-folders).")],
    kernels: Annotated[Path, typer.Option(
        "--kernels", "-k", help="kernel_pool.npz, or a folder of .npy/.mat kernels.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output folder: lr/, hr/, manifest.jsonl.")],
    scale: Annotated[int | None, typer.Option(
        "--scale", help="2 or 4 (a pool file made for another is refused). Default: the "
                        "pool file's; a folder's one scale, else 2.")] = None,
    noise: Annotated[float, typer.Option(
        "--noise", help="Sigma of Gaussian noise on the LR, [0,1] units; 0 = none.")] = 0.0,
    provider: Annotated[str, typer.Option(
        "--provider", help="auto (TensorRT, CUDA, then CPU), tensorrt, cuda, cpu.")] = "auto",
    batch: Annotated[int, typer.Option(
        "--batch", help="Images of equal size per onnxruntime call (at least 1).")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Picks each image's kernel and noise.")] = 0,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads for onnxruntime (0 or left out: the default, all "
                          "usable cores).")] = None,
    copy_hr: Annotated[bool, typer.Option(
        "--copy-hr", help="Write every HR to OUT/hr/ (same names as OUT/lr/: a paired "
                          "folder for BasicSR/traiNNer); default: only cropped ones.")] = False,
    min_confidence: MinConfidence = None,
    top: Top = None,
    pipeline: PipelineFile = None,
    noise_range: NoiseRange = None,
    noise_poisson: NoisePoisson = False,
    noise_patches: NoisePatches = None,
    second_order: SecondOrder = False,
    jpeg: Jpeg = None,
    shuffle: Shuffle = False,
    sets: Sets = None,
) -> None:
    """Degrade every HR image with a kernel from the pool into LR/HR pairs.

    Resumable (pairs already written are skipped). A bad HR file is reported on one line
    and skipped; the exit code is 1 if any file failed, after all the others are done.
    Pipeline options (--pipeline, --noise-range, --noise-poisson, --noise-patches,
    --second-order, --jpeg, --shuffle, --set) run the degradation pipeline on the CPU.
    Every option is checked before OUT is created or written.
    """
    from kgengine.degradation import build_config  # onnx(runtime): when used
    from kgengine.degradation.config import parse_sets
    from kgengine.degradation.job import plan_job, run_job

    use_pipeline = bool(pipeline or noise_range or noise_poisson or noise_patches
                        or second_order or jpeg or shuffle or sets)
    _check_options(out, scale, noise, seed, batch, threads, provider, min_confidence, top,
                   use_pipeline)
    config = None
    if use_pipeline:
        config = build_config(pipeline, noise=noise, noise_range=noise_range,
                              poisson=noise_poisson, real_noise=noise_patches,
                              second_order=second_order, jpeg=jpeg, shuffle=shuffle,
                              sets=parse_sets(sets or []))
        noise = 0.0  # now the pipeline's gaussian_sigma
    try:
        # the pool, the HR folder and OUT are checked before the progress bar starts, so a
        # bad one is the only line printed
        job = plan_job(hr_dir, kernels, out, scale=scale, noise=noise, seed=seed, batch=batch,
                       provider=provider, threads=threads, pipeline=config, copy_hr=copy_hr,
                       min_confidence=min_confidence, top=top, log=partial(typer.echo, err=True))
        with progress_hooks("degrading") as hooks:
            report = run_job(job, _failures_as_errors(hooks))
    except OSError as exc:
        fail(f"{exc.filename or out}: {exc.strerror or exc}")
    typer.echo(f"{report.written} pairs written, {report.skipped} already there, "
               f"{len(report.failed)} failed; manifest: {report.manifest}")
    if report.failed:
        raise typer.Exit(1)


def _check_options(out: Path, scale: int | None, noise: float, seed: int, batch: int,
                   threads: int | None, provider: str, min_confidence: float | None,
                   top: float | None, use_pipeline: bool) -> None:
    """Refuse a bad option value with one line before the progress bar and before OUT is
    created (``plan_job`` checks them again, and the pool and folders, before it too)."""
    from kgengine.degradation.folder import check_out_path
    from kgengine.degradation.plan import check_scale
    from kgengine.degradation.runner import check_provider
    from kgengine.pool import check_min_confidence

    if top is not None and min_confidence is not None:
        fail("give at most one of --min-confidence and --top")
    check_env()
    check_scale(scale, "--scale")
    check_seed("--seed", seed)
    at_least("--batch", batch, 1)
    check_counts(threads=threads)  # 0: the default
    if not 0 <= noise <= 1:  # NaN too
        fail(f"--noise must be a sigma in [0, 1] (image range), got {noise}")
    if min_confidence is not None:
        check_min_confidence(min_confidence)
    if top is not None and not 0 < top <= 1:  # NaN too
        fail(f"top fraction must be in (0, 1], got {top}")
    check_provider(provider, runs=not use_pipeline)
    check_out_path(out)


def _failures_as_errors(hooks: JobHooks) -> JobHooks:
    """``hooks`` with each failed file printed as one ``error: <file>: <reason>`` line."""

    def item_finished(name: str, state: str, detail: str) -> None:
        if state == "failed":
            hooks.log(f"error: {detail}")
            detail = ""  # printed: the display only counts it
        hooks.item_finished(name, state, detail)

    return replace(hooks, item_finished=item_finished)
