"""The trainer's step with no host value in it: run as is, or captured once as a CUDA graph.

On a GPU one image's step is host-bound: about 500 small kernel launches take the host
~19 ms while the GPU works ~1 ms (``bench/data/gpu_h200.md``). A CUDA graph records those
launches once and replays them with one call. What changes from one iteration to the next
must then live in tensors that the graph reads in place:

- the crops and G's output noise: copied into fixed buffers before each replay (the
  counter-based sampler and the noise chunks stay outside the graph, with their iteration);
- Adam's step count and learning rate: device tensors (:class:`kgengine.adam.FlatAdam`
  with ``on_device=True``), the decay written into them;
- the loss weights: updated in place by the schedule, which runs after each replay.

``KGENGINE_CUDA_GRAPH`` picks the mode, read when a trainer is made: ``0`` (the default: the
usual step, unchanged), ``1`` (capture on a CUDA device after :data:`WARMUP` uncaptured
iterations on a side stream; elsewhere, or if the capture fails, the uncaptured step of this
module, with one warning naming the reason) or ``eager`` (this module's step, never captured:
the reference that a capture must equal to the bit, and a way to test the step on CPU).
Modes ``1`` and ``eager`` give the same kernels as each other, not the usual step's: Adam's
device coefficients round differently in the last bit. Off by default until measured on a GPU.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from kgengine.env_settings import CUDA_GRAPH_VAR, cuda_graph
from kgengine.ops._spec import PatchBatch

ENV_VAR = CUDA_GRAPH_VAR
#: Uncaptured iterations (on a side stream) before the capture, as PyTorch asks for.
WARMUP = 3

Outputs = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]


def mode_for(device: torch.device) -> str:
    """``"off"``, ``"eager"`` or ``"capture"`` from :data:`ENV_VAR` for a trainer on ``device``.

    Raises:
        BadSettingError: an unknown value (a ValueError; one line naming the variable and
            the value).
    """
    mode = cuda_graph()
    if mode != "capture":
        return mode
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    if device.type != "cuda":
        warnings.warn(f"{ENV_VAR}={raw}: {device} is not a CUDA device; the step runs "
                      "uncaptured", RuntimeWarning, stacklevel=3)
        return "eager"
    return "capture"


class StaticStep:
    """One iteration's G and D updates of a :class:`~kgengine.trainer.BatchTrainer` that reads
    only fixed buffers, replayed from a CUDA graph once captured.

    Args:
        trainer: the :class:`~kgengine.trainer.BatchTrainer` (its optimisers made with
            ``on_device=True``; typed ``Any`` here, as the trainer imports this module).
        capture: capture after :data:`WARMUP` iterations (CUDA only).
    """

    def __init__(self, trainer: Any, capture: bool) -> None:
        self.tr, self.capture = trainer, capture
        self.buffers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: Outputs | None = None
        self.warm, self._side = 0, None
        #: why the step is not captured ("" while it is, or may still be)
        self.reason = ("" if capture else "not requested" if trainer.device.type == "cuda"
                       else f"{trainer.device} is not a CUDA device")

    def __call__(self, pb: PatchBatch, noise: torch.Tensor) -> Outputs:
        """The step on crops ``pb`` and G's output noise (B, 3·S²): ``(l_gan, l_g, terms,
        l_d)``, each (B,) (the same tensors at every replay of a graph)."""
        if self.buffers is None:
            self.buffers = tuple(torch.empty_like(t) for t in (pb.g_crops, pb.d_crops, noise))
        for buf, src in zip(self.buffers, (pb.g_crops, pb.d_crops, noise), strict=True):
            buf.copy_(src)
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        if not self.capture:
            return self._run()
        if self.warm < WARMUP:
            self.warm += 1
            return self._on_side_stream()
        return self._capture()

    def _run(self) -> Outputs:
        g_in, d_in, noise = self.buffers
        tr = self.tr
        l_gan, l_g, terms = tr._g_step(g_in, tr.kernel())
        l_d, _ = tr._d_step(g_in, d_in, noise)
        return l_gan, l_g, terms, l_d

    def _on_side_stream(self) -> Outputs:
        if self._side is None:
            self._side = torch.cuda.Stream(self.tr.device)
        side, main = self._side, torch.cuda.current_stream(self.tr.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            out = self._run()
        main.wait_stream(side)
        return out

    def _capture(self) -> Outputs:
        """Capture the step (which records, not runs, it) and replay it once; on failure
        warn once and go on uncaptured (a failed capture ran nothing: the state is intact)."""
        graph = torch.cuda.CUDAGraph()
        try:  # on the warm-up's stream: autograd keeps the streams its nodes first ran on
            with torch.cuda.graph(graph, stream=self._side):
                outputs = self._run()
        except Exception as exc:  # noqa: BLE001 - any failure: fall back, say why
            self.capture, self.reason = False, f"capture failed: {exc}".splitlines()[0]
            warnings.warn(f"{ENV_VAR}: {self.reason}; the step runs uncaptured",
                          RuntimeWarning, stacklevel=3)
            return self._run()
        self.graph, self.outputs = graph, outputs
        graph.replay()
        return outputs
