"""``kgengine export fixed|pool|generator``: write ONNX degraders and trained generators.

Each command calls :func:`kgengine.export.export_model` with its kind (the registry
:data:`kgengine.export.EXPORTERS`) and prints what the file holds. Options are checked first
(``--tile`` and ``--scale`` in [1, 8], ``--kernel-size`` odd in [1, 255]: the bounds of
:mod:`kgengine.export.graph`; ``--dtype`` fp32 or fp16; ``-o`` ending in ``.onnx``;
a fixed kernel's sides at most 255, naming its file), each a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kgengine.commands._common import check_out_file, cli_errors
from kgengine.errors import KGEngineError

export_app = typer.Typer(
    help="Export ONNX models: fixed-kernel degrader, kernel-pool degrader, trained generator.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write.")]
Noise = Annotated[
    bool, typer.Option("--noise/--no-noise", help="Inputs noise_sigma, noise: lr += sigma * noise.")
]
Tile = Annotated[int, typer.Option(
    "--tile", help="LR pixels per Conv step per axis, 1-8 (4: fast CPU; 1: plain).")]
Scale = Annotated[int, typer.Option("--scale", help="Downscaling factor (2 or 4; 1-8).")]
Dtype = Annotated[
    str, typer.Option("--dtype", help="fp32, or fp16 (inputs, weights and output in float16).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")


def _check_options(out: Path, scale: int = 2, tile: int = 1, dtype: str = "fp32") -> None:
    """Refuse (one line) an ``out`` not ending in ``.onnx``, ``--scale`` / ``--tile`` outside
    [1, 8] and an unknown ``--dtype``, before any work; nothing is made (the command checks
    the output place with ``check_out_file`` once its inputs are read)."""
    from kgengine.export.graph import DTYPES, MAX_SCALE, MAX_TILE, check_range

    if out.suffix.lower() != ".onnx" and not out.is_dir():  # a folder: check_out_file says so
        raise KGEngineError(f"{out}: the model is ONNX; give a file name ending in .onnx")
    check_range("--scale", scale, MAX_SCALE)
    check_range("--tile", tile, MAX_TILE)
    if dtype not in DTYPES:
        raise KGEngineError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def _export(kind: str, out: Path, **options: object) -> None:
    """Write the export ``kind`` to ``out`` (checked by :func:`_check_options`), then print
    its inputs/outputs and metadata."""
    from kgengine.export import export_model  # onnx: only when exporting

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
    from kgengine.export.graph import MAX_KERNEL_SIZE, check_range
    from kgengine.kernel_files import RESULT_NAME, read_kernel_file

    _check_options(out, scale, tile, dtype)
    k = read_kernel_file(kernel)  # a bad kernel file: refused before the output is made
    for side in k.shape:
        check_range(f"{kernel}: kernel side", side, MAX_KERNEL_SIZE)
    named = RESULT_NAME.match(kernel.name)
    if named and int(named["scale"]) != scale:  # as pool import reads a result file's name
        raise KGEngineError(f"{kernel}: an x{named['scale']} kernel (its name), not "
                            f"x{scale}; give --scale {named['scale']}")
    check_out_file(out)
    _export("fixed", out, kernel=k, scale=scale, noise=noise, tile=tile, dtype=dtype)


@export_app.command("pool")
@cli_errors
def export_pool(
    out: Out,
    kernel_size: Annotated[int, typer.Option(
        "--kernel-size", help="Odd kernel size K of the pool, at most 255.")] = 13,
    scale: Scale = 2, noise: Noise = False, tile: Tile = 4, dtype: Dtype = "fp32",
) -> None:
    """hr (N,C,H,W), kernel (N,1,K,K) -> lr: kernel i applied to image i."""
    from kgengine.export.graph import check_kernel_side

    _check_options(out, scale, tile, dtype)
    check_kernel_side("--kernel-size", kernel_size)
    check_out_file(out)
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

    _check_options(out)
    loaded = load_generator_weights(weights)  # a bad file: refused before the output is made
    check_out_file(out)
    _export("generator", out, weights=loaded, folded=folded)
