"""``kgengine eval`` (accuracy benchmark on a DIV2KRK-layout folder) and ``kgengine synth``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kgengine.commands._common import cli_errors, fail
from kgengine.errors import KGEngineError
from kgengine.progress import progress_hooks

#: File suffixes ``kgengine synth`` takes as HR images.
HR_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}

DatasetDir = Annotated[
    Path, typer.Argument(help="Folder in the DIV2KRK layout (lr_x2/, gt_k_x2/, gt/ ...).")
]
EvalOut = Annotated[
    Path,
    typer.Option("--out", "-o", help="Output folder; one per setting. Finished runs are resumed."),
]
Scale = Annotated[int, typer.Option(help="Which LR images and kernels: 2 or 4.")]
Seeds = Annotated[str, typer.Option(help="Seeds, e.g. 0,1,2: spread across seeds is reported.")]
Ids = Annotated[str | None, typer.Option(help="Only these image numbers, e.g. 1-10,15.")]
Iters = Annotated[
    int | None, typer.Option(help="Training iterations (default: the config's 3000).")
]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")]
AuthorsDefects = Annotated[
    bool,
    typer.Option(
        "--authors-defects",
        help="Reproduce the authors' code defects 1-3 (for comparison tables).",
    ),
]
Batch = Annotated[
    int, typer.Option(help="Train this many (image, seed) runs at once (same results).")
]
Restarts = Annotated[
    int,
    typer.Option(
        help="Train each (image, seed) run K times and combine them; rows then carry the "
        "confidence and the report its rank correlation with the aligned kernel PSNR."
    ),
]
HrDir = Annotated[Path, typer.Argument(help="Folder of HR images (png/jpg/...).")]
SynthOut = Annotated[Path, typer.Option("--out", "-o", help="Output dataset folder.")]
Count = Annotated[
    int | None, typer.Option(help="Number of images (evenly spread over the sorted list).")
]
SetSeed = Annotated[int, typer.Option(help="Set seed: same seed, same set.")]


def register(app: typer.Typer) -> None:
    """Add ``eval`` and ``synth`` to ``app``."""
    app.command("eval")(eval_command)
    app.command("synth")(synth_command)


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """``"0,1,2"`` or ranges ``"1-5,9"`` -> ``(0, 1, 2)`` / ``(1, 2, 3, 4, 5, 9)``."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise KGEngineError(f"{what}: expected integers like 0,1,2 or 1-5, got {text!r}") from None
    if not out:
        raise KGEngineError(f"{what}: empty list {text!r}")
    return tuple(dict.fromkeys(out))


@cli_errors
def eval_command(
    dataset_dir: DatasetDir,
    out: EvalOut,
    scale: Scale = 2,
    seeds: Seeds = "0,1,2",
    ids: Ids = None,
    iters: Iters = None,
    device: Device = "auto",
    authors_defects: AuthorsDefects = False,
    batch: Batch = 1,
    restarts: Restarts = 1,
) -> None:
    """Estimate every LR image of a DIV2KRK-layout folder and score the kernels.

    Scores the isotropic and bicubic baselines too. Writes results.json, report.md, kernels.png.
    """
    from kgengine.accuracy import METRICS, EvalSettings, metric_table, run_eval
    from kgengine.accuracy.report import confidence_statement

    if scale not in (2, 4):
        fail(f"--scale must be 2 or 4, got {scale}")
    if batch < 1:
        fail(f"--batch must be at least 1, got {batch}")
    if restarts < 1:
        fail(f"--restarts must be at least 1, got {restarts}")
    settings = EvalSettings(
        scale=scale,
        seeds=parse_int_list(seeds, "--seeds"),
        iters=iters,
        device=device,
        authors_defects=authors_defects,
        ids=parse_int_list(ids, "--ids") if ids else None,
        restarts=restarts,
    )
    with progress_hooks(f"eval x{scale}") as hooks:
        results = run_eval(dataset_dir, out, settings, hooks=hooks, batch=batch)
    summ, method = results["summary"], results["settings"]["method"]
    typer.echo(metric_table(summ, method, METRICS[0]))
    if summ["confidence_vs_accuracy"] is not None:
        typer.echo(confidence_statement(summ["confidence_vs_accuracy"]))
    typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'kernels.png'}")


@cli_errors
def synth_command(hr_dir: HrDir, out: SynthOut, n: Count = None, seed: SetSeed = 0) -> None:
    """Make a seeded synthetic benchmark in the DIV2KRK layout (random anisotropic kernels)."""
    from kgengine.accuracy import make_div2krk_like

    if not hr_dir.is_dir():
        fail(f"{hr_dir}: not a folder")
    paths = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in HR_SUFFIXES)
    if not paths:
        fail(f"{hr_dir}: no images")
    with progress_hooks("synth") as hooks:
        manifest = make_div2krk_like(paths, out, seed=seed, n=n, hooks=hooks)
    typer.echo(f"wrote {len(manifest)} images to {out}")
