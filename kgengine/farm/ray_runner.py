"""The farm beyond one machine: batches of images as Ray tasks, the driver keeps the books.

Design (imported only with ``--ray``; nothing else in kgengine imports Ray):

- The **driver** (the ``kgengine farm`` process) owns the SQLite manifest, the single source
  of truth. It claims a chunk of ``batch`` pending rows, reads the image *files' bytes* and
  submits one task per chunk; it keeps about two tasks per worker slot in flight.
- A **task** (:func:`train_chunk`) decodes the bytes, trains the chunk in one batched model
  (:func:`kgengine.api.estimate_kernels`) on its node and returns plain data: kernels,
  reports and generator weights per image, or the reason an image was bad or diverged.
  Tasks request ``num_gpus=1`` when the device is CUDA (``device="auto"`` means CUDA when
  the cluster has GPUs) and ``ray_cpus`` CPUs.
- The driver writes every file itself (atomically, then marks the row done), so workers need
  no shared storage and no access to the pool folder; they need kgengine installed (same
  version) and nothing else.
- **Failures**: a bad or diverged image is handled as in a local run. A task that fails as a
  whole (worker or node lost after Ray's own retries, out of memory, an exception on the
  worker) puts its images back to ``pending`` with the reason, logs it, and they are not
  resubmitted in this run: a rerun of the same command retries them.
- Seeds come from the manifest (content hash, job seed, attempt), so results do not depend
  on which worker ran which chunk.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from kgengine.errors import BadImageError, KGEngineError, TrainingDivergedError
from kgengine.farm.manifest import Manifest, Row
from kgengine.farm.runner import (
    CPU_BATCH,
    FarmHooks,
    FarmSettings,
    FarmSummary,
    attempt_seed,
    record,
)

#: Tasks kept in flight per worker slot (one running, one queued with its data).
IN_FLIGHT_PER_SLOT = 2


def connect(address: str) -> bool:
    """Connect to Ray (``auto``, ``host:port``, ``ray://...``) or start a local instance
    (``local``). Returns True if this call started/connected it (so the caller shuts it down);
    an already initialised Ray (e.g. by a test or a notebook) is used as is."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise KGEngineError(f"cannot connect to Ray at {address!r}: {exc}") from None
    return True


def train_chunk(items: list[dict[str, Any]], settings: dict[str, Any], device: str,
                threads: int) -> list[dict[str, Any]]:
    """The Ray task body: train one chunk, return per-image plain results.

    Args:
        items: per image ``{"name", "path" (for messages), "filename", "data" (file bytes),
            "seed"}``.
        settings: :meth:`FarmSettings.to_dict`. device: torch device for this task.
        threads: torch CPU threads (the task's CPUs).
    Returns:
        per image ``{"name", "status": "done"|"diverged"|"bad", "message", ...}``; ``done``
        entries carry ``kernel_x2``, ``kernel_x4``, ``report``, ``generator_weights``,
        ``raw_kernel``.
    """
    import torch

    from kgengine.api import estimate_kernels
    from kgengine.imageio import read_image

    torch.set_num_threads(max(1, threads))
    cfg_settings = FarmSettings.from_dict(settings)
    cfg = cfg_settings.config
    out: list[dict[str, Any]] = []
    images, ok = [], []
    with tempfile.TemporaryDirectory(prefix="kgengine-farm-") as tmp:
        for i, it in enumerate(items):
            local = Path(tmp) / f"{i}{Path(it['filename']).suffix}"
            local.write_bytes(it["data"])
            try:
                images.append(read_image(local, min_size=cfg.crop_size))
                ok.append(it)
            except BadImageError as exc:
                out.append({"name": it["name"], "status": "bad",
                            "message": f"{it['path']}: {exc.reason}"})
    if ok:
        results = estimate_kernels(
            images, seeds=[it["seed"] for it in ok], names=[it["name"] for it in ok],
            x4=cfg_settings.x4, device=device, config=cfg, dtype=cfg_settings.torch_dtype,
            mode=cfg_settings.mode, on_diverge="return")
        for it, res in zip(ok, results, strict=True):
            if isinstance(res, TrainingDivergedError):
                out.append({"name": it["name"], "status": "diverged", "message": str(res)})
            else:
                out.append({"name": it["name"], "status": "done", "message": "",
                            "kernel_x2": res.kernel_x2, "kernel_x4": res.kernel_x4,
                            "report": res.report, "generator_weights": res.generator_weights,
                            "raw_kernel": res.raw_kernel})
    return out


def probe_batch(settings: dict[str, Any], device: str, max_pixels: int) -> int:
    """Ray task: the automatic batch size measured on a worker's GPU."""
    from kgengine.api import resolve_device
    from kgengine.farm.runner import auto_batch

    return auto_batch(resolve_device(device), FarmSettings.from_dict(settings), max_pixels)


def _outcome(row: Row, res: dict[str, Any]) -> Any:
    """A task's per-image dict -> what :func:`record` takes."""
    from kgengine.api import EstimateResult

    if res["status"] == "done":
        return EstimateResult(row.name, res["kernel_x2"], res["kernel_x4"], res["report"],
                              res["generator_weights"], res["raw_kernel"])
    if res["status"] == "diverged":
        return TrainingDivergedError(res["message"])
    return KGEngineError(res["message"])


def train_ray(man: Manifest, settings: FarmSettings, pool_dir: Path, batch: int | None,
              device: str, address: str, cpus: float, hooks: FarmHooks,
              summary: FarmSummary) -> None:
    """Train every pending row as Ray tasks of ``batch`` images (see the module docstring)."""
    import ray

    started = connect(address)
    try:
        res = ray.cluster_resources()
        use_gpu = device.startswith("cuda") or (device == "auto" and res.get("GPU", 0) > 0)
        if use_gpu and res.get("GPU", 0) < 1:
            raise KGEngineError(f"device {device} asked but the Ray cluster has no GPUs")
        task_device = device if device != "auto" else ("cuda" if use_gpu else "cpu")
        opts = {"num_cpus": cpus, "num_gpus": 1 if use_gpu else 0}
        sdict = settings.to_dict()
        slots = max(1, int(res.get("GPU", 0)) if use_gpu
                    else int(res.get("CPU", 1) // max(cpus, 1e-9)))
        if batch is None:
            pend = man.pending()
            if use_gpu:
                biggest = max(((r.width or 0) * (r.height or 0) for r in pend), default=0)
                batch = int(ray.get(ray.remote(probe_batch).options(**opts)
                                    .remote(sdict, task_device, biggest)))
            else:
                batch = CPU_BATCH
            # few images: smaller chunks so that every worker slot gets one
            batch = max(1, min(batch, -(-len(pend) // slots)))
        max_in_flight = IN_FLIGHT_PER_SLOT * slots
        summary.batch = batch
        summary.device = f"Ray at {address}: {task_device}, {slots} worker slot(s)"
        hooks.log(f"{summary.device}, batch {batch}")
        remote = ray.remote(train_chunk).options(max_retries=2, **opts)
        _drive(man, settings, pool_dir, batch, remote, task_device, max(1, int(cpus)),
               max_in_flight, hooks, summary)
    finally:
        if started:
            ray.shutdown()


def _drive(man: Manifest, settings: FarmSettings, pool_dir: Path, batch: int, remote: Any,
           device: str, threads: int, max_in_flight: int, hooks: FarmHooks,
           summary: FarmSummary) -> None:
    import ray

    from kgengine.farm.runner import count_outcome

    sdict = settings.to_dict()
    given_up: set[int] = set()
    in_flight: dict[Any, list[Row]] = {}
    try:
        while rows := [r for r in man.pending() if r.id not in given_up]:
            chunks = iter([rows[i : i + batch] for i in range(0, len(rows), batch)])
            while True:
                while len(in_flight) < max_in_flight and (chunk := next(chunks, None)):
                    _submit(man, chunk, settings, pool_dir, remote, sdict, device, threads,
                            in_flight, hooks, summary)
                if not in_flight:
                    break
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                chunk = in_flight.pop(ready[0])
                try:
                    results = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - any task failure: give the rows back
                    why = " ".join(str(exc).split())[:300]
                    hooks.log(f"Ray task of {len(chunk)} image(s) failed: {why}")
                    man.requeue([r.id for r in chunk], f"Ray task failed: {why}")
                    given_up |= {r.id for r in chunk}
                    continue
                by_name = {r.name: r for r in chunk}
                for res in results:
                    row = by_name.pop(res["name"])
                    outcome = record(man, row, _outcome(row, res), settings, pool_dir)
                    count_outcome(summary, hooks, row.name, outcome)
                if by_name:  # cannot happen unless a task drops images; do not lose them
                    man.requeue([r.id for r in by_name.values()], "missing from task result")
                    given_up |= {r.id for r in by_name.values()}
    except BaseException:
        for ref, chunk in in_flight.items():
            ray.cancel(ref, force=True)
            running = {r.id for r in man.rows("running")}
            ids = [r.id for r in chunk if r.id in running]
            if ids:
                man.requeue(ids, "interrupted")
        raise


def _submit(man: Manifest, chunk: list[Row], settings: FarmSettings, pool_dir: Path,
            remote: Any, sdict: dict[str, Any], device: str, threads: int,
            in_flight: dict[Any, list[Row]], hooks: FarmHooks, summary: FarmSummary) -> None:
    from kgengine.farm.runner import count_outcome

    man.claim([r.id for r in chunk])
    items, sent = [], []
    for r in chunk:
        try:
            data = Path(r.path).read_bytes()
        except OSError as exc:
            err = BadImageError(r.path, f"cannot read file ({exc.strerror or exc})")
            count_outcome(summary, hooks, r.name, record(man, r, err, settings, pool_dir))
            continue
        items.append({"name": r.name, "path": r.path, "filename": Path(r.path).name,
                      "data": data, "seed": attempt_seed(settings, r)})
        sent.append(r)
    if sent:
        in_flight[remote.remote(items, sdict, device, threads)] = sent
