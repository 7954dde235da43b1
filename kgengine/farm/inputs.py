"""The farm's INPUT arguments -> a list of image files, and unique output names.

An INPUT is one of

- an image file (any suffix: a file that is not an image ends as a failed row with the reason);
- a folder: the image files directly inside it (:func:`kgengine.imageio.image_name`:
  suffixes :data:`kgengine.imageio.IMAGE_SUFFIXES`, case insensitive, hidden files
  skipped), in sorted name order; with ``recursive=True`` also those
  in its sub-folders (sorted by relative path, hidden folders skipped);
- a ``.txt`` list: one path per line (blank lines and lines starting with ``#`` ignored;
  relative paths are relative to the list's folder); each entry is a file or a folder as
  above. Entries that do not exist are kept, so that they end as failed rows naming the file.

Paths are made absolute, their symbolic links kept (a photo is named after the path listed,
as by ``estimate``; since 0.9.29), and a file met again is kept once, in first-seen order
(a path that reaches an earlier one through a symbolic link is reported on one line).
A command-line INPUT that does not exist is an error (most likely a typo).

kgengine's own outputs are never taken, so that a run twice on ``photos -r -o photos/out``
does not train on its own ``*_kernel.png`` heat maps:

- files inside a kgengine pool folder (one holding ``manifest.sqlite``, or inside one; the
  farm's own POOL_DIR and an ``exclude`` folder too), even when named;
- in a folder that holds ``kgengine estimate`` reports (one of its first few
  ``<stem>_report.json`` is a kgengine report naming ``<stem>_kernel_x2.npy``), the kernel
  files :data:`OUTPUT_ENDINGS` (the folder's other images are taken);
- a ``kgengine degrade`` output folder (holding ``degrade_settings.json``) that a recursive
  walk comes to is not entered (named, it is read: its ``lr/`` images are real inputs to a
  test of the estimator).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from kgengine.atomic import why as os_reason
from kgengine.errors import KGEngineError, brief_list, shown
from kgengine.farm.manifest import MANIFEST_FILE
from kgengine.imageio import image_name, listed_file

#: Files read as lists of paths.
LIST_SUFFIXES = (".txt",)
#: kgengine's image-like output files (:func:`kgengine.outputs.output_paths`; not imported:
#: it loads torch), left out of folders that hold estimate reports.
OUTPUT_ENDINGS = ("_kernel.png", "_kernel_x2.npy", "_kernel_x4.npy")
#: An estimate report, ``<stem>_report.json``; at most :data:`REPORTS_READ` are read a folder.
REPORT_ENDING = "_report.json"
REPORTS_READ = 3
#: A degrade output folder's settings (:data:`kgengine.degradation.manifest.SETTINGS`).
DEGRADE_SETTINGS = "degrade_settings.json"
#: Larger JSON files are not read to recognise an output folder.
_MAX_JSON = 16 << 20

#: Longest output name stem kept as it is, in bytes (:func:`short_stem`).
MAX_STEM_BYTES = 200

Log = Callable[[str], None]


def expand_inputs(inputs: Sequence[str | os.PathLike], recursive: bool = False,
                  exclude: Sequence[str | os.PathLike] = (),
                  log: Log = lambda m: None) -> list[Path]:
    """Expand files, folders and ``.txt`` lists into absolute image paths (see module doc).

    kgengine's own outputs (pool folders, an ``exclude`` folder such as the farm's own
    POOL_DIR, the kernel files of estimate output folders, degrade output folders) are left
    out, with one ``log`` line saying which: a farm never trains on its own outputs.

    Raises:
        KGEngineError: an INPUT does not exist, or a list file cannot be read.
    """
    out: list[Path] = []
    seen: dict[Path, Path] = {}  # resolved -> as first met
    own = _OwnOutputs(exclude)
    left_out: list[Path] = []
    for inp in inputs:
        p = Path(inp).expanduser()
        if p.is_dir():
            found = _folder(p, recursive, own)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            found = _list_file(p, recursive, own)
        elif p.is_file():
            found = [p]
        else:
            raise KGEngineError(f"{shown(p)}: no such file or folder")
        for f in found:
            r = real_path(f)
            if r in seen:
                if os.path.abspath(f) != os.path.abspath(seen[r]):  # a link, not a repeat
                    log(f"skip {shown(f)}: same file as {shown(seen[r])}")
                continue
            seen[r] = f
            # the path as listed, links kept: a photo is named after it, and a link pointed
            # at another file is then a changed photo (0.9.29: the target's path was kept,
            # so a git-annex photo replaced under its name became a second row)
            (left_out if own(r.parent) else out).append(Path(os.path.abspath(f)))
    own.report(log, left_out)
    return out


def real_path(path: Path) -> Path:
    """``path`` absolute, its links followed as far as they go: a symbolic-link loop gives
    the loop's own path (``Path.resolve`` raises RuntimeError there before Python 3.13),
    which then fails alone when read, naming itself; a link to nothing stays the link, so
    that its error names the file the user listed, not the missing target."""
    real = os.path.realpath(path)
    return Path(real if os.path.exists(real) else os.path.abspath(path))


def folder_images(folder: str | os.PathLike, recursive: bool = False,
                  exclude: Sequence[str | os.PathLike] = (), log: Log = lambda m: None
                  ) -> list[Path]:
    """The image files that a folder INPUT gives (see the module docstring; sorted, hidden
    files and kgengine's own outputs left out, with one ``log`` line saying which), without
    those inside an ``exclude`` folder (e.g. the output folder of ``kgengine estimate``)."""
    own = _OwnOutputs(exclude)
    found = _folder(Path(folder), recursive, own)
    own.report(log, [f for f in found if own(f.parent)])
    return [f for f in found if not own(f.parent)]


def folders_without_images(inputs: Sequence[str | os.PathLike], recursive: bool = False,
                           exclude: Sequence[str | os.PathLike] = ()) -> list[str]:
    """One message per folder or ``.txt`` list INPUT that gives no image file, and per
    file INPUT inside a kgengine pool folder (see the module docstring); a folder is walked
    only until its first image.

    Raises:
        KGEngineError: an INPUT does not exist, or a list cannot be read (before anything
            is written).
    """
    messages = []
    for inp in inputs:
        p = Path(inp).expanduser()
        if not p.exists():
            raise KGEngineError(f"{shown(p)}: no such file or folder")
        own = _OwnOutputs(exclude)
        if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            if not [f for f in _list_file(p, recursive, own) if not own(real_path(f).parent)]:
                messages.append(f"{shown(p)}: lists no image files")
            continue
        if not p.is_dir():
            if own(real_path(p).parent):
                messages.append(f"{shown(p)}: inside a kgengine pool or output folder, "
                                "never read as input")
            continue
        if own(p):
            messages.append(f"{shown(p)}: a kgengine pool or output folder, never read as input")
        elif not any(not own(f.parent) for f in _walk(p, recursive, own)):
            messages.append(f"{shown(p)}: no image files in this folder" + (
                "" if recursive else " (-r also reads its sub-folders)"))
    return messages


class _OwnOutputs:
    """kgengine's own outputs met while expanding INPUTs (see the module docstring).

    ``own(folder)``: is ``folder`` a pool folder (it or a parent holds ``manifest.sqlite``,
    or is one of ``exclude``)? Memoised per folder. The lists record what was left out.
    """

    def __init__(self, exclude: Sequence[str | os.PathLike]) -> None:
        self.excluded = {real_path(Path(e)) for e in exclude}
        self.known: dict[Path, bool] = dict.fromkeys(self.excluded, True)
        self.pools: list[Path] = []  # pool folders a recursive walk did not enter
        self.outdirs: list[Path] = []  # ``exclude`` folders (not pools) it did not enter
        self.degrade: list[Path] = []  # degrade output folders it did not enter
        self.estimate: list[Path] = []  # estimate output folders whose kernel files ...
        self.kernels = 0  # ... were left out, and how many
        self.unreadable: list[tuple[Path, OSError]] = []  # folders a walk could not look in

    def __call__(self, folder: Path) -> bool:
        folder = real_path(folder)
        if folder not in self.known:
            try:
                here = (folder / MANIFEST_FILE).is_file()
            except OSError:  # a path too long for the system: its files fail alone when read
                here = False
            self.known[folder] = here or (folder.parent != folder and self(folder.parent))
        return self.known[folder]

    def enter(self, root: Path, dirs: Iterable[str]) -> list[str]:
        """The sub-folders of ``root`` a recursive walk enters, sorted: hidden ones, pool
        folders and degrade output folders left out (the latter two noted)."""
        keep = []
        for d in sorted(dirs):
            p = root / d
            if d.startswith("."):
                continue
            try:
                _is_degrade_output(p)
            except OSError as exc:  # e.g. a path longer than the system takes
                self.unreadable.append((p, exc))
                continue
            if self(p):
                pool = real_path(p) not in self.excluded or (p / MANIFEST_FILE).is_file()
                (self.pools if pool else self.outdirs).append(p)
            elif _is_degrade_output(p):
                self.degrade.append(p)
            else:
                keep.append(d)
        return keep

    def images(self, folder: Path, names: Iterable[str]) -> list[Path]:
        """The image files among ``names`` (the files in ``folder``), sorted; the kernel
        files :data:`OUTPUT_ENDINGS` left out (and noted) if ``folder`` holds estimate
        reports."""
        names = sorted(names)
        found = [n for n in names if image_name(n)]
        kernels = [n for n in found if n.endswith(OUTPUT_ENDINGS)]
        if kernels and _holds_reports(folder, names):
            self.estimate.append(folder)
            self.kernels += len(kernels)
            found = [n for n in found if not n.endswith(OUTPUT_ENDINGS)]
        return [folder / n for n in found]

    def report(self, log: Log, in_pools: Sequence[Path]) -> None:
        """Say on one ``log`` line what was left out (nothing if nothing was); ``in_pools``:
        files left out for being inside a pool or ``exclude`` folder. A folder that could
        not be looked in gets its own line, with the reason."""
        for folder, exc in self.unreadable:
            log(f"skip {shown(folder)}: cannot read this folder ({os_reason(exc)})")
        parts = [f"the {what} folder(s) {brief_list(found, 3)}" for what, found in (
            ("pool", self.pools), ("output", self.outdirs), ("degrade output", self.degrade))
            if found]
        if self.estimate:
            parts.append(f"{self.kernels} kernel file(s) in the estimate output folder(s) "
                         f"{brief_list(self.estimate, 3)}")
        if in_pools:
            parts.append(f"{len(in_pools)} file(s) inside kgengine pool folders, e.g. "
                         f"{shown(in_pools[0])}")
        if not parts:
            return
        pools_only = not (self.outdirs or self.degrade or self.estimate)
        why = ("a farm never reads a pool folder as input" if pools_only
               else "kgengine never reads its own outputs as input")
        listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        log(f"skip {listed}: {why}")


def _folder(folder: Path, recursive: bool, own: _OwnOutputs) -> list[Path]:
    return sorted(_walk(folder, recursive, own), key=lambda p: p.relative_to(folder).parts)


def _walk(folder: Path, recursive: bool, own: _OwnOutputs) -> Iterator[Path]:
    """A folder INPUT's image files, a folder at a time (see :class:`_OwnOutputs`)."""
    if not recursive:
        yield from own.images(folder, [p.name for p in folder.iterdir() if listed_file(p)])
        return
    visited = {os.path.realpath(folder)}
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = own.enter(Path(root), dirs)  # pool folders' files would be left out anyway
        # linked sub-folders are followed (0.9.29: skipped without a word), each real folder
        # once, so that a link loop ends
        real = [os.path.realpath(Path(root) / d) for d in dirs]
        dirs[:] = [d for d, r in zip(dirs, real, strict=True)
                   if r not in visited and not visited.add(r)]
        # one listing rule: no FIFOs, sockets or hidden files (0.9.29: a FIFO hung the walk)
        yield from own.images(Path(root), [n for n in names if listed_file(Path(root) / n)])


def _read_json(path: Path) -> object:
    """The JSON value in ``path``; None if it cannot be read, is too large or is no JSON."""
    try:
        if path.stat().st_size > _MAX_JSON:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _holds_reports(folder: Path, names: Sequence[str]) -> bool:
    """Whether one of the first :data:`REPORTS_READ` ``<stem>_report.json`` in ``names``
    (sorted) is a report of ``kgengine estimate`` (or of a farm): a JSON object with
    ``image`` and ``kernel_x2``, whose ``files`` name ``<stem>_kernel_x2.npy``."""
    reports = [n for n in names if n.endswith(REPORT_ENDING)][:REPORTS_READ]
    for name in reports:
        report = _read_json(folder / name)
        stem = name[: -len(REPORT_ENDING)]
        if (isinstance(report, dict) and "image" in report and "kernel_x2" in report
                and isinstance(report.get("files"), dict)
                and report["files"].get("x2_npy") == f"{stem}_kernel_x2.npy"):
            return True
    return False


def _is_degrade_output(folder: Path) -> bool:
    """Whether ``folder`` is a ``kgengine degrade`` output folder: its
    ``degrade_settings.json`` is a JSON object with ``pool_fingerprint`` and ``hr_dir``."""
    path = folder / DEGRADE_SETTINGS
    if not path.is_file():
        return False
    settings = _read_json(path)
    return isinstance(settings, dict) and "pool_fingerprint" in settings and "hr_dir" in settings


def _list_file(path: Path, recursive: bool, own: _OwnOutputs) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is no path
    except (OSError, UnicodeDecodeError) as exc:
        raise KGEngineError(f"{shown(path)}: cannot read the list of paths ({exc})") from None
    found: list[Path] = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry).expanduser()
        if not p.is_absolute():
            p = path.parent / p
        found += _folder(p, recursive, own) if p.is_dir() else [p]
    return found


