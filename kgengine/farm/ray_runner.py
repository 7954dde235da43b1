"""The Ray runner: batches of images as Ray tasks, the driver keeps the books.

Design (Ray itself is imported only inside the functions that use it, i.e. with ``--ray``):

- The **driver** (the ``kgengine farm`` process) owns the SQLite manifest, the single source
  of truth. It claims a chunk of ``batch`` pending rows, reads the image *files' bytes* and
  submits one task per chunk; it keeps about two tasks per worker slot in flight.
- A **task** (:func:`train_chunk`) decodes the bytes, trains the chunk in one batched model
  (:func:`kgengine.farm.training.train_batch`) on its node and returns plain data: kernels,
  reports and generator weights per image, or the reason an image was bad or diverged.
  Tasks request ``num_gpus=1`` when the device is CUDA (``device="auto"`` means CUDA when
  the cluster has GPUs) and ``ray_cpus`` CPUs.
- The driver writes every file itself (atomically, then marks the row done), so workers need
  no shared storage and no access to the pool folder; they need kgengine installed (same
  version) and nothing else.
- **Failures**: a bad or diverged image is handled as in a local run. A task that fails as a
  whole (worker or node lost after Ray's own retries, out of memory, an exception on the
  worker) puts its images back to ``pending`` with the reason, logs it, and they are not
  resubmitted in this run: a rerun of the same command retries them. An address where
  nothing answers fails at once with one line (:func:`check_reachable`, bounded by
  :data:`CONNECT_TIMEOUT_S`) instead of Ray's long retries.
- Seeds come from the manifest (content hash, job seed, attempt), so results do not depend
  on which worker ran which chunk.
"""

from __future__ import annotations

import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kgengine.api import EstimateResult, resolve_device
from kgengine.errors import BadImageError, KGEngineError, TrainingDivergedError
from kgengine.farm.batching import CPU_BATCH, auto_batch, largest_pixels
from kgengine.farm.manifest import Row
from kgengine.farm.records import FarmJob
from kgengine.farm.settings import FarmSettings
from kgengine.farm.training import attempt_seed, read_images, train_batch
from kgengine.prepare import min_image_side

#: Tasks kept in flight per worker slot (one running, one queued with its data).
IN_FLIGHT_PER_SLOT = 2
#: Seconds to wait for a Ray address to answer before giving up.
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when nothing answers at a Ray ``host:port`` / ``ray://host:port`` address
    (Ray itself would retry for a long time): one TCP connection attempt, bounded by
    ``timeout_s``. ``auto`` and ``local`` are not probed (Ray finds or starts them).

    Raises:
        KGEngineError: a malformed address, or no answer (naming the address and the reason).
    """
    if address in ("auto", "local") or _ray_ready():
        return
    host_port = address.removeprefix("ray://").rstrip("/")
    host, sep, port = host_port.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise KGEngineError(f"--ray {address!r}: expected auto, local, host:port or "
                            "ray://host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except TimeoutError:
        raise KGEngineError(f"cannot connect to Ray at {address!r}: no answer within "
                            f"{timeout_s:g} s") from None
    except OSError as exc:
        raise KGEngineError(f"cannot connect to Ray at {address!r}: "
                            f"{exc.strerror or exc} (is a Ray cluster running there?)") from None


def _ray_ready() -> bool:
    """Whether Ray is already imported and initialised in this process (tests, notebooks)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def connect(address: str) -> bool:
    """Connect to Ray (``auto``, ``host:port``, ``ray://...``) or start a local instance
    (``local``). Returns True if this call started/connected it (so the caller shuts it down);
    an already initialised Ray (e.g. by a test or a notebook) is used as is.

    Raises:
        KGEngineError: nothing answers at the address (:func:`check_reachable`, within
            :data:`CONNECT_TIMEOUT_S`) or Ray refuses to connect.
    """
    check_reachable(address)
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


# ---------------------------------------------------------------------- on the workers
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
        ``raw_kernel``, ``confidence``.
    """
    torch.set_num_threads(max(1, threads))
    job_settings = FarmSettings.from_dict(settings)
    with tempfile.TemporaryDirectory(prefix="kgengine-farm-") as tmp:
        paths = []
        for i, it in enumerate(items):
            paths.append(Path(tmp) / f"{i}{Path(it['filename']).suffix}")
            paths[-1].write_bytes(it["data"])
        images, idx, bad = read_images(paths, min_image_side(job_settings.config))
    out = [{"name": items[i]["name"], "status": "bad",
            "message": f"{items[i]['path']}: {exc.reason}"} for i, exc in bad.items()]
    if idx:
        ok = [items[i] for i in idx]
        results = train_batch(images, [it["seed"] for it in ok], [it["name"] for it in ok],
                              job_settings, device)
        out += [_plain(it["name"], res) for it, res in zip(ok, results, strict=True)]
    return out


def _plain(name: str, res: EstimateResult | TrainingDivergedError) -> dict[str, Any]:
    """One image's training outcome as the plain dict a task returns."""
    if isinstance(res, TrainingDivergedError):
        return {"name": name, "status": "diverged", "message": str(res)}
    return {"name": name, "status": "done", "message": "", "kernel_x2": res.kernel_x2,
            "kernel_x4": res.kernel_x4, "report": res.report,
            "generator_weights": res.generator_weights, "raw_kernel": res.raw_kernel,
            "confidence": res.confidence}


