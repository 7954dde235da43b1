"""Which torch device a run trains on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked
before any work, with a one-line error for one that is absent."""

from __future__ import annotations

import functools

import torch

from kgengine.errors import KGEngineError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if a device opens (:func:`cuda_usable`), else CPU; a bad or absent
    device is a one-line error."""
    if device == "auto":
        return torch.device("cuda" if cuda_usable() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise KGEngineError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise KGEngineError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KGEngineError("device cuda requested but torch.cuda.is_available() is False")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise KGEngineError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


@functools.cache
def cuda_usable() -> bool:
    """Whether ``auto`` may take CUDA: torch sees a device and a tensor can be made on it
    (a GPU listed but busy in exclusive mode, or without a working driver, is not usable:
    before 0.9.27 ``auto`` took it and training stopped on a traceback)."""
    try:
        if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
            return False
        torch.zeros(1, device="cuda")
    except Exception:  # noqa: BLE001 - any failure means: not usable
        return False
    return True
