"""``kgengine eval`` (accuracy benchmark on a DIV2KRK-layout folder) and ``kgengine synth``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from kgengine.commands._common import (
    MAX_SEED,
    at_least,
    auto_batch,
    check_counts,
    check_defects,
    check_device,
    check_out_dir,
    check_seed,
    check_stop,
    cli_errors,
    fail,
    note_cold_cache,
    one_line,
)
from kgengine.env_settings import check_env
from kgengine.errors import KGEngineError, brief_list
from kgengine.hooks import JobHooks
from kgengine.imageio import folder_image
from kgengine.progress import progress_hooks

#: Most values ``--ids`` / ``--seeds`` may list.
MAX_LIST = 100_000

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
    int | None, typer.Option(help="Iterations of each training (default: 3000 for one run, 1250 "
                                  "for each restart with --restarts K > 1).")
]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")]
AuthorsDefects = Annotated[
    bool,
    typer.Option(
        "--authors-defects",
        help="The authors' code defects 1-3, as they are (the default since 0.2).",
    ),
]
FixDefects = Annotated[
    bool,
    typer.Option("--fix-defects",
                 help="Fix defects 1-3 of the authors' code (kgengine 0.1; measured worse)."),
]
Batch = Annotated[
    int, typer.Option(help="Train this many (image, seed) runs at once (0 = auto: 8 // "
                           "--restarts on a CPU, where the results are the same bytes at any "
                           "batch size; 1 on a GPU, where they are not).")
]
Stop = Annotated[
    str,
    typer.Option(
        help="auto (the default since 0.9.12: stop each training once its kernel stopped "
        "changing) or full (every iteration); compare the two on your own data."
    ),
]
Restarts = Annotated[
    int,
    typer.Option(
        help="Train each (image, seed) run K times and combine them."
    ),
]
HrDir = Annotated[Path, typer.Argument(help="Folder of HR images (png/jpg/...).")]
SynthOut = Annotated[Path, typer.Option("--out", "-o", help="Output dataset folder.")]
Count = Annotated[
    int | None,
    typer.Option(help="Number of images (evenly spread over the sorted list). Default: all."),
]
SetSeed = Annotated[int, typer.Option(help="Set seed: same seed, same set.")]


def register(app: typer.Typer) -> None:
    """Add ``eval`` and ``synth`` to ``app``."""
    app.command("eval")(eval_command)
    app.command("synth")(synth_command)


def parse_int_list(text: str, what: str, low: int = 0, high: int = MAX_SEED,
                   max_count: int = MAX_LIST) -> tuple[int, ...]:
    """``"0,1,2"`` or ranges ``"1-5,9"`` -> ``(0, 1, 2)`` / ``(1, 2, 3, 4, 5, 9)``.

    Raises:
        KGEngineError: not integers, an empty list, a value outside ``[low, high]`` or more
            than ``max_count`` values (checked before any list is built).
    """
    parts: list[tuple[int, int]] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            a, _, b = part.partition("-")
            parts.append((int(a), int(b) if b else int(a)))
    except ValueError:
        raise KGEngineError(f"{what}: expected integers like 0,1,2 or 1-5, got "
                            f"{one_line(text, 80)!r}") from None
    if not parts:
        raise KGEngineError(f"{what}: empty list {one_line(text, 80)!r}")
    for a, b in parts:
        if not low <= a <= high or not low <= b <= high:
            raise KGEngineError(f"{what}: values must lie in [{low}, {high}], got {a}-{b}")
    count = sum(max(0, b - a + 1) for a, b in parts)
    if count > max_count:
        raise KGEngineError(f"{what}: {count} values, at most {max_count}")
    out = [i for a, b in parts for i in range(a, b + 1)]
    if not out:
        raise KGEngineError(f"{what}: empty list {one_line(text, 80)!r}")
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
    fix_defects: FixDefects = False,
    batch: Batch = 0,
    restarts: Restarts = 1,
    stop: Stop = "auto",
) -> None:
    """Estimate every LR image of a DIV2KRK-layout folder and score the kernels.

    Scores the isotropic and bicubic baselines too. Writes results.json, report.md, kernels.png.
    An image that fails (unreadable, bad kernel, a file that cannot be written) is reported
    and skipped; the exit code is then 1, after all the others are scored.
    """
    from kgengine.accuracy import METRICS, EvalSettings, metric_table, run_eval
    from kgengine.accuracy.report import confidence_statement

    if scale not in (2, 4):
        fail(f"--scale must be 2 or 4, got {scale}")
    check_counts(restarts=restarts)
    for option, value, low in (("--batch", batch, 0),
                               ("--iters", iters, 1)):
        at_least(option, value, low)
    check_device(device)
    check_defects(authors_defects, fix_defects)
    batch = auto_batch(batch, device, restarts)
    settings = EvalSettings(
        scale=scale,
        seeds=parse_int_list(seeds, "--seeds"),
        iters=iters,
        device=device,
        authors_defects=authors_defects and not fix_defects,
        fix_defects=fix_defects,
        ids=parse_int_list(ids, "--ids", low=1) if ids else None,
        restarts=restarts,
        stop=stop,
    )
    check_stop(stop)
    from kgengine.accuracy.dataset import list_dataset

    if out.exists() and not out.is_dir():
        check_out_dir(out)  # "is a file": said first, as every command does
    list_dataset(dataset_dir, scale, settings.ids)  # a bad dataset or --ids: nothing written
    check_out_dir(out)
    with progress_hooks(f"eval x{scale}") as hooks:
        note_cold_cache(hooks.log)
        results = run_eval(dataset_dir, out, settings, hooks=hooks, batch=batch)
    summ, method = results["summary"], results["settings"]["method"]
    typer.echo(metric_table(summ, method, METRICS[0]))
    if summ["confidence_vs_accuracy"] is not None:
        typer.echo(confidence_statement(summ["confidence_vs_accuracy"]))
    typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'kernels.png'}")
    if results["errors"]:
        skipped = [e["image"] for e in results["errors"]]
        typer.echo(f"error: {len(skipped)} image(s) skipped: {brief_list(skipped)}", err=True)
        raise typer.Exit(1)


@cli_errors
def synth_command(hr_dir: HrDir, out: SynthOut, n: Count = None, seed: SetSeed = 0) -> None:
    """Make a seeded synthetic benchmark in the DIV2KRK layout (random anisotropic kernels).

    A bad HR file (or one whose outputs cannot be written) is reported on one line and
    skipped, the others are written; the exit code is then 1.
    """
    from kgengine.accuracy import make_div2krk_like

    check_env()  # before anything is written, as every other command
    at_least("--n", n, 1)
    check_seed("--seed", seed)
    if not hr_dir.is_dir():
        fail(f"{hr_dir}: not a folder")
    paths = sorted(p for p in hr_dir.iterdir() if folder_image(p))
    if not paths:
        fail(f"{hr_dir}: no images")
    check_out_dir(out)
    failed: list[str] = []
    with progress_hooks("synth") as hooks:
        manifest = make_div2krk_like(paths, out, seed=seed, n=n,
                                     hooks=_failures_as_errors(hooks, failed))
    typer.echo(f"wrote {len(manifest)} images to {out}")
    if failed:
        typer.echo(f"error: {len(failed)} HR image(s) skipped", err=True)
        raise typer.Exit(1)


def _failures_as_errors(hooks: JobHooks, failed: list[str]) -> JobHooks:
    """``hooks`` with each failed item printed as one ``error: <reason>`` line and listed in
    ``failed``."""

    def item_finished(name: str, state: str, detail: str) -> None:
        if state == "failed":
            failed.append(name)
            hooks.log(f"error: {one_line(detail)}")
            detail = ""  # printed: the display only counts it
        hooks.item_finished(name, state, detail)

    return replace(hooks, item_finished=item_finished)