def unique_names(paths: Sequence[Path], hashes: Sequence[str | None], taken: set[str]) -> list[str]:
    """Output names for new images: the file stem (:func:`short_stem`), or
    ``<stem>-<8 hex>`` when it would clash.

    A stem is used as is when no other new image and no name in ``taken`` (images already in
    the manifest, which keep their names) has it. Otherwise the first 8 hex digits of the
    content hash (of the path when the file is unreadable) are appended, more if needed.

    Args:
        paths: new images' paths. hashes: their content hashes (None if unreadable).
        taken: names already used.
    Returns:
        one name per path, unique among themselves and not in ``taken``.
    """
    digests = [h or hashlib.sha256(str(p).encode()).hexdigest() for p, h in zip(
        paths, hashes, strict=True)]
    stems = [short_stem(p, d) for p, d in zip(paths, digests, strict=True)]
    counts = Counter(stems)
    used = set(taken)
    names = []
    for stem, digest in zip(stems, digests, strict=True):
        name = stem
        if counts[name] > 1 or name in used:
            n = 8
            name = f"{stem}-{digest[:n]}"
            while name in used:
                n += 4
                name = f"{stem}-{digest[:n]}" if n <= len(digest) else f"{name}x"
        used.add(name)
        names.append(name)
    return names


def short_stem(path: Path, digest: str) -> str:
    """``path``'s stem, or where its UTF-8 is longer than :data:`MAX_STEM_BYTES`, its first
    whole characters up to 160 bytes and ``~<8 hex digits of digest>``: every output file
    name of the image (the longest, a temporary ``.<stem>_generator.npz.<8>.tmp``, is 28
    bytes longer) then fits the usual 255-byte limit. Before 0.9.26 such an image was
    trained and could never be written."""
    stem = path.stem
    if len(stem.encode("utf-8", "surrogateescape")) <= MAX_STEM_BYTES:
        return stem
    cut = stem.encode("utf-8", "surrogateescape")[:160].decode("utf-8", "ignore")
    return f"{cut}~{digest[:8]}"
