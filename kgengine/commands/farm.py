"""``kgengine farm INPUT... -o POOL_DIR`` and ``kgengine pool info|plot|filter|import|export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kgengine.commands._common import (
    at_least,
    check_counts,
    check_device,
    check_mode,
    check_out_dir,
    check_out_file,
    check_seed,
    check_stop,
    cli_errors,
    note_cold_cache,
    one_line,
)
from kgengine.config import KernelGANConfig, parse_overrides
from kgengine.errors import KGEngineError, shown

pool_app = typer.Typer(help="Look at a kernel pool: statistics, a PNG mosaic, a filtered "
                            "copy by confidence; import kernels from KernelGAN/RealSR, KAIR or "
                            ".npy folders, export for them.", no_args_is_help=True)

Inputs = Annotated[
    list[Path] | None,
    typer.Argument(help="Images, folders of images and .txt lists of paths. Leave out to "
                        "resume the images already listed in POOL_DIR."),
]
PoolDir = Annotated[Path, typer.Option("-o", "--out", help="Pool folder (manifest, kernels/, "
                                                           "kernel_pool.npz); rerun to resume.")]
Batch = Annotated[int | None, typer.Option(
    "--batch", help="Images per batched training. Default: 8 on CPU; on a GPU, from "
                           "probe runs and its total memory (its free memory when it is busy).")]
X4 = Annotated[bool | None, typer.Option(
    "--x4/--no-x4", help="The photos are x4 LR images: derive x4 kernels too (and "
                         "kernel_pool_x4.npz); the x2 kernels' post-processing reads the "
                         "spectrum as x4's. Default: no / the pool's setting.")]
Iters = Annotated[int | None, typer.Option(
    "--iters", help="Iterations of each training (default: 3000, the paper's, for one run; 1250 "
                    "for each restart with --restarts K > 1; the pool's setting on resume).")]
Seed = Annotated[int | None, typer.Option(
    "--seed", help="Job seed; each image's seed is derived from it and the file's content.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[str | None, typer.Option(
    "--dtype", help="float32 (default) or float64 (slow; for exactness checks).")]
Mode = Annotated[str | None, typer.Option(
    "--mode", help="composed (fast, default) or layers (the authors' computation).")]
Restarts = Annotated[int | None, typer.Option(
    "--restarts", help="Train each image K times (in the same batch) and combine them into one "
                       "kernel. Default: 1 / the pool's setting.")]
Stop = Annotated[str | None, typer.Option(
    "--stop", help="auto (stop an image once its kernel stopped changing; fewer iterations "
                   "at the same accuracy, measured) or full (every iteration). Default: auto "
                   "for a new pool (since 0.9.12) / the pool's setting.")]
Overrides = Annotated[list[str] | None, typer.Option(
    "--set", help="Config override key=value (repeatable), e.g. --set lr_g=1e-4.")]
Recursive = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Also take images from sub-folders of folder INPUTs.")]
RetryFailed = Annotated[bool, typer.Option(
    "--retry-failed", help="Queue the pool's failed images again before starting.")]
Ray = Annotated[str | None, typer.Option(
    "--ray", help="Run batches as Ray tasks: 'auto' (the running cluster), an address "
                  "(host:port or ray://host:10001), or 'local' (start a local Ray).")]
RayCpus = Annotated[float, typer.Option("--ray-cpus", help="CPUs each Ray task requests.")]
Threads = Annotated[int | None, typer.Option(
    "--threads", help="torch CPU threads (0 or left out: the default, all cores, capped at "
                      "the idle ones; fewer can be much faster on a busy machine).")]
PoolArg = Annotated[Path, typer.Argument(help="kernel_pool.npz, a farm POOL_DIR or a kernel "
                                              "folder.")]
MinConfidence = Annotated[float | None, typer.Option(
    "--min-confidence", help="Only kernels whose confidence (0-1: KernelGAN's kernel "
                             "against the LR spectrum's, docs/ACCURACY.md) is known and at least "
                             "this.")]


def register(app: typer.Typer) -> None:
    app.command("farm")(farm)
    app.add_typer(pool_app, name="pool")


@cli_errors
def farm(
    out: PoolDir,
    inputs: Inputs = None,
    batch: Batch = None,
    x4: X4 = None,
    iters: Iters = None,
    seed: Seed = None,
    device: Device = "auto",
    dtype: Dtype = None,
    mode: Mode = None,
    restarts: Restarts = None,
    stop: Stop = None,
    overrides: Overrides = None,
    recursive: Recursive = False,
    retry_failed: RetryFailed = False,
    ray: Ray = None,
    ray_cpus: RayCpus = 1.0,
    threads: Threads = None,
) -> None:
    """Estimate one kernel per image into a resumable kernel pool (a kernel-estimation farm).

    Images are trained BATCH at a time in one batched model. Progress lives in
    POOL_DIR/manifest.sqlite: after a crash or kill, rerun the same command and only the
    unfinished images are redone; a done image whose files were deleted or damaged is redone
    too. Options left out take the pool's stored settings. Bad images end as failed rows
    with their reason; an image whose files cannot be written (full disk, ...) is reported
    on one line and left pending for the next run, the others go on; the exit code is 1 if
    any image failed or was left pending in this run, or a folder or .txt list INPUT gave
    no image files, or a file INPUT lies in a pool folder (each reported on one line).
    kgengine's own outputs (pool folders, this one included, estimate and degrade output
    folders) are never read as input. Each image's
    confidence is stored in the manifest, its report and the pool (see `kgengine pool
    filter --min-confidence`).
    """
    from kgengine.farm.runner import run_farm
    from kgengine.progress import progress_hooks

    for option, value in (("--batch", batch), ("--iters", iters)):
        at_least(option, value, 1)
    check_counts(threads=threads, restarts=restarts)  # --threads 0: the default
    at_least("--ray-cpus", ray_cpus, 0.01)
    check_seed("--seed", seed)
    check_device(device, here=ray is None)
    check_mode(mode)
    _check_dtype(dtype)
    check_stop(stop)
    settings = _overrides(overrides)
    empty = _check_inputs(inputs or [], out, recursive)  # before POOL_DIR is created
    with progress_hooks("images") as hooks:
        if ray is None:
            note_cold_cache(hooks.log)
        summary = run_farm(
            inputs or [], out, batch=batch, seed=seed, x4=x4, iters=iters, overrides=settings,
            dtype=dtype, mode=mode, restarts=restarts, stop=stop, device=device,
            recursive=recursive,
            retry_failed=retry_failed, ray_address=ray, ray_cpus=ray_cpus, threads=threads,
            hooks=hooks)
    typer.echo(summary.text())
    if summary.failed or summary.left_pending or empty:
        raise typer.Exit(1)


def _check_dtype(dtype: str | None) -> None:
    """Raise :class:`KGEngineError` for an unknown ``--dtype`` (before the pool folder is
    created; :func:`kgengine.farm.settings.resolve_settings` checks it too)."""
    from kgengine.farm.settings import DTYPES

    if dtype is not None and dtype not in DTYPES:
        raise KGEngineError(f"--dtype: expected {' or '.join(DTYPES)}, got {dtype!r}")


def _check_inputs(inputs: list[Path], out: Path, recursive: bool) -> int:
    """Print one ``error:`` line per folder INPUT that gives no image files; the number.

    Raises:
        KGEngineError: an INPUT does not exist; or no INPUT gives images (none given, or
            each an empty folder) and ``out`` is no pool yet: nothing is created.
        typer.Exit: (1) every INPUT is an empty folder and ``out`` is no pool yet.
    """
    from kgengine.farm.inputs import folders_without_images
    from kgengine.farm.manifest import MANIFEST_FILE

    messages = folders_without_images(inputs, recursive, exclude=[out])
    for message in messages:
        typer.echo(f"error: {one_line(message)}", err=True)
    if len(messages) == len(inputs) and not (out / MANIFEST_FILE).is_file():
        if messages:
            raise typer.Exit(1)
        raise KGEngineError(f"{shown(out)}: no pool there yet (no {MANIFEST_FILE}) and no "
                            "INPUT given: name images, folders or .txt lists to start one")
    return len(messages)


def _overrides(overrides: list[str] | None) -> dict[str, Any] | None:
    """The ``--set key=value`` overrides, checked on the default config (None if none); the
    farm applies them to the pool's stored config (a new pool's: the default).

    Raises:
        KGEngineError: an unknown key or a value of the wrong type or out of range.
    """
    if not overrides:
        return None
    try:
        parsed = parse_overrides(overrides)
        KernelGANConfig().replace(**parsed)
    except ValueError as exc:
        raise KGEngineError(str(exc)) from None
    return parsed


@pool_app.command("info")
@cli_errors
def info(
    pool: PoolArg,
    bins: Annotated[int, typer.Option("--bins", help="Histogram bins (1-100).")] = 10,
    min_confidence: MinConfidence = None,
) -> None:
    """Print the pool's size, kernel size, confidences (count, min/median/max, how many pass
    --min-confidence) and histograms of kernel widths and anisotropy."""
    from kgengine.farm.poolview import pool_info

    if not 1 <= bins <= 100:  # one line per bin
        raise KGEngineError(f"--bins must be in [1, 100], got {bins}")
    typer.echo(pool_info(pool, bins, min_confidence))


@pool_app.command("plot")
@cli_errors
def plot(
    pool: PoolArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Mosaic PNG to write.")],
    hist: Annotated[Path | None, typer.Option(
        "--hist", help="Also write the width/anisotropy histograms as this PNG.")] = None,
    columns: Annotated[int, typer.Option("--columns", help="Kernels per row.")] = 12,
    limit: Annotated[int, typer.Option(
        "--limit", help="Most kernels drawn (spread evenly over a larger pool).")] = 240,
    min_confidence: MinConfidence = None,
) -> None:
    """Write a PNG mosaic of the pool's kernels (and optionally histograms)."""
    from kgengine.farm.poolview import plot_pool

    at_least("--columns", columns, 1)
    at_least("--limit", limit, 1)
    _pool_given(pool, min_confidence)
    for path in (out, hist):
        if path is not None and path.suffix.lower() != ".png" and not path.is_dir():
            raise KGEngineError(f"{path}: the picture is PNG; give a file name ending in .png")
        if path is not None:
            check_out_file(path)
    if hist is not None and hist.resolve() == out.resolve():
        raise KGEngineError(f"{hist}: --hist is the mosaic's file (-o {out}); give another name")
    for p in plot_pool(pool, out, columns=columns, limit=limit, hist=hist,
                       min_confidence=min_confidence):
        typer.echo(f"wrote {p}")


