"""``kgengine noise collect``: real-noise patches from photos (RealSR's recipe), for the
degradation pipeline's ``real`` stage (``kgengine degrade --noise-patches DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kgengine.commands._common import check_out_dir, cli_errors
from kgengine.progress import progress_hooks

noise_app = typer.Typer(help="Real-noise patches for the degradation pipeline.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(noise_app, name="noise")


@noise_app.command("collect")
@cli_errors
def collect(
    photos: Annotated[list[Path], typer.Argument(
        help="Photos, or folders of photos (their files), from the camera(s) to imitate.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output folder: noise_patches.npy, noise_index.json.")],
    patch: Annotated[int, typer.Option(
        "--patch", help="Patch side P in pixels (tiled to the LR size when smaller).")] = 64,
    stride: Annotated[int | None, typer.Option(
        "--stride", help="Step between patches (default: P, no overlap).")] = None,
    max_var: Annotated[float, typer.Option(
        "--max-var", help="Keep patches whose luma variance (0-255 units) is below this; "
                          "RealSR: 20.")] = 20.0,
    min_mean: Annotated[float, typer.Option(
        "--min-mean", help="... and whose luma mean is at least this (0-255).")] = 0.0,
    max_mean: Annotated[float, typer.Option(
        "--max-mean", help="... and at most this (e.g. 245 to skip clipped highlights).")
    ] = 255.0,
) -> None:
    """Cut photos into patches, keep the flat ones, remove each one's mean, save the stack.

    A bad photo is reported on one line and skipped (exit code 1 at the end). OUT may be
    a photo folder: the files this command writes are never read as photos (one line says
    so).
    """
    from kgengine.degradation.noisebank import check_collect_args, collect_noise, list_photos

    check_collect_args(patch, stride, max_var, min_mean, max_mean)  # before OUT is made
    list_photos(photos, out)  # no photos: one line before OUT is made (0.9.27)
    check_out_dir(out)  # a bad -o fails before any photo is read
    with progress_hooks("collecting") as hooks:
        report = collect_noise(photos, out, patch=patch, stride=stride, max_var=max_var,
                               min_mean=min_mean, max_mean=max_mean, hooks=hooks)
    typer.echo(f"{report.patches} noise patches ({patch}x{patch}) from {report.images} photos, "
               f"{len(report.failed)} failed; written to {out}")
    if report.failed:
        raise typer.Exit(1)
