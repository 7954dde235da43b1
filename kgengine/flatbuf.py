"""Flat parameter buffers: the batched tensors of a network in one 1-D buffer.

A network's parameters, each (B, ...) with one row per image, live in one flat buffer so
that Adam (:class:`kgengine.adam.FlatAdam`) updates them in a few operations; the autograd
leaves are views of consecutive parts of it, in the order given.
"""

from __future__ import annotations

import torch


def flatten(tensors: list[torch.Tensor], dev: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One flat buffer holding ``tensors`` (on ``dev``: device and dtype), and autograd
    leaves that are views of it.

    Updating the buffer in place (the optimiser) updates the leaves; gradients w.r.t. the
    leaves are concatenated back in the same order by :func:`flat_grad`.
    """
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(**dev)
    return leaves(flat, [t.shape for t in tensors])


def leaves(flat: torch.Tensor, shapes: list[torch.Size], rows: int | None = None
           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``flat`` and autograd leaves of these ``shapes`` (each (B, ...), or (rows, ...) when
    ``rows`` is given), views of consecutive parts of it."""
    out, start = [], 0
    for shape in shapes:
        shape = shape if rows is None else torch.Size((rows, *shape[1:]))
        n = shape.numel()
        out.append(flat[start : start + n].view(shape).requires_grad_())
        start += n
    return flat, out


def take_rows(flat: torch.Tensor, shapes: list[torch.Size], idx: torch.Tensor) -> torch.Tensor:
    """A new flat buffer laid out as :func:`flatten` lays out ``shapes`` (each (B, ...)),
    holding only the rows ``idx`` (R,) of each part, in the same order: (R/B · numel,)."""
    parts, start = [], 0
    for shape in shapes:
        n = shape.numel()
        parts.append(flat.detach()[start : start + n].view(shape)[idx].reshape(-1))
        start += n
    return torch.cat(parts)


def flat_grad(loss: torch.Tensor, leaf_list: list[torch.Tensor]) -> torch.Tensor:
    """d loss / d leaves, concatenated into one flat tensor (the buffer's layout)."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, leaf_list)])