def _pool_given(pool: Path, min_confidence: float | None = None,
                top: float | None = None) -> None:
    """Refuse a missing pool, a bad ``--min-confidence`` or ``--top`` before an output file's
    folder is made (0.9.28: a failed pool command left an empty ``-o`` folder)."""
    from kgengine.pool import check_min_confidence

    if not pool.exists():
        raise KGEngineError(f"{pool}: no such kernel pool (file or folder)")
    if min_confidence is not None:
        check_min_confidence(min_confidence)
    if top is not None and not 0 < top <= 1:  # NaN too
        raise KGEngineError(f"--top must be a fraction in (0, 1], got {top}")


@pool_app.command("filter")
@cli_errors
def filter_command(
    pool: PoolArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="The filtered pool file (.npz).")],
    min_confidence: Annotated[float | None, typer.Option(
        "--min-confidence", help="Keep the kernels whose confidence is known and at least this "
                                 "(0-1).")] = None,
    top: Annotated[float | None, typer.Option(
        "--top", help="Instead: keep the most confident fraction (0-1] of the kernels with a "
                      "known confidence (ties with the last one kept are kept too).")] = None,
) -> None:
    """Write a new pool file with only the kernels of confident estimates (for `degrade`)."""
    from kgengine.farm.poolview import filter_pool_file

    if (min_confidence is None) == (top is None):
        raise KGEngineError("give one of --min-confidence and --top")
    _pool_given(pool, min_confidence, top)
    check_out_file(out)
    path, kept, total, threshold = filter_pool_file(pool, min_confidence, out, top)
    which = f" (the most confident {top:g} of those known)" if top is not None else ""
    typer.echo(f"wrote {path}: {kept} of {total} kernels have confidence >= {threshold:g}{which}")


