"""``kgengine export fixed|pool|generator``: write ONNX degraders and trained generators.

Each command calls :func:`kgengine.export.export_model` with its kind (the registry
:data:`kgengine.export.EXPORTERS`) and prints what the file holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kgengine.commands._common import check_out_file, cli_errors

export_app = typer.Typer(
    help="Export ONNX models: fixed-kernel degrader, kernel-pool degrader, trained generator.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write.")]
Noise = Annotated[
    bool, typer.Option("--noise/--no-noise", help="Inputs noise_sigma, noise: lr += sigma * noise.")
]
Tile = Annotated[
    int, typer.Option("--tile", help="LR pixels per Conv step per axis (4: fast CPU; 1: plain).")
]
Scale = Annotated[int, typer.Option("--scale", help="Downscaling factor (2 or 4).")]
Dtype = Annotated[
    str, typer.Option("--dtype", help="fp32, or fp16 (inputs, weights and output in float16).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")


def _export(kind: str, out: Path, **options: object) -> None:
    """Write the export ``kind`` to ``out``, then print its inputs/outputs and metadata.

    Raises:
        OutputError: ``out`` is a folder or cannot be written (one line naming it).
    """
    from kgengine.export import export_model  # onnx: only when exporting

    check_out_file(out)
    written = export_model(kind, out, **options)
    typer.echo(f"wrote {out}")
    for line in written.lines:
        typer.echo(f"  {line}")


@export_app.command("fixed")
@cli_errors
def export_fixed(
    kernel: Annotated[Path, typer.Option(
        "--kernel", help="A .npy or .mat kernel (var. 'Kernel').")],
    out: Out, scale: Scale = 2, noise: Noise = False, tile: Tile = 4, dtype: Dtype = "fp32",
) -> None:
    """hr (N,C,H,W) -> lr (N,C,ceil(H/s),ceil(W/s)) with this kernel baked in."""
    from kgengine.pool import read_kernel_file

    _export("fixed", out, kernel=read_kernel_file(kernel), scale=scale, noise=noise, tile=tile,
            dtype=dtype)


@export_app.command("pool")
@cli_errors
def export_pool(
    out: Out,
    kernel_size: Annotated[int, typer.Option(
        "--kernel-size", help="Odd kernel size K of the pool.")] = 13,
    scale: Scale = 2, noise: Noise = False, tile: Tile = 4, dtype: Dtype = "fp32",
) -> None:
    """hr (N,C,H,W), kernel (N,1,K,K) -> lr: kernel i applied to image i."""
    _export("pool", out, kernel_size=kernel_size, scale=scale, noise=noise, tile=tile,
            dtype=dtype)


@export_app.command("generator")
@cli_errors
def export_generator(
    weights: Annotated[Path, typer.Argument(
        help="`<name>_generator.npz` from an estimation run.")],
    out: Out,
    folded: Annotated[bool, typer.Option(
        "--folded/--layers", help="One 13x13 strided Conv, or the six layers.")] = False,
) -> None:
    """hr (N,C,H,W) -> G's valid-region x2 output, G applied to each channel."""
    from kgengine.export import load_generator_weights

    _export("generator", out, weights=load_generator_weights(weights), folded=folded)
