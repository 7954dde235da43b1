"""``kgengine eval`` (accuracy benchmark on a DIV2KRK-layout folder) and ``kgengine synth``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kgengine.errors import KGEngineError
from kgengine.progress import make_progress


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


def _run_eval(
    *,
    dataset_dir: Path,
    out_dir: Path,
    scale: int,
    seeds: str,
    ids: str | None,
    iters: int | None,
    device: str,
    authors_defects: bool,
    batch: int = 1,
) -> dict:
    from kgengine.evaluate import EvalSettings, run_eval

    settings = EvalSettings(
        scale=scale,
        seeds=parse_int_list(seeds, "--seeds"),
        iters=iters,
        device=device,
        authors_defects=authors_defects,
        ids=parse_int_list(ids, "--ids") if ids else None,
    )
    with make_progress() as bar:
        task = bar.add_task(f"eval x{scale}", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"eval x{scale} {label}")

        def on_error(msg: str) -> None:
            bar.console.print(f"[yellow]{msg}[/yellow]")

        return run_eval(dataset_dir, out_dir, settings, progress=progress, on_error=on_error,
                        batch=batch)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        dataset_dir: Annotated[
            Path, typer.Argument(help="Folder in the DIV2KRK layout (lr_x2/, gt_k_x2/, gt/ ...).")
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out", "-o", help="Output folder; one per setting. Finished runs are resumed."
            ),
        ],
        scale: Annotated[int, typer.Option(help="Which LR images and kernels: 2 or 4.")] = 2,
        seeds: Annotated[
            str, typer.Option(help="Seeds, e.g. 0,1,2: spread across seeds is reported.")
        ] = "0,1,2",
        ids: Annotated[
            str | None, typer.Option(help="Only these image numbers, e.g. 1-10,15.")
        ] = None,
        iters: Annotated[
            int | None, typer.Option(help="Training iterations (default: the config's 3000).")
        ] = None,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
        authors_defects: Annotated[
            bool,
            typer.Option(
                "--authors-defects",
                help="Reproduce the authors' code defects 1-3 (for comparison tables).",
            ),
        ] = False,
        batch: Annotated[
            int, typer.Option(help="Train this many (image, seed) runs at once (same results).")
        ] = 1,
    ) -> None:
        """Estimate every LR image of a DIV2KRK-layout folder and score the kernels.

        Scores the isotropic and bicubic baselines too. Writes results.json, report.md, kernels.png.
        """
        if scale not in (2, 4):
            typer.echo(f"error: --scale must be 2 or 4, got {scale}", err=True)
            raise typer.Exit(1)
        try:
            results = _run_eval(
                dataset_dir=dataset_dir,
                out_dir=out,
                scale=scale,
                seeds=seeds,
                ids=ids,
                iters=iters,
                device=device,
                authors_defects=authors_defects,
                batch=batch,
            )
        except KGEngineError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        from kgengine.evaluate import METRICS, metric_table

        summ, method = results["summary"], results["settings"]["method"]
        typer.echo(metric_table(summ, method, METRICS[0]))
        typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'kernels.png'}")

    @app.command("synth")
    def synth_cmd(
        hr_dir: Annotated[Path, typer.Argument(help="Folder of HR images (png/jpg/...).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output dataset folder.")],
        n: Annotated[
            int | None, typer.Option(help="Number of images (evenly spread over the sorted list).")
        ] = None,
        seed: Annotated[int, typer.Option(help="Set seed: same seed, same set.")] = 0,
    ) -> None:
        """Make a seeded synthetic benchmark in the DIV2KRK layout (random anisotropic kernels)."""
        from kgengine.synth import make_div2krk_like

        exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
        if not hr_dir.is_dir():
            typer.echo(f"error: {hr_dir}: not a folder", err=True)
            raise typer.Exit(1)
        paths = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in exts)
        if not paths:
            typer.echo(f"error: {hr_dir}: no images", err=True)
            raise typer.Exit(1)
        try:
            with make_progress() as bar:
                task = bar.add_task("synth", total=None)

                def progress(done: int, total: int, name: str) -> None:
                    bar.update(task, completed=done, total=total, description=f"synth {name}")

                manifest = make_div2krk_like(paths, out, seed=seed, n=n, progress=progress)
        except KGEngineError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"wrote {len(manifest)} images to {out}")
