"""The kernel-estimation farm: many images, one kernel each, into a kernel pool.

- :mod:`~kgengine.farm.runner`: the driver, :func:`run_farm`: owns the manifest, picks a runner.
- :mod:`~kgengine.farm.local`: the local runner (batched training in this process).
- :mod:`~kgengine.farm.ray_runner`: the Ray runner (Ray itself imported only for ``--ray``).
- :mod:`~kgengine.farm.training`: reading and training one batch, shared by both runners.
- :mod:`~kgengine.farm.batching`: batch sizing, GPU memory probing, out-of-memory back-off.
- :mod:`~kgengine.farm.records`: outcome records (files, then the row) and the run's summary.
- :mod:`~kgengine.farm.settings`: the pool's stored job settings and the mismatch check.
- :mod:`~kgengine.farm.intake`: new input files -> manifest rows (hash, size, duplicates).
- :mod:`~kgengine.farm.inputs`: INPUT files/folders/lists -> image paths, unique names.
- :mod:`~kgengine.farm.seeds`: per-image seed = hash(job seed, content hash, attempt).
- :mod:`~kgengine.farm.manifest`: the durable SQLite job manifest (resume after a kill).
- :mod:`~kgengine.farm.poolfiles`: the pool folder's layout, clean-up and pool file rebuild.
- :mod:`~kgengine.farm.poolview`: ``kgengine pool info|plot``.

>>> from kgengine.farm import run_farm                                # doctest: +SKIP
>>> summary = run_farm(["photos/"], "pool/", batch=8)                 # doctest: +SKIP
>>> print(summary.text())                                             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_farm", "FarmSummary", "FarmSettings"]


def __getattr__(name: str) -> Any:
    # lazy, so that ``import kgengine.farm.poolview`` does not pull in torch
    if name == "run_farm":
        from kgengine.farm.runner import run_farm

        return run_farm
    if name == "FarmSummary":
        from kgengine.farm.records import FarmSummary

        return FarmSummary
    if name == "FarmSettings":
        from kgengine.farm.settings import FarmSettings

        return FarmSettings
    raise AttributeError(name)
