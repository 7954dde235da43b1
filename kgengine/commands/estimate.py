"""``kgengine estimate IMAGE... -o OUTDIR``: estimate the SR kernel of each image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer

from kgengine.atomic import exclusive_lock, remove_stale_tmp
from kgengine.commands._common import (
    at_least,
    auto_batch,
    check_counts,
    check_defects,
    check_device,
    check_mode,
    check_out_dir,
    check_seed,
    check_stop,
    cli_errors,
    note_cold_cache,
    one_line,
)
from kgengine.config import KernelGANConfig, parse_overrides
from kgengine.errors import BadImageError, KGEngineError, brief_list, shown
from kgengine.hooks import JobHooks
from kgengine.progress import progress_hooks

Restarts = Annotated[
    int, typer.Option(help="Train K seeds per image in one batch and combine them (the "
                           "report keeps their agreement).")]
Stop = Annotated[
    str, typer.Option(help="auto (the default since 0.9.12: stop once the kernel stopped "
                           "changing, measured to cost no accuracy, docs/PERFORMANCE.md) or "
                           "full (every iteration).")]
Threads = Annotated[
    int, typer.Option(help="CPU threads for torch (0, the default: all cores, capped at the "
                           "idle ones; on a busy machine fewer threads are much faster).")]
Batch = Annotated[int, typer.Option(help=(
    "Images trained together (0 = auto: 8 // --restarts on a CPU, fewer where the free "
    "memory holds fewer of the largest image; there an image's kernel is the same bytes at "
    "any batch size; 1 on a GPU, where it is not)."))]
#: One ``estimate`` at a time writes into an output folder (:func:`exclusive_lock`).
LOCK_FILE = ".estimate.lock"
Recursive = Annotated[bool, typer.Option(
    "--recursive", "-r", help="Also take images from sub-folders of folder IMAGEs.")]


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate)


@cli_errors
def estimate(
    images: Annotated[list[Path], typer.Argument(
        help="LR images (PNG/JPEG/TIFF/... or .npy), or folders of them.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    x4: Annotated[bool, typer.Option("--x4", help=(
        "The images are x4 LR images: derive the x4 kernel too. The x2 kernel's "
        "post-processing then reads the spectrum as x4's, so it differs from a run "
        "without --x4."))] = False,
    iters: Annotated[int | None, typer.Option(
        help="Iterations of each training (default: 3000, the paper's, for one run; 1250 for "
             "each restart with --restarts K > 1).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed, the same for every image.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    mode: Annotated[
        str, typer.Option(help="composed (fast) or layers (the authors' computation).")
    ] = "composed",
    authors_defects: Annotated[
        bool, typer.Option("--authors-defects", help="Defects 1-3 of the authors' code, as "
                                                     "they are (the default since 0.2).")
    ] = False,
    fix_defects: Annotated[
        bool, typer.Option("--fix-defects", help="Fix defects 1-3 of the authors' code "
                                                 "(kgengine 0.1's default; measured worse).")
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Config override key=value (repeatable), e.g. --set lr_g=1e-4."),
    ] = None,
    restarts: Restarts = 1,
    stop: Stop = "auto",
    force: Annotated[bool, typer.Option(help="Redo images whose outputs already exist.")] = False,
    threads: Threads = 0,
    batch: Batch = 0,
    recursive: Recursive = False,
) -> None:
    """Estimate the x2 (and x4) kernel of each image and write .npy, .mat, PNG and a JSON report.

    A folder stands for the image files directly inside it (with -r, also in its
    sub-folders; OUTDIR and kgengine pool folders left out), in name order. Outputs are
    named by the image's stem (``<stem>-<8 hex digits of its SHA-256>`` where two inputs
    share one; a file whose outputs are already in OUTDIR keeps their name). Images whose
    outputs in OUTDIR were made from the same file (its SHA-256) with the same settings
    (seed, iters, config, x4, restarts, mode, stop) are skipped (resume); others are redone and
    replaced, with a line saying what differs. The rest are trained
    BATCH at a time, every image with the same seed, and each image's files are written
    when its batch ends. A bad image or a file that cannot be written is reported on one
    line and skipped; the exit code is 1 if any image failed, after all the others are done.
    """
    for option, value, low in (("--iters", iters, 1), ("--batch", batch, 0)):
        at_least(option, value, low)
    check_counts(threads=threads, restarts=restarts)
    check_seed("--seed", seed)
    check_device(device)
    check_mode(mode)
    check_stop(stop)
    check_defects(authors_defects, fix_defects)
    import torch

    from kgengine.sysinfo import auto_threads

    torch.set_num_threads(threads if threads > 0 else auto_threads(torch.get_num_threads()))
    images, empty = _expand(images, recursive, out)
    failed = empty + _estimate(images, out, x4=x4, iters=iters, seed=seed, device=device,
                               mode=mode, fix_defects=fix_defects, overrides=overrides or [],
                               force=force, restarts=restarts, stop=stop, batch=batch)
    if failed:
        typer.echo(f"{failed} of {len(images) + empty} image(s) failed", err=True)
        raise typer.Exit(1)


def _expand(images: list[Path], recursive: bool, out: Path) -> tuple[list[Path], int]:
    """(the IMAGE arguments with each folder replaced by its image files
    (:func:`kgengine.farm.inputs.folder_images`: OUTDIR, unless it is that folder, and
    kgengine's own outputs left out, on one line), each file once (a folder and a file in
    it; two spellings of one file, on one line), the number of folders without images).
    Files stay as given, so a missing one fails alone, naming itself; a folder without
    images fails alone too (one error line), and the others go on."""
    from kgengine.farm.inputs import folder_images, real_path

    def log(message: str) -> None:
        typer.echo(message, err=True)

    paths: dict[Path, Path] = {}  # resolved -> as given, in first-seen order
    empty = 0
    for p in images:
        found = [p]
        if p.is_dir():
            # OUTDIR named as the folder to read: its images are read, its kernels are not
            mine = [] if real_path(p) == real_path(out) else [out]
            found = folder_images(p, recursive, exclude=mine, log=log)
            if not found:
                empty += 1
                _failed(KGEngineError(f"{shown(p)}: no image files in this folder" + (
                    "" if recursive else " (-r also reads its sub-folders)")))
        for f in found:
            first = paths.setdefault(real_path(f), f)
            if os.path.abspath(first) != os.path.abspath(f):
                log(f"skip {shown(f)}: same file as {shown(first)}")
    return list(paths.values()), empty


def _estimate(
    images: list[Path], out: Path, *, x4: bool, iters: int | None, seed: int, device: str,
    mode: str, overrides: list[str], force: bool, restarts: int = 1,
    fix_defects: bool = False, stop: str = "auto", batch: int = 0,
) -> int:
    from kgengine.api import resolve_device
    from kgengine.outputs import requested_settings
    from kgengine.stopping import stop_rule_of, stop_setting

    base = KernelGANConfig.defects_fixed() if fix_defects else KernelGANConfig()
    try:
        cfg = (base if iters is None else base.with_iters(iters)).replace(
            **parse_overrides(overrides))
    except ValueError as exc:
        raise KGEngineError(str(exc)) from None
    for key in ("iters", "restart_iters"):  # --iters N sets both: --set key=M as well
        if iters is not None and getattr(cfg, key) != iters:
            raise KGEngineError(f"--iters {iters} and --set {key}={getattr(cfg, key)} "
                                "disagree: give one of them")
    on_cpu = resolve_device(device).type == "cpu"
    given, batch = batch, auto_batch(batch, device, restarts)
    if not any(os.path.lexists(p) for p in images):  # nothing to read: no folder made
        for p in images:
            _failed(BadImageError(p, "no such file"))
        return len(images)
    check_out_dir(out)
    wanted = requested_settings(seed=seed, iters=cfg.run_iters(restarts), config=cfg.to_dict(),
                                x4=x4, restarts=restarts, mode=mode,
                                stop=stop_setting(stop_rule_of(stop)))
    failed = 0
    with exclusive_lock(out, LOCK_FILE, "another kgengine estimate is writing into this folder"), \
            progress_hooks("images") as hooks:
        stale = remove_stale_tmp(out)  # a run killed mid-write (SIGKILL) left them
        if stale:
            hooks.log(f"{shown(out)}: removed {len(stale)} temporary file(s) of an "
                      "interrupted run")
        sources = _sources(images, out)
        hooks.total(len(images))
        # smallest first: a batch holds its images padded to the largest one
        sizes = {p: _pixels(p) for p in images
                 if not _done(p, sources[p], out, wanted, force, hooks)}
        todo = sorted(sizes, key=sizes.__getitem__)
        if todo:
            note_cold_cache(hooks.log)
        start = 0
        for n in _batch_lengths([sizes[p] for p in todo], batch, given == 0 and on_cpu,
                                restarts):
            for path, state in _train(todo[start : start + n], sources, out, cfg, wanted,
                                      device, hooks):
                failed += state == "failed"
                hooks.item_finished(sources[path].name, state, "")
            start += n
    return failed


def _batch_lengths(sizes: list[int], batch: int, by_memory: bool, restarts: int) -> list[int]:
    """The batches' lengths for images of these H·W (in training order): ``batch`` each,
    or, for the automatic CPU batch, as many as the host's memory holds
    (:func:`kgengine.host_memory.memory_batches`; the kernels are the same bytes)."""
    if by_memory:
        from kgengine.host_memory import memory_batches

        return memory_batches(sizes, batch, restarts)
    return [min(batch, len(sizes) - i) for i in range(0, len(sizes), batch)]


def _pixels(path: Path) -> int:
    """H·W of an image from its header (0 where it cannot be read: it fails when read)."""
    from kgengine.imageio import image_size

    try:
        w, h = image_size(path)
    except KGEngineError:
        return 0
    return w * h


class Source(NamedTuple):
    """An input's output name and the SHA-256 (hex) of its bytes (None: unreadable)."""

    name: str
    sha256: str | None


