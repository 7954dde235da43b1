"""The kernel-estimation farm: many images, one kernel each, into a kernel pool.

- :mod:`~kgengine.farm.inputs`: INPUT files/folders/lists -> image paths, unique names.
- :mod:`~kgengine.farm.seeds`: per-image seed = hash(job seed, content hash, attempt).
- :mod:`~kgengine.farm.manifest`: the durable SQLite job manifest (resume after a kill).
- :mod:`~kgengine.farm.runner`: :func:`run_farm`, batched training on one device.
- :mod:`~kgengine.farm.ray_runner`: the same, as Ray tasks (imported only for ``--ray``).
- :mod:`~kgengine.farm.poolview`: ``kgengine pool info|plot``.

>>> from kgengine.farm import run_farm                                # doctest: +SKIP
>>> summary = run_farm(["photos/"], "pool/", batch=8)                 # doctest: +SKIP
>>> print(summary.text())                                             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_farm", "FarmSummary", "FarmHooks"]


def __getattr__(name: str) -> Any:
    # lazy, so that ``import kgengine.farm.poolview`` does not pull in torch
    if name in __all__:
        from kgengine.farm import runner

        return getattr(runner, name)
    raise AttributeError(name)