@pool_app.command("import")
@cli_errors
def import_command(
    sources: Annotated[list[Path], typer.Argument(
        help="KernelGAN/RealSR and kgengine estimate result folders (*_kernel_x2.mat|.npy / "
             "*_kernel_x4.mat|.npy, also in sub-folders; a .mat beside a .npy of the same "
             "name is read once), KAIR/USRNet .mat kernel sets (variable 'kernels'; rotated "
             "180°, since KAIR convolves and kgengine correlates), folders "
             "of .npy kernels (traiNNer), .npy/.mat kernel files and kgengine pools.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The pool file to write (.npz).")],
    scale: Annotated[int, typer.Option(
        "--scale", help="2 or 4: which *_kernel_x{s}.mat|.npy to take from result folders; "
                        "stored in the pool.")] = 2,
) -> None:
    """Collect kernels of other tools (and pools) into one kgengine pool file.

    Each kernel is checked, its negatives clipped, renormalised to sum 1 and re-centred to
    kgengine's convention (centre of mass on the middle pixel), so that `degrade` uses it
    as intended; each row records its source file (and its index in a set or pool). A bad
    file inside a source folder gets an error line and is left out (exit code 1, the pool
    written with the others); a bad file named as a source stops the import.
    """
    from kgengine.pool import save_pool
    from kgengine.pool_interop import import_kernels

    if scale not in (2, 4):
        raise KGEngineError(f"--scale must be 2 or 4, got {scale}")
    if out.suffix.lower() != ".npz":
        raise KGEngineError(f"{out}: the pool file must end in .npz")
    result = import_kernels(sources, scale)  # a bad source: refused before -o is made
    check_out_file(out)
    for message in result.failed.values():
        typer.echo(f"error: {one_line(message)}", err=True)
    path = save_pool(out, result.pool)
    typer.echo(f"wrote {path}: {result.summary()}")
    if result.failed:
        typer.echo(f"{len(result.failed)} kernel file(s) failed and were left out", err=True)
        raise typer.Exit(1)


