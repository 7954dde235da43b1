"""``kgengine degrade``: a folder of HR images + a kernel pool -> LR/HR training pairs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kgengine.commands._common import cli_errors, fail
from kgengine.hooks import JobHooks
from kgengine.progress import progress_hooks


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
        "--scale", help="2 or 4. Default: the pool file's (2 for folders).")] = None,
    noise: Annotated[float, typer.Option(
        "--noise", help="Sigma of Gaussian noise on the LR, [0,1] units; 0 = none.")] = 0.0,
    provider: Annotated[str, typer.Option(
        "--provider", help="auto (TensorRT, CUDA, then CPU), tensorrt, cuda, cpu.")] = "auto",
    batch: Annotated[int, typer.Option(
        "--batch", help="Images of equal size per onnxruntime call.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Picks each image's kernel and noise.")] = 0,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: all cores).")] = None,
) -> None:
    """Degrade every HR image with a kernel from the pool into LR/HR pairs.

    Resumable (pairs already written are skipped). A bad HR file is reported on one line
    and skipped; the exit code is 1 if any file failed, after all the others are done.
    """
    from kgengine.degradation import degrade_folder  # onnx and onnxruntime: only when used

    try:
        with progress_hooks("degrading", Console(stderr=True)) as hooks:
            report = degrade_folder(
                hr_dir, kernels, out, scale=scale, noise=noise, seed=seed, batch=batch,
                provider=provider, threads=threads, hooks=_failures_as_errors(hooks),
            )
    except OSError as exc:
        fail(f"{exc.filename or out}: {exc.strerror or exc}")
    typer.echo(
        f"{report.written} pairs written, {report.skipped} already there, "
        f"{len(report.failed)} failed; manifest: {report.manifest}"
    )
    if report.failed:
        raise typer.Exit(1)


def _failures_as_errors(hooks: JobHooks) -> JobHooks:
    """``hooks`` with each failed file printed as one ``error: <file>: <reason>`` line."""

    def item_finished(name: str, state: str, detail: str) -> None:
        if state == "failed":
            hooks.log(f"error: {detail}")
            detail = ""  # printed: the display only counts it
        hooks.item_finished(name, state, detail)

    return replace(hooks, item_finished=item_finished)