def _sources(images: list[Path], out: Path) -> dict[Path, Source]:
    """Each image's :class:`Source`. An input whose outputs are already in ``out`` under its
    stem or ``<stem>-<8 hex digits of its content hash>`` (the report's ``image_sha256`` is
    its hash) keeps that name, so adding a photo of the same name to a finished job renames
    and redoes nothing. Any other input is named by the farm's rule
    (:func:`kgengine.farm.inputs.unique_names`): its stem, or the hashed name where another
    input (or a kept name) has the stem. A name other than the stem is said on one line."""
    from kgengine.farm.inputs import unique_names
    from kgengine.farm.seeds import content_hash_or_none

    digests = {p: content_hash_or_none(p) for p in images}
    kept = _kept_names(images, digests, out)
    rest = [p for p in images if p not in kept]
    names = {**kept, **dict(zip(rest, unique_names(rest, [digests[p] for p in rest],
                                                   set(kept.values())), strict=True))}
    for p in images:
        if names[p] == p.stem:
            continue
        why = (f"keeps the name of its earlier outputs in {shown(out)}" if p in kept else
               "its name is too long for its output files" if not names[p].startswith(p.stem)
               else f"another input has the name {shown(p.stem)!r}")
        typer.echo(f"{shown(p)}: {why}; its outputs are named {shown(names[p])!r}", err=True)
    return {p: Source(names[p], digests[p]) for p in images}


