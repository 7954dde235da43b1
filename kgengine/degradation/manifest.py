"""The pairs manifest of an output folder: one JSON line per pair, the resume guard, and
rebuilding a pair's LR from its line.

Files in ``out_dir``: :data:`MANIFEST` (``manifest.jsonl``, one object per pair, see
:func:`pair_entry`; relative paths are relative to ``out_dir``) and :data:`SETTINGS`
(``degrade_settings.json``, the job's settings; a rerun with other :data:`RESUME_KEYS` into a
folder that holds pairs is refused). The manifest is appended after each batch and rewritten
sorted by name at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgengine.atomic import json_default, save_json, save_text
from kgengine.degradation.pipeline import rebuild_pair
from kgengine.degradation.plan import PairPlan, unit_noise
from kgengine.degrade import degrade_torch
from kgengine.errors import KGEngineError
from kgengine.imageio import read_image
from kgengine.pool import KernelPool

MANIFEST = "manifest.jsonl"
SETTINGS = "degrade_settings.json"
#: Settings that must match to resume into an existing output folder (``pipeline``: the
#: pipeline config, None without one; ``real_noise_fingerprint``: its noise patches;
#: ``copy_hr``: every HR copied to ``hr/``; ``min_confidence``: the pool filter, None
#: without one). The pipeline's ``real_noise`` path is not compared: the fingerprint of the
#: patches is, so a noise folder moved or renamed resumes.
RESUME_KEYS = ("scale", "noise_sigma", "seed", "pool_fingerprint", "hr_dir", "pipeline",
               "real_noise_fingerprint", "copy_hr", "min_confidence")
#: The value of a resume key in a settings file written before the key existed.
RESUME_DEFAULTS = {"pipeline": None, "real_noise_fingerprint": None, "copy_hr": False,
                   "min_confidence": None}


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """Entries of a ``manifest.jsonl`` by HR file name; unparsable lines, and lines without
    the text fields ``name``, ``lr`` and ``hr``, are ignored."""
    entries: dict[str, dict] = {}
    path = Path(path)
    if not path.is_file():
        return entries
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            if all(isinstance(entry[k], str) for k in ("name", "lr", "hr")):
                entries[entry["name"]] = entry
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
    return entries


def _line(entry: dict) -> str:
    """One manifest line. ASCII only (``ensure_ascii``): a file name that is not valid UTF-8
    (lone surrogates, see :func:`os.fsdecode`) is written as ``\\udcNN`` escapes, which
    :func:`read_manifest` turns back into the same name."""
    return json.dumps(entry, default=json_default, ensure_ascii=True) + "\n"


def write_manifest(path: Path, entries: dict[str, dict]) -> None:
    """Atomically rewrite the manifest with ``entries``, sorted by name."""
    save_text(path, "".join(_line(entries[k]) for k in sorted(entries)))


def append_manifest(path: Path, entries: list[dict]) -> None:
    """Append ``entries`` to the manifest and fsync (a crash loses at most a torn last line)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(_line(e) for e in entries))
        fh.flush()
        os.fsync(fh.fileno())


def pair_entry(
    plan: PairPlan, hr_path: Path, hr: str, hr_size: tuple[int, int], crop: tuple[int, int],
    lr_size: tuple[int, int], provider: str,
) -> dict[str, Any]:
    """The manifest entry of one pair: everything needed to rebuild it (:func:`rebuild_lr`).

    Args:
        hr_path: the HR file; ``hr``: the pair's HR (that file, or ``hr/<stem>.png``, the
            cropped copy); ``hr_size``, ``crop``, ``lr_size``: (h, w) of the HR file, of the
            crop and of the LR; ``provider``: the onnxruntime provider that made the LR.
    """
    row = plan.row(hr_path.name)
    return {
        "name": hr_path.name,
        "hr": hr,
        "hr_source": str(hr_path.resolve()),
        "lr": f"lr/{hr_path.stem}.png",
        "hr_size": list(hr_size),
        "crop": list(crop),
        "lr_size": list(lr_size),
        "scale": plan.scale,
        "kernel_id": plan.pool.ids[row],
        "kernel_row": row,
        "kernel_source": plan.pool.sources[row],
        "kernel_pool": plan.pool_path,
        "noise_sigma": plan.noise,
        "noise_seed": plan.noise_seed(hr_path.name),
        "seed": plan.seed,
        "provider": provider,
        **hr_identity(hr_path),
    }


