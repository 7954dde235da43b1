"""The farm's INPUT arguments -> a list of image files, and unique output names.

An INPUT is one of

- an image file (any suffix: a file that is not an image ends as a failed row with the reason);
- a folder: the image files directly inside it (suffixes :data:`IMAGE_SUFFIXES`, case
  insensitive, hidden files skipped), in sorted name order; with ``recursive=True`` also those
  in its sub-folders (sorted by relative path, hidden folders skipped);
- a ``.txt`` list: one path per line (blank lines and lines starting with ``#`` ignored;
  relative paths are relative to the list's folder); each entry is a file or a folder as
  above. Entries that do not exist are kept, so that they end as failed rows naming the file.

Paths are made absolute (``resolve``) and repeated paths are kept once, in first-seen order.
A command-line INPUT that does not exist is an error (most likely a typo). Files inside a
kgengine pool folder (the farm's own POOL_DIR included) are never taken: a farm run twice on
``photos -r -o photos/pool`` must not train on its own ``*_kernel.png`` heat maps.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from kgengine.errors import KGEngineError, brief_list, shown
from kgengine.farm.manifest import MANIFEST_FILE

#: Files taken from folders (the same set ``kgengine degrade`` reads).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".npy")
#: Files read as lists of paths.
LIST_SUFFIXES = (".txt",)


def expand_inputs(inputs: Sequence[str | os.PathLike], recursive: bool = False,
                  exclude: Sequence[str | os.PathLike] = (),
                  log: Callable[[str], None] = lambda m: None) -> list[Path]:
    """Expand files, folders and ``.txt`` lists into absolute image paths (see module doc).

    Files inside a kgengine pool folder (one holding ``manifest.sqlite``, e.g. its
    ``kernels/*_kernel.png`` heat maps) or inside an ``exclude`` folder (the farm's own
    POOL_DIR) are left out, with one ``log`` line saying how many: a farm never trains on
    its own outputs.

    Raises:
        KGEngineError: an INPUT does not exist, or a list file cannot be read.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    in_pool = _PoolFolders(exclude)
    left_out: list[Path] = []
    for inp in inputs:
        p = Path(inp).expanduser()
        if p.is_dir():
            found = _folder(p, recursive, in_pool)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            found = _list_file(p, recursive, in_pool)
        elif p.is_file():
            found = [p]
        else:
            raise KGEngineError(f"{shown(p)}: no such file or folder")
        for f in found:
            r = f.resolve()
            if r in seen:
                continue
            seen.add(r)
            (left_out if in_pool(r.parent) else out).append(r)
    skipped = [f"the pool folder(s) {brief_list(in_pool.pruned, 3)}"] if in_pool.pruned else []
    if left_out:
        skipped.append(f"{len(left_out)} file(s) inside kgengine pool folders, e.g. "
                       f"{shown(left_out[0])}")
    if skipped:
        log(f"skip {' and '.join(skipped)}: a farm never reads a pool folder as input")
    return out


def folder_images(folder: str | os.PathLike, recursive: bool = False,
                  exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The image files that a folder INPUT gives (see the module docstring; sorted, hidden
    files and pool folders left out), without those inside an ``exclude`` folder (e.g. the
    output folder of ``kgengine estimate``, which holds ``*_kernel.png`` heat maps)."""
    in_pool = _PoolFolders(exclude)
    return [f for f in _folder(Path(folder), recursive, in_pool) if not in_pool(f.parent)]


class _PoolFolders:
    """``in_pool(folder)``: is ``folder`` a pool folder (it or a parent holds
    ``manifest.sqlite``, or is one of ``exclude``)? Memoised per folder."""

    def __init__(self, exclude: Sequence[str | os.PathLike]) -> None:
        self.known: dict[Path, bool] = {Path(e).resolve(): True for e in exclude}
        self.pruned: list[Path] = []  # pool folders a recursive walk did not enter

    def __call__(self, folder: Path) -> bool:
        folder = folder.resolve()
        if folder not in self.known:
            here = (folder / MANIFEST_FILE).is_file()
            self.known[folder] = here or (folder.parent != folder and self(folder.parent))
        return self.known[folder]


def _folder(folder: Path, recursive: bool, in_pool: _PoolFolders) -> list[Path]:
    if not recursive:
        files = [p for p in folder.iterdir() if p.is_file()]
        return sorted((p for p in files if _is_image_name(p)), key=lambda p: p.name)
    found = []
    for root, dirs, names in os.walk(folder):
        # pool folders are not descended into (their files would be left out anyway)
        pools = [d for d in dirs if in_pool(Path(root) / d)]
        in_pool.pruned += [Path(root) / d for d in pools]
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in pools)
        found += [Path(root) / n for n in names if _is_image_name(Path(n))]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _is_image_name(p: Path) -> bool:
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def _list_file(path: Path, recursive: bool, in_pool: _PoolFolders) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
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
        found += _folder(p, recursive, in_pool) if p.is_dir() else [p]
    return found


def unique_names(paths: Sequence[Path], hashes: Sequence[str | None], taken: set[str]) -> list[str]:
    """Output names for new images: the file stem, or ``<stem>-<8 hex>`` when it would clash.

    A stem is used as is when no other new image and no name in ``taken`` (images already in
    the manifest, which keep their names) has it. Otherwise the first 8 hex digits of the
    content hash (of the path when the file is unreadable) are appended, more if needed.

    Args:
        paths: new images' paths. hashes: their content hashes (None if unreadable).
        taken: names already used.
    Returns:
        one name per path, unique among themselves and not in ``taken``.
    """
    counts = Counter(p.stem for p in paths)
    used = set(taken)
    names = []
    for p, h in zip(paths, hashes, strict=True):
        name = p.stem
        if counts[name] > 1 or name in used:
            digest = h or hashlib.sha256(str(p).encode()).hexdigest()
            n = 8
            name = f"{p.stem}-{digest[:n]}"
            while name in used:
                n += 4
                name = f"{p.stem}-{digest[:n]}" if n <= len(digest) else f"{name}x"
        used.add(name)
        names.append(name)
    return names