def _kept_names(images: list[Path], digests: dict[Path, str | None],
                out: Path) -> dict[Path, str]:
    """The inputs whose outputs are in ``out`` under the stem or a hashed name (``<stem>-``
    8, 12, ... hex digits, as :func:`~kgengine.farm.inputs.unique_names` lengthens them
    between files of the same content), made from this very content (the report's
    ``image_sha256``): input -> that name, each name given once."""
    from kgengine.farm.inputs import short_stem
    from kgengine.outputs import stored_image_hash

    kept: dict[Path, str] = {}
    for p in images:
        h = digests[p]
        if h is None:  # unreadable: it fails, naming itself, when read
            continue
        stem = short_stem(p, h)
        for name in (stem, *(f"{stem}-{h[:n]}" for n in range(8, 65, 4))):
            if name not in kept.values() and stored_image_hash(out, name) == h:
                kept[p] = name
                break
    return kept


def _done(path: Path, src: Source, out: Path, wanted: dict[str, Any], force: bool,
          hooks: JobHooks) -> bool:
    """Whether ``path``'s outputs in ``out`` were made from this image with the same settings
    (then it is skipped, and counted); says why it is redone where they were not."""
    from kgengine.outputs import stored_differences

    diff = None if force else stored_differences(out, src.name, wanted, src.sha256)
    if diff == []:
        hooks.log(f"skip {shown(path)} (done)")
        hooks.item_finished(src.name, "skipped", "")
        return True
    if diff:
        what = "from another file of its name" if diff[0].startswith("image ") else (
            "with other settings")
        hooks.log(f"{shown(path)}: redone, its outputs were made {what}: {brief_list(diff, 5)}")
    return False


