"""``kgengine export fixed|pool|generator``: write ONNX degraders and trained generators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from kgengine.errors import KGEngineError

export_app = typer.Typer(
    help="Export ONNX models: fixed-kernel degrader, kernel-pool degrader, trained generator.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write.")]
Noise = Annotated[
    bool, typer.Option("--noise/--no-noise", help="Inputs noise_sigma, noise: lr += sigma*noise.")
]
Tile = Annotated[
    int, typer.Option("--tile", help="LR pixels per Conv step per axis (4: fast CPU; 1: plain).")
]
Scale = Annotated[int, typer.Option("--scale", help="Downscaling factor (2 or 4).")]
Kernel = Annotated[Path, typer.Option("--kernel", help="A .npy or .mat kernel (var. 'Kernel').")]
KernelSize = Annotated[int, typer.Option("--kernel-size", help="Odd kernel size K of the pool.")]
Weights = Annotated[Path, typer.Argument(help="<name>_generator.npz from an estimation run.")]
Folded = Annotated[
    bool, typer.Option("--folded/--layers", help="One 13x13 strided Conv, or the six layers.")
]


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")


def _export(build: Callable[[], object], out: Path) -> None:
    """Build, check and write the model, then print its inputs/outputs."""
    from kgengine.onnx_export import describe_io, read_metadata, save_model

    try:
        model = build()
        save_model(model, out)
    except KGEngineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {out}")
    for direction, name, shape in describe_io(model):
        typer.echo(f"  {direction:6s} {name}: {shape}")
    meta = read_metadata(model)
    keys = ("kind", "scale", "kernel_size", "opset")
    typer.echo("  " + ", ".join(f"{k}={meta[k]}" for k in keys))


@export_app.command("fixed")
def export_fixed(kernel: Kernel, out: Out, scale: Scale = 2, noise: Noise = False,
                 tile: Tile = 4) -> None:
    """hr (N,C,H,W) -> lr (N,C,ceil(H/s),ceil(W/s)) with this kernel baked in."""
    from kgengine.onnx_export import build_fixed_model
    from kgengine.pool import read_kernel_file

    _export(lambda: build_fixed_model(read_kernel_file(kernel), scale, noise, tile), out)


@export_app.command("pool")
def export_pool(out: Out, kernel_size: KernelSize = 13, scale: Scale = 2, noise: Noise = False,
                tile: Tile = 4) -> None:
    """hr (N,C,H,W), kernel (N,1,K,K) -> lr: kernel i applied to image i."""
    from kgengine.onnx_export import build_pool_model

    _export(lambda: build_pool_model(kernel_size, scale, noise, tile), out)


@export_app.command("generator")
def export_generator(weights: Weights, out: Out, folded: Folded = False) -> None:
    """hr (N,C,H,W) -> G's valid-region x2 output, G applied to each channel."""
    from kgengine.onnx_export import build_generator_model, load_generator_weights

    _export(lambda: build_generator_model(load_generator_weights(weights), folded), out)
