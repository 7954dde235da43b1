"""The trained KernelGAN generator G as an ONNX model (``kind = generator``).

``hr (N,C,H,W) -> lr`` = G applied to each channel: valid convolutions (no padding), last
layer stride 2, so the output is ``floor((H - R) / 2) + 1`` rows for receptive field ``R``
(13 for the authors' G)::

    G(x)[i, j] = sum_{u,v} K[u, v] * x[2i + u, 2j + v]

either as the six-layer network or folded into the one R×R kernel ``K``
(:func:`fold_generator`). The weights come from an estimation run's
``<name>_generator.npz`` (:func:`load_generator_weights`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from kgengine.errors import KGEngineError
from kgengine.export.graph import const, hr_input, make_model
from kgengine.export.metadata import stamp

#: The generator's own mapping (``kernel_convention`` in its metadata): no centring, no
#: padding; LR pixel (i, j) sits on HR pixel (2i + R//2, 2j + R//2).
VALID_CONVENTION = ("correlation, valid (no padding, no centring), "
                    "LR[i,j]=sum K[u,v]*HR[2*i+u,2*j+v], phase 0")


def load_generator_weights(path: str | os.PathLike) -> list[np.ndarray]:
    """Read ``<name>_generator.npz``: arrays ``w0..w{L-1}``, torch layout (out, in, kh, kw).

    Checks that the layers chain (1 channel in and out, ``in_i == out_{i-1}``) and are
    finite. Returns the L float32 arrays in order.

    Raises:
        KGEngineError: ``"<path>: <problem>"`` for an unreadable file or bad weights.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        why = type(exc).__name__
        raise KGEngineError(f"{path}: cannot read generator weights ({why})") from None
    weights = []
    while f"w{len(weights)}" in arrays:
        weights.append(arrays[f"w{len(weights)}"])
    if not weights:
        raise KGEngineError(f"{path}: no generator weights (expected arrays w0, w1, ...)")
    try:
        check_generator_weights(weights)
    except KGEngineError as exc:
        raise KGEngineError(f"{path}: {exc}") from None
    return [np.asarray(w, dtype=np.float32) for w in weights]


def check_generator_weights(weights: list[np.ndarray]) -> None:
    """Raise unless ``weights`` is a chain of 4-D real conv weights from 1 channel to 1
    channel."""
    if len(weights) == 0:
        raise KGEngineError("no generator weights (expected at least one layer)")
    prev = 1
    for i, w in enumerate(weights):
        w = np.asarray(w)
        if w.dtype.kind not in "biuf":  # complex: a float cast would drop the imaginary part
            raise KGEngineError(f"w{i} holds {w.dtype} values, expected real numbers")
        if w.ndim != 4:
            raise KGEngineError(f"w{i} must be 4-D (out,in,kh,kw), got shape {w.shape}")
        if w.shape[1] != prev:
            raise KGEngineError(f"w{i} has {w.shape[1]} input channels, expected {prev}")
        if not np.isfinite(w).all():
            raise KGEngineError(f"w{i} contains NaN or inf values")
        prev = w.shape[0]
    if prev != 1:
        raise KGEngineError(f"the last layer has {prev} output channels, expected 1")


def fold_generator(weights: list[np.ndarray]) -> np.ndarray:
    """The one kernel ``K`` of a deep linear generator (correlations, valid, last stride 2).

    A chain of correlations equals one correlation with the full convolution of the
    kernels (channels contracted)::

        K = w0 * w1 * ... * w_{L-1}

    computed from the output end with transposed convolutions in float64. Returns the
    (R, R) float64 array, ``R = 1 + sum(k_i - 1)`` (13 for kernel sizes 7, 5, 3, 1, 1, 1).
    """
    import torch  # heavy: only folding needs it
    import torch.nn.functional as F

    check_generator_weights(weights)
    ws = [torch.from_numpy(np.asarray(w, dtype=np.float64)) for w in weights]
    acc = ws[-1]  # (1, c, kh, kw): response of the last layer's input channels
    for w in reversed(ws[:-1]):
        # acc (1, c_out, a, b), w (c_out, c_in, kh, kw) -> (1, c_in, a+kh-1, b+kw-1)
        acc = F.conv_transpose2d(acc, w)
    return acc[0, 0].numpy()


def build_generator_model(weights: list[np.ndarray], folded: bool = False) -> onnx.ModelProto:
    """The trained generator: ``hr (N,C,H,W) -> lr``, G applied to each channel.

    Args:
        weights: the L conv weights (out, in, kh, kw); the last layer has stride 2.
        folded: one R×R strided Conv with :func:`fold_generator`'s kernel instead of the
            L-layer network (same function up to float32 rounding).
    Raises:
        KGEngineError: the weights do not chain from 1 channel to 1 channel.
    """
    check_generator_weights(weights)
    weights = [np.asarray(w, dtype=np.float32) for w in weights]
    inits = [
        const("nc1_shape", np.array([-1, 1, 0, 0], np.int64)),
        const("i0", np.array([0], np.int64)),
        const("i2", np.array([2], np.int64)),
        const("i4", np.array([4], np.int64)),
    ]
    nodes = [
        helper.make_node("Shape", ["hr"], ["in_shape"]),
        helper.make_node("Reshape", ["hr", "nc1_shape"], ["x1"]),  # (N·C,1,H,W)
    ]
    nodes += _generator_convs(weights, folded, inits)  # (N·C,1,H,W) -> (N·C,1,h,w) "g_out"
    nodes += [  # (N·C,1,h,w) -> (N,C,h,w)
        helper.make_node("Shape", ["g_out"], ["g_shape"]),
        helper.make_node("Slice", ["in_shape", "i0", "i2"], ["nc"]),
        helper.make_node("Slice", ["g_shape", "i2", "i4"], ["g_hw"]),
        helper.make_node("Concat", ["nc", "g_hw"], ["out_shape"], axis=0),
        helper.make_node("Reshape", ["g_out", "out_shape"], ["lr"]),
    ]
    rh, rw = (1 + sum(w.shape[axis] - 1 for w in weights) for axis in (2, 3))
    size = str(rh) if rh == rw else f"{rh}x{rw}"
    meta = {"kind": "generator", "scale": 2, "kernel_size": size,
            "generator_form": "folded" if folded else f"{len(weights)}-layer",
            # not the degraders' centred, reflect-padded convention (0.9.27: it said so)
            "kernel_convention": VALID_CONVENTION,
            "borders": "valid (no padding): output floor((H-R)/2)+1, R = kernel_size"}
    doc = f"hr (N,C,H,W) -> lr (N,C,floor((H-{rh})/2)+1,floor((W-{rw})/2)+1), KernelGAN G"
    return stamp(make_model("kgengine_generator", nodes, [hr_input()], "lr", inits, doc), meta)


def _generator_convs(weights: list[np.ndarray], folded: bool, inits: list) -> list:
    """Conv nodes ``x1 -> g_out`` (valid, last stride 2); appends their weights to ``inits``."""
    if folded:
        k = fold_generator(weights).astype(np.float32)
        inits.append(const("folded_kernel", k[None, None]))
        return [helper.make_node("Conv", ["x1", "folded_kernel"], ["g_out"], strides=[2, 2])]
    nodes, cur = [], "x1"
    for i, w in enumerate(weights):
        inits.append(const(f"w{i}", w))
        stride = 2 if i == len(weights) - 1 else 1
        out = "g_out" if i == len(weights) - 1 else f"g{i}"
        nodes.append(helper.make_node("Conv", [cur, f"w{i}"], [out], strides=[stride, stride]))
        cur = out
    return nodes
