"""Which implementation of G's kernel composition, D and the priors the trainer runs on a device.

On CPU, when Numba imports, the compiled passes (:mod:`kgengine.generator_numba`,
:mod:`kgengine.discriminator_numba`, :mod:`kgengine.priors_numba`); elsewhere, or with
``KGENGINE_OPS_BACKEND=torch`` or ``KGENGINE_NETWORKS=torch`` (the references only, the ops as
chosen: 0.5's arithmetic), the PyTorch references (:mod:`kgengine.generator`,
:mod:`kgengine.discriminator`, :mod:`kgengine.priors`). One choice per
device for every batch size, so that a batch gives the same bits as single runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch

from kgengine import discriminator as D
from kgengine import env_settings, priors
from kgengine import generator as G
from kgengine.ops.backend import ENV_VAR, OPS, availability, backend_name

#: ``torch`` here keeps the PyTorch networks on CPU (the ops keep their own choice)
NETWORKS_VAR = env_settings.NETWORKS_VAR


def compiled_on(device: torch.device) -> bool:
    """Use the compiled Numba networks: CPU, Numba imports, neither ``KGENGINE_OPS_BACKEND``
    (which forces every PyTorch reference) nor ``KGENGINE_NETWORKS`` is ``torch``."""
    forced = os.environ.get(ENV_VAR, "").strip() == "torch" or env_settings.torch_networks()
    return device.type == "cpu" and availability("numba")[0] and not forced


def discriminator_for(device: torch.device, threads: int = 1) -> Callable[..., torch.Tensor]:
    """D's forward for tensors on ``device`` (:func:`kgengine.discriminator.forward`'s
    signature): the compiled passes of :mod:`kgengine.discriminator_numba` on ``threads``
    where :func:`compiled_on` (about 2x the PyTorch graph per pass at B = 1), else the
    reference."""
    if compiled_on(device):
        from kgengine import discriminator_numba

        return functools.partial(discriminator_numba.forward, threads=threads)
    return D.forward


def compose_for(device: torch.device) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """G's kernel composition for ``device``: :mod:`kgengine.generator_numba` where
    :func:`compiled_on` (forward and backward 2x faster at B = 1), else the reference."""
    if compiled_on(device):
        from kgengine import generator_numba

        return generator_numba.compose_kernel
    return G.compose_kernel


def priors_for(device: torch.device) -> Callable[..., tuple[torch.Tensor, dict]]:
    """G's prior loss for ``device`` (:func:`kgengine.priors.add_priors`'s signature):
    :func:`kgengine.priors_numba.add_priors` (the five priors in one compiled call each way)
    where :func:`compiled_on` and :data:`kgengine.priors.PRIORS` are the five it computes,
    else the reference."""
    if compiled_on(device):
        from kgengine import priors_numba

        if tuple(p.name for p in priors.PRIORS) == priors_numba.NAMES:
            return priors_numba.add_priors
    return priors.add_priors


def backends_used(device: torch.device) -> dict[str, str | None]:
    """What computes a training on ``device`` (each report's ``backends``, 0.9.28): the
    networks (``"numba"`` where :func:`compiled_on`, else ``"torch"``), each op's backend
    (:func:`kgengine.ops.backend.backend_name`) and the Numba and llvmlite versions, which
    compile that code. Kernels are the same bytes only for the same entries (and SIMD
    level): ``KGENGINE_OPS_BACKEND=torch`` or ``KGENGINE_NETWORKS=torch`` train others."""
    out: dict[str, str | None] = {"networks": "numba" if compiled_on(device) else "torch"}
    out.update({op: backend_name(op, device) for op in OPS})
    try:
        import llvmlite
        import numba
    except ImportError:
        out.update(numba=None, llvmlite=None)
    else:
        out.update(numba=numba.__version__, llvmlite=llvmlite.__version__)
    return out
