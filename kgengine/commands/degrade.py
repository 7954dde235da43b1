"""``kgengine degrade``: a folder of HR images + a kernel pool -> LR/HR training pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kgengine.errors import KGEngineError

HrDir = Annotated[Path, typer.Argument(help="Folder of HR images (its files, not sub-folders).")]
Kernels = Annotated[
    Path, typer.Option("--kernels", "-k", help="kernel_pool.npz, or a folder of .npy/.mat kernels.")
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder: lr/, hr/, manifest.jsonl.")]
Scale = Annotated[
    int | None, typer.Option("--scale", help="2 or 4. Default: the pool file's (2 for folders).")
]
Noise = Annotated[
    float, typer.Option("--noise", help="Sigma of Gaussian noise on the LR, [0,1] units; 0 = none.")
]
Provider = Annotated[
    str, typer.Option("--provider", help="auto (TensorRT, CUDA, then CPU), tensorrt, cuda, cpu.")
]
Batch = Annotated[int, typer.Option("--batch", help="Images of equal size per onnxruntime call.")]
Seed = Annotated[int, typer.Option("--seed", help="Picks each image's kernel and noise.")]
Threads = Annotated[int | None, typer.Option("--threads", help="CPU threads (default: all cores).")]


def register(app: typer.Typer) -> None:
    app.command("degrade")(degrade)


def degrade(
    hr_dir: HrDir,
    kernels: Kernels,
    out: Out,
    scale: Scale = None,
    noise: Noise = 0.0,
    provider: Provider = "auto",
    batch: Batch = 8,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    """Degrade every HR image with a kernel from the pool into LR/HR pairs.

    Resumable (pairs already written are skipped). A bad HR file is reported on one line
    and skipped; the exit code is 1 if any file failed, after all the others are done.
    """
    from kgengine.batch_degrade import degrade_folder

    err = Console(stderr=True)

    def say(msg: str) -> None:
        progress.console.print(msg, markup=False, highlight=False, soft_wrap=True)

    def on_provider(name: str, notes: list[str]) -> None:
        say(f"provider: {name}" + (f" ({'; '.join(notes)})" if notes else ""))

    columns = (TextColumn("degrading"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("degrade", total=None)
        try:
            report = degrade_folder(
                hr_dir, kernels, out, scale=scale, noise=noise, seed=seed, batch=batch,
                provider=provider, threads=threads,
                on_total=lambda n: progress.update(task, total=n),
                on_advance=lambda n: progress.advance(task, n),
                on_error=lambda msg: say(f"error: {msg}"),
                on_provider=on_provider,
            )
        except KGEngineError as exc:
            progress.stop()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            progress.stop()
            typer.echo(f"error: {exc.filename or out}: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(
        f"{report.written} pairs written, {report.skipped} already there, "
        f"{len(report.failed)} failed; manifest: {report.manifest}"
    )
    if report.failed:
        raise typer.Exit(1)