def probe_batch(settings: dict[str, Any], device: str, max_pixels: int) -> int:
    """Ray task: the automatic batch size measured on a worker's GPU."""
    return auto_batch(resolve_device(device), FarmSettings.from_dict(settings), max_pixels)


# ---------------------------------------------------------------------- on the driver
def _outcome(row: Row, res: dict[str, Any]) -> EstimateResult | Exception:
    """A task's per-image dict -> what :func:`kgengine.farm.records.record` takes."""
    if res["status"] == "done":
        return EstimateResult(row.name, res["kernel_x2"], res["kernel_x4"], res["report"],
                              res["generator_weights"], res["raw_kernel"], res.get("confidence"))
    if res["status"] == "diverged":
        return TrainingDivergedError(res["message"])
    return KGEngineError(res["message"])


@dataclass
class _Plan:
    """Where and how the tasks run: device, resources, slots, batch size."""

    device: str
    options: dict[str, Any]
    slots: int
    batch: int
    threads: int
    in_flight: dict[Any, list[Row]] = field(default_factory=dict)


def _plan(job: FarmJob, batch: int | None, device: str, cpus: float) -> _Plan:
    """Pick the task device and resources from the cluster, and the batch size if not given."""
    import ray

    res = ray.cluster_resources()
    use_gpu = device.startswith("cuda") or (device == "auto" and res.get("GPU", 0) > 0)
    if use_gpu and res.get("GPU", 0) < 1:
        raise KGEngineError(f"device {device} asked but the Ray cluster has no GPUs")
    task_device = device if device != "auto" else ("cuda" if use_gpu else "cpu")
    opts = {"num_cpus": cpus, "num_gpus": 1 if use_gpu else 0}
    slots = max(1, int(res.get("GPU", 0)) if use_gpu
                else int(res.get("CPU", 1) // max(cpus, 1e-9)))
    if batch is None:
        pend = job.man.pending()
        if use_gpu:
            batch = int(ray.get(ray.remote(probe_batch).options(**opts).remote(
                job.settings.to_dict(), task_device, largest_pixels(pend))))
        else:
            batch = max(1, CPU_BATCH // job.settings.restarts)
        # few images: smaller chunks so that every worker slot gets one
        batch = max(1, min(batch, -(-len(pend) // slots)))
    return _Plan(task_device, opts, slots, batch, max(1, int(cpus)))


def train_ray(job: FarmJob, batch: int | None, device: str, address: str,
              cpus: float) -> None:
    """Train every pending row of ``job`` as Ray tasks of ``batch`` images (see the module
    docstring); ``batch`` None = measured on a worker's GPU, or CPU_BATCH."""
    import ray

    started = connect(address)
    try:
        plan = _plan(job, batch, device, cpus)
        job.summary.batch = plan.batch
        job.summary.device = f"Ray at {address}: {plan.device}, {plan.slots} worker slot(s)"
        job.hooks.log(f"{job.summary.device}, batch {plan.batch}")
        remote = ray.remote(train_chunk).options(max_retries=2, **plan.options)
        try:
            _drive(job, plan, remote)
        except BaseException:
            for ref, chunk in plan.in_flight.items():
                ray.cancel(ref, force=True)
                job.give_back(chunk, "interrupted")
            raise
    finally:
        if started:
            ray.shutdown()


def _drive(job: FarmJob, plan: _Plan, remote: Any) -> None:
    """Submit chunks (keeping ``IN_FLIGHT_PER_SLOT`` per slot) and record their results."""
    import ray

    max_in_flight = IN_FLIGHT_PER_SLOT * plan.slots
    while rows := job.pending():
        b = plan.batch
        chunks = iter([rows[i : i + b] for i in range(0, len(rows), b)])
        while True:
            while len(plan.in_flight) < max_in_flight and (chunk := next(chunks, None)):
                _submit(job, plan, chunk, remote)
            if not plan.in_flight:
                break
            ready, _ = ray.wait(list(plan.in_flight), num_returns=1)
            chunk = plan.in_flight.pop(ready[0])
            try:
                results = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - any task failure: give the rows back
                why = " ".join(str(exc).split())[:300]
                job.hooks.log(f"Ray task of {len(chunk)} image(s) failed: {why}")
                job.hold(chunk, f"Ray task failed: {why}")
                continue
            by_name = {r.name: r for r in chunk}
            for res in results:
                row = by_name.pop(res["name"])
                job.finish(row, _outcome(row, res))
            if by_name:  # cannot happen unless a task drops images; do not lose them
                job.hold(list(by_name.values()), "missing from task result")


def _submit(job: FarmJob, plan: _Plan, chunk: list[Row], remote: Any) -> None:
    """Claim ``chunk``, read its files' bytes and submit it as one task."""
    job.man.claim([r.id for r in chunk])
    items, sent = [], []
    for r in chunk:
        try:
            data = Path(r.path).read_bytes()
        except OSError as exc:
            job.finish(r, BadImageError(r.path, f"cannot read file ({exc.strerror or exc})"))
            continue
        items.append({"name": r.name, "path": r.path, "filename": Path(r.path).name,
                      "data": data, "seed": attempt_seed(job.settings, r)})
        sent.append(r)
    if sent:
        ref = remote.remote(items, job.settings.to_dict(), plan.device, plan.threads)
        plan.in_flight[ref] = sent