def _train(paths: list[Path], sources: dict[Path, Source], out: Path, cfg: KernelGANConfig,
           wanted: dict[str, Any], device: str, hooks: JobHooks) -> list[tuple[Path, str]]:
    """Read, train (one batch) and write ``paths``: each path's state, done or failed."""
    from kgengine.api import estimate_kernels
    from kgengine.imageio import read_image
    from kgengine.prepare import min_image_side

    states, imgs, ok = [], [], []
    for path in paths:
        try:
            imgs.append(read_image(path, min_size=min_image_side(cfg)))
            ok.append(path)
        except KGEngineError as exc:
            states.append((path, _failed(exc)))
    if not ok:
        return states
    hooks.batch_started([shown(p.name) for p in ok], wanted["iters"])
    try:
        results = estimate_kernels(
            imgs, seeds=[wanted["seed"]] * len(ok), names=[str(p) for p in ok],
            x4=wanted["x4"], device=device, config=cfg, mode=wanted["mode"],
            callback=hooks.batch_progress, on_diverge="return", restarts=wanted["restarts"],
            stop=wanted["stop"])
    except (BadImageError, MemoryError) as exc:  # refused when prepared, or too large for
        # this memory: each image alone says which (a photo too large even alone fails)
        if len(ok) == 1:
            return [*states, (ok[0], _failed(_no_memory(ok[0], imgs[0]) if isinstance(
                exc, MemoryError) else exc))]
        imgs.clear()  # freed before the retries
        return states + [s for p in ok
                         for s in _train([p], sources, out, cfg, wanted, device, hooks)]
    return states + [(p, _write(p, sources[p], r, out, wanted["iters"], len(ok), hooks))
                     for p, r in zip(ok, results, strict=True)]


def _no_memory(path: Path, img: Any) -> KGEngineError:
    """The one-line failure of an image too large to estimate in this machine's memory."""
    h, w = img.shape[:2]
    return KGEngineError(f"{shown(path)}: not enough memory to estimate its kernel ({w}x{h} "
                         "px); downscale it or use a machine with more memory")


def _write(path: Path, src: Source, res: Any, out: Path, iters: int, n: int,
           hooks: JobHooks) -> str:
    """Write one image's outputs (``res`` an :class:`EstimateResult`, or the error of a
    diverged training) and say so: its state."""
    from kgengine.outputs import write_outputs

    try:
        if isinstance(res, Exception):
            raise res
        res.name = src.name
        res.report["image"] = str(path)
        res.report["image_sha256"] = src.sha256
        write_outputs(res, out)
    except KGEngineError as exc:
        return _failed(exc)
    conf = "" if res.confidence is None else f", confidence {res.confidence:.3f}"
    used = res.report.get("iters_used", iters)
    stopped = f", stopped at {used}" if used < iters else ""
    batch = f"a batch of {n}, " if n > 1 else ""
    hooks.log(f"{shown(path)}: done in {res.report['wall_s']:.1f} s "
              f"({batch}{res.report['ms_per_iter']:.2f} ms/iter{conf}{stopped})")
    if res.report.get("collapsed"):
        typer.echo(f"warning: {shown(path)}: G's kernel sums to {res.report['raw_sum']:.3g}, "
                   "not about 1 (it collapsed, or trained too few iterations to grow): the "
                   "saved kernel is the post-processing's alone, confidence 0; try another "
                   "--seed or --restarts", err=True)
    return "done"


def _failed(exc: BaseException) -> str:
    """The one line naming the file, on stderr: the state "failed"."""
    typer.echo(f"error: {one_line(str(exc))}", err=True)
    return "failed"