@pool_app.command("export")
@cli_errors
def export_command(
    pool: PoolArg,
    out: Annotated[Path, typer.Option(
        "-o", "--out", help="A folder (npy, mat-folder) or a .mat file (kair-mat).")],
    fmt: Annotated[str, typer.Option(
        "--format", help="npy: `<id>.npy` per kernel (traiNNer); mat-folder: "
                         "`<id>_kernel_x{s}.mat` with 'Kernel' (KernelGAN/RealSR); kair-mat: one "
                         ".mat with a 'kernels' cell array (KAIR/USRNet; each kernel rotated "
                         "180°, since KAIR convolves).")],
    size: Annotated[int | None, typer.Option(
        "--size", help="Crop or zero-pad every kernel to KxK around its centre (odd; e.g. 15 "
                       "for SRMD); a crop is renormalised to sum 1.")] = None,
    min_confidence: MinConfidence = None,
) -> None:
    """Write the pool's kernels in the layout of another SR pipeline."""
    from kgengine.pool import load_pool
    from kgengine.pool_interop import FORMATS, check_size, export_pool

    if fmt not in FORMATS:
        raise KGEngineError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if size is not None:
        check_size(size)
    kernels = load_pool(pool, min_confidence=min_confidence)  # before -o is made
    if fmt != "kair-mat":
        check_out_dir(out)
    elif out.suffix.lower() != ".mat":
        raise KGEngineError(f"{out}: the kair-mat file must end in .mat")
    else:
        check_out_file(out)
    result = export_pool(kernels, out, fmt, size, source=pool)
    k = result.size
    lost = (f"; the crop dropped up to {result.lost:.2%} of a kernel's mass"
            if result.lost >= 5e-5 else "")  # below 0.01 %: rounding, not mass
    typer.echo(f"wrote {len(kernels)} kernels {k}x{k} as {fmt} to {out}{lost}")