def hr_identity(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """What a pair records of its HR file to notice it edited in place: ``hr_bytes`` (size),
    ``hr_mtime_ns`` and ``hr_sha256`` (of its bytes, read unless given; since 0.9.26)."""
    from kgengine.farm.seeds import content_hash

    st = path.stat()
    return {"hr_bytes": st.st_size, "hr_mtime_ns": st.st_mtime_ns,
            "hr_sha256": sha256 or content_hash(path)}


def hr_change(entry: dict, path: Path) -> str | None:
    """How ``path`` differs from the HR file ``entry``'s pair was made from, or None.

    Same size and modification time: unchanged, nothing read. Otherwise the SHA-256 decides
    (a file touched or copied with its bytes kept is unchanged). An entry written before
    0.9.26 records none of this: unchanged.

    Returns:
        None, or e.g. ``"stored sha256 0123456789ab, now ba9876543210"`` (``now unreadable``
        when the file cannot be read: it is redone, and fails naming it).
    """
    from kgengine.farm.seeds import content_hash_or_none

    stored = entry.get("hr_sha256")
    if not isinstance(stored, str):
        return None
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is not None and (st.st_size, st.st_mtime_ns) == (entry.get("hr_bytes"),
                                                           entry.get("hr_mtime_ns")):
        return None
    now = content_hash_or_none(path)
    if now == stored:
        return None
    return f"stored sha256 {stored[:12]}, now {now[:12] if now else 'unreadable'}"


def void_pair(out_dir: Path, entry: dict) -> None:
    """Remove the files of a pair that is to be made again (its LR, and its HR where it is
    a copy in ``out_dir``), so that a redo that fails leaves no pair of the old HR."""
    for rel in claimed_files(entry):
        (out_dir / rel).unlink(missing_ok=True)


def claimed_files(entry: dict) -> set[str]:
    """The files in ``out_dir`` that a pair's entry claims: its LR, and its HR where that is
    a copy (a relative path)."""
    return {entry[k] for k in ("lr", "hr") if not Path(entry[k]).is_absolute()}


def rival_entries(entries: dict[str, dict], files: list[Path]) -> dict[Path, list[str]]:
    """For each of ``files`` (the HR listing), the names of the other entries that claim
    its pair's files (``lr/<stem>.png``, ``hr/<stem>.png``), when there are any.

    Stems are unique in a listing, so such an entry is that of an HR file no longer listed
    under its name (renamed within the stem, ``a.png`` -> ``a.PNG``, or removed and another
    file of that stem added): the files are, or are about to be, another file's pair.
    """
    claims: dict[str, set[str]] = {}
    for name, entry in entries.items():
        for rel in claimed_files(entry):
            claims.setdefault(rel, set()).add(name)
    rivals: dict[Path, list[str]] = {}
    for p in files:
        names = claims.get(f"lr/{p.stem}.png", set()) | claims.get(f"hr/{p.stem}.png", set())
        if names - {p.name}:
            rivals[p] = sorted(names - {p.name})
    return rivals


def is_done(out_dir: Path, entry: dict | None) -> bool:
    """Whether a pair exists: its manifest entry, its LR file and (if copied) its HR file."""
    if entry is None or not (out_dir / entry["lr"]).is_file():
        return False
    return Path(entry["hr"]).is_absolute() or (out_dir / entry["hr"]).is_file()


def holds_pairs(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds pairs: manifest entries, or files in ``lr/`` or ``hr/``
    (pairs of a run killed before its manifest line, or an older manifest removed)."""
    if read_manifest(out_dir / MANIFEST):
        return True
    return any(p.is_file() for sub in ("lr", "hr") if (out_dir / sub).is_dir()
               for p in (out_dir / sub).iterdir())


def check_settings(out_dir: Path, settings: dict[str, Any]) -> bool:
    """Check ``settings`` against those recorded in ``out_dir``; writes nothing.

    Only a folder that holds pairs (:func:`holds_pairs`) pins its settings: the settings
    file of a run that made none (every file failed, or it stopped before the first pair)
    is replaced by the next run's.

    Returns:
        whether the settings must be recorded (:func:`record_settings`): no settings file,
        or one of a folder without pairs.
    Raises:
        KGEngineError: the folder holds pairs made with another value of a
            :data:`RESUME_KEYS` key, or its settings file is not JSON.
    """
    path = out_dir / SETTINGS
    if not path.is_file() or not holds_pairs(out_dir):
        return True
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        old = None
    if not isinstance(old, dict):
        raise KGEngineError(f"{path}: not a JSON object of settings; use another output folder")
    diff = [k for k in RESUME_KEYS if _resume_value(old, k) != _resume_value(settings, k)]
    if diff:
        k = diff[0]
        was, now = _resume_value(old, k), _resume_value(settings, k)
        if isinstance(was, dict) and isinstance(now, dict):  # name the fields that differ
            keys = [f for f in sorted({*was, *now}) if was.get(f) != now.get(f)]
            was = ", ".join(f"{f}={was.get(f)!r}" for f in keys)
            now = ", ".join(f"{f}={now.get(f)!r}" for f in keys)
            raise KGEngineError(f"{out_dir}: holds pairs made with {k} {was}, not {now}; "
                                "use another output folder")
        raise KGEngineError(
            f"{out_dir}: holds pairs made with {k}={was!r}, not {now!r}; "
            "use another output folder"
        )
    return False


def _resume_value(settings: dict[str, Any], key: str) -> Any:
    """The value of resume key ``key`` as compared (:data:`RESUME_KEYS`)."""
    value = settings.get(key, RESUME_DEFAULTS.get(key))
    if key == "pipeline" and isinstance(value, dict):
        value = {f: v for f, v in value.items() if f != "real_noise"}
    return value


def record_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Write ``settings`` to ``out_dir``'s :data:`SETTINGS` (atomically)."""
    save_json(out_dir / SETTINGS, settings)


def rebuild_lr(entry: dict, pool: KernelPool) -> np.ndarray:
    """Rebuild a pair's LR from its manifest entry with the PyTorch reference (float64).

    ``LR = degrade_torch(crop(HR), pool.kernels[kernel_row], scale) + sigma * unit_noise``
    where ``crop`` keeps the top-left ``crop`` rows/columns. Returns (h, w, 3) float64,
    before 8-bit rounding (the PNG holds ``round(clip(LR, 0, 1) * 255)``).

    A pair made by the pipeline (``kgengine degrade --pipeline ...``; its entry has
    ``pipeline`` and ``draws``) is rebuilt exactly by
    :func:`kgengine.degradation.pipeline.rebuild_pair`: this returns its 8-bit LR / 255.
    """
    if entry.get("pipeline"):
        return rebuild_pair(entry, pool).astype(np.float64) / 255.0
    img = read_image(entry["hr_source"])
    h, w = entry["crop"]
    hr = torch.from_numpy(np.ascontiguousarray(img[:h, :w].transpose(2, 0, 1))).double()[None]
    k = torch.from_numpy(pool.kernels[entry["kernel_row"]].astype(np.float64))
    lr = degrade_torch(hr, k, entry["scale"])[0].numpy()
    if entry["noise_sigma"] > 0:
        lr = lr + entry["noise_sigma"] * unit_noise(entry["noise_seed"], lr.shape)
    return lr.transpose(1, 2, 0)
