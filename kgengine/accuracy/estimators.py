"""The estimator protocol of the accuracy job: a list of (LR image, seed) jobs -> kernels.

The job hands every estimator the missing runs in chunks of at most ``batch`` jobs, so
batching is the same for every estimator:

- :func:`kernelgan_estimator` (the default) trains a chunk together in one batched model
  (:func:`kgengine.api.estimate_kernels`; the kernels do not depend on the chunking);
- :func:`per_image` adapts a one-image estimator with the signature of
  :func:`kgengine.api.estimate_kernel` (a test double, another method) by looping over the
  chunk.

Every estimator gets ``restarts`` (K trainings per job, combined; 1 = one training). A result
may carry a ``confidence`` (in [0, 1], :attr:`kgengine.api.EstimateResult.confidence`;
the job also looks for ``report["confidence"]``).

>>> est = per_image(my_estimate_kernel)                                   # doctest: +SKIP
>>> est([("lr_x2/im_1.png", 0)], x4=False, iters=None, device="cpu", config=cfg)  # doctest: +SKIP
[EstimateResult(name='im_1', kernel_x2=array(...), ...)]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kgengine.config import KernelGANConfig
from kgengine.errors import KGEngineError

#: One estimation: (path of the LR image, seed).
Job = tuple[str, int]


class KernelResult(Protocol):
    """What an estimator returns per job (:class:`kgengine.api.EstimateResult` is one).

    Attributes:
        kernel_x2: (h, w) x2 kernel, any float dtype (stored as float64, normalised to sum 1).
        kernel_x4: (h4, w4) x4 kernel when asked for (``x4=True``), else None.
        report: JSON-able dict; its ``ms_per_iter`` is reported.

    An optional ``confidence`` attribute (float in [0, 1] or None), as
    :class:`~kgengine.api.EstimateResult` has, is recorded with the run.
    """

    kernel_x2: Any
    kernel_x4: Any
    report: dict[str, Any]


class BatchEstimator(Protocol):
    """The one estimator protocol of :func:`kgengine.accuracy.run_eval`.

    Called with a chunk of jobs, it returns one entry per job, in order: a
    :class:`KernelResult`, or the exception that made that job fail (the others are kept).
    Raising fails the whole chunk; the job then retries its jobs one at a time.
    ``callback(steps_done)``, when given, reports training progress within the chunk.
    ``restarts``: trainings per job (K ≥ 1), combined into one kernel with a confidence.
    ``stop`` ("auto": stop each training once its kernel stopped changing) is passed only when
    the job asks for it, so an estimator without early stopping need not accept it.
    """

    def __call__(
        self,
        jobs: Sequence[Job],
        *,
        x4: bool,
        iters: int | None,
        device: str,
        config: KernelGANConfig,
        callback: Callable[[int], None] | None = None,
        restarts: int = 1,
    ) -> list[KernelResult | Exception]: ...


class ImageEstimator(Protocol):
    """A one-image estimator: the signature of :func:`kgengine.api.estimate_kernel`.

    It is also given ``restarts=K`` when K > 1 and ``stop`` when not "full", or when it takes
    a ``stop`` argument (:func:`kgengine.api.estimate_kernel` takes both, and its own default
    is "auto"); an estimator without them need not accept them.
    """

    def __call__(
        self, lr_path: str, *, x4: bool, iters: int | None, seed: int, device: str,
        config: KernelGANConfig,
    ) -> KernelResult: ...


def per_image(estimate: ImageEstimator) -> BatchEstimator:
    """Adapt a one-image estimator to :class:`BatchEstimator`: one call per job, in order.

    An exception of one call becomes that job's entry; the progress callback is not used;
    ``restarts`` is passed on only when it is not 1, ``stop`` when not "full" or when the
    estimator takes a ``stop`` argument (whose default may be another).
    """
    takes_stop = "stop" in inspect.signature(estimate).parameters

    def estimate_chunk(
        jobs: Sequence[Job],
        *,
        x4: bool,
        iters: int | None,
        device: str,
        config: KernelGANConfig,
        callback: Callable[[int], None] | None = None,
        restarts: int = 1,
        stop: str = "full",
    ) -> list[KernelResult | Exception]:
        out: list[KernelResult | Exception] = []
        extra: dict = {} if restarts == 1 else {"restarts": restarts}
        if stop != "full" or takes_stop:
            extra["stop"] = stop
        for path, seed in jobs:
            try:
                out.append(estimate(path, x4=x4, iters=iters, seed=seed, device=device,
                                    config=config, **extra))
            except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
                out.append(exc)
        return out

    return estimate_chunk


def kernelgan_estimator(
    jobs: Sequence[Job],
    *,
    x4: bool,
    iters: int | None,
    device: str,
    config: KernelGANConfig,
    callback: Callable[[int], None] | None = None,
    restarts: int = 1,
    stop: str = "full",
) -> list[KernelResult | Exception]:
    """KernelGAN on a chunk of jobs, trained together (:func:`kgengine.api.estimate_kernels`).

    With ``restarts = K`` every job trains K seeds in the same batch, combined into one
    kernel; ``stop="auto"`` stops each training once its kernel stopped changing (the
    default here is "full": :func:`kgengine.accuracy.run_eval` passes ``stop`` only when it
    is not "full", and its own default is "auto"). A diverged
    job's entry (every restart diverged) is its :class:`~kgengine.errors.TrainingDivergedError`.

    Raises:
        KGEngineError: the estimator cannot be imported, or an image of the chunk is unusable.
    """
    try:
        from kgengine.api import estimate_kernels
    except ImportError as exc:
        raise KGEngineError(f"the KernelGAN estimator is not available ({exc})") from None
    return estimate_kernels(
        [path for path, _ in jobs],
        seeds=[seed for _, seed in jobs],
        x4=x4,
        iters=iters,
        device=device,
        config=config,
        callback=callback,
        on_diverge="return",
        restarts=restarts,
        stop=stop,
    )


def default_estimator() -> BatchEstimator:
    """The estimator :func:`kgengine.accuracy.run_eval` uses when given none: KernelGAN."""
    return kernelgan_estimator
