"""ONNX degraders: kgengine's degradation with one baked-in kernel (``fixed``) or a kernel per
image (``pool``).

All inputs/outputs are float32 NCHW (or all float16 with ``dtype="fp16"``, see below) with
dynamic batch ``N``, channels ``C``, height and width. Colour channels are processed
independently (``(N,C,H,W)`` is viewed as ``N·C`` single-channel images).

``fixed``
    ``hr (N,C,H,W) -> lr (N,C,ceil(H/s),ceil(W/s))`` with one kernel baked in::

        LR[i, j] = sum_{u,v} k[u, v] * HR[s*i + u - h//2, s*j + v - w//2]

    (the convention of :mod:`kgengine.kernel`, = :func:`kgengine.degrade.degrade_torch`).
``pool``
    ``hr (N,C,H,W), kernel (N,1,K,K) -> lr``: kernel ``i`` is applied to image ``i``.
    ONNX Conv's ``group`` is a static attribute, so a dynamic batch of kernels cannot be one
    grouped Conv: the model runs a ``Loop`` over the batch whose body blurs image ``i``'s
    channels with kernel ``i`` (a runtime Conv weight).

The blur per single-channel image (:func:`kgengine.export.graph.blur_nodes`): Pad (reflect,
``h//2`` rows before and ``h-1-h//2`` after, likewise columns) -> Conv -> DepthToSpace ->
Slice to ``ceil(H/s) x ceil(W/s)``. The Conv is *tiled*: its ``t²`` output channels are the
``t×t`` LR pixels of one block (weight ``W[p·t+q, 0, s·p+u, s·q+v] = k[u, v]``, stride
``s·t``, :func:`kgengine.export.graph.tiled_weight`), and DepthToSpace puts them in place.
It computes exactly the same sums as a plain stride-``s`` Conv plus zero taps. A Conv with a
single output channel leaves most of the CPU's work units idle (SIMD lanes of onnxruntime's
blocked Conv, rows of its im2col GEMM); with 16 output channels the model runs 2-4x faster
on the CPU (``bench/bench_degrade.py``). ``tile = 1`` gives the plain Pad + Conv graph.
The weight holds ``t²·(k + s(t−1))²`` values, so ``t``, ``s`` and the kernel side are bounded
(8, 8 and 255: :data:`~kgengine.export.graph.MAX_TILE` and its neighbours).

Noise (when exported with ``noise=True``): two more inputs, ``noise_sigma`` of shape (N,) or
(1,) and ``noise`` (unit Gaussian samples, broadcastable to ``lr``); the model returns
``lr + noise_sigma[:, None, None, None] * noise`` (no clipping). The noise is drawn by the
caller (e.g. ``np.random.default_rng(seed)``) rather than by an in-graph RandomNormal, so it
is reproducible from a seed whatever the provider and call order; ``noise_sigma = 0`` means
no noise.

fp16 (``dtype="fp16"``): the same graph with every float tensor in float16: the inputs
(``hr``, ``kernel``, ``noise_sigma``, ``noise``), the baked weights and the ``lr`` output,
so that GPU providers run half-precision Convs and move half the bytes. The rounding of the
inputs to float16 (relative 2^-11) and of the output bound the difference to the float32
model: about 1 ulp of float16 near the output value (2^-11 ≈ 4.9e-4 just below 1.0), plus
the accumulation's rounding where a provider sums in float16. On onnxruntime's CPU provider,
max |fp16 − fp32| ≤ 1e-3 on [0, 1] images (tested on three shapes, 13×13 and 25×25
kernels, with noise); metadata ``dtype`` says which.

Reflect padding limit: ONNX ``Pad`` mode ``reflect`` reflects once (whole-sample), which
equals kgengine's convention only while the pad is smaller than the image side (onnxruntime
rejects larger pads with INVALID_ARGUMENT). kgengine requires HR height and width to exceed
the kernel size (:func:`kgengine.export.graph.check_hr_size`), which keeps a margin over
that limit.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from kgengine.errors import KGEngineError
from kgengine.export.graph import (
    DEFAULT_TILE,
    MAX_KERNEL_SIZE,
    blur_nodes,
    check_dtype,
    check_kernel_side,
    check_range,
    check_scale,
    const,
    hr_input,
    make_model,
    noise_io,
    pads,
    shape_nodes,
    tile_index,
    tiled_weight,
)
from kgengine.export.metadata import stamp

BORDERS = "whole-sample reflect; H and W must exceed the kernel size"


def build_fixed_model(
    kernel: np.ndarray, scale: int, noise: bool = False, tile: int = DEFAULT_TILE,
    dtype: str = "fp32",
) -> onnx.ModelProto:
    """The fixed-kernel degrader: ``hr (N,C,H,W) -> lr (N,C,ceil(H/s),ceil(W/s))``.

    Args:
        kernel: (h, w) kernel (any size; used as given, cast to float32, then to the dtype).
        scale: integer factor s in [1, 8].
        noise: add the ``noise_sigma`` (N,)|(1,) and ``noise`` inputs (see module doc).
        tile: LR pixels per Conv position along each axis (see module doc); any ``t`` in
            [1, 8] (:data:`~kgengine.export.graph.MAX_TILE`) gives the same result up to
            float32 rounding.
        dtype: ``"fp32"`` or ``"fp16"`` (every float input, weight and output; module doc).
    Raises:
        KGEngineError: ``kernel`` not 2-D, not finite or a side over 255, ``scale``/``tile``
            not integers in [1, 8], or an unknown dtype.
    """
    if np.iscomplexobj(kernel) or np.asarray(kernel).dtype.kind not in "biuf":
        raise KGEngineError(f"kernel: expected real numbers, got {np.asarray(kernel).dtype}")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: refused below
        k = np.asarray(kernel, dtype=np.float32)
    if k.ndim != 2:
        raise KGEngineError(f"kernel: expected (h,w), got shape {k.shape}")
    if not np.isfinite(k).all():
        raise KGEngineError("kernel: contains NaN or inf values (in float32)")
    for side in k.shape:
        check_range("kernel side", side, MAX_KERNEL_SIZE)
    scale, tile = check_scale(scale, tile)
    elem, np_dtype, dtype_name = check_dtype(dtype)
    kh, kw = k.shape
    inits = [pads(kh, kw), const("weight", tiled_weight(k, scale, tile).astype(np_dtype)),
             const("nc1_shape", np.array([-1, 1, 0, 0], np.int64))]
    inputs = [hr_input(elem)]
    nodes: list = []
    shape_nodes(nodes, inits, scale)
    nodes.append(helper.make_node("Reshape", ["hr", "nc1_shape"], ["x1"]))  # (N·C,1,H,W)
    nodes += blur_nodes("x1", "weight", "y1", scale, tile, "f_")
    nodes += [  # (N·C,1,oh,ow) -> (N,C,oh,ow)
        helper.make_node("Slice", ["in_shape", "i0", "i2"], ["nc"]),
        helper.make_node("Concat", ["nc", "ohw"], ["out_shape"], axis=0),
        helper.make_node("Reshape", ["y1", "out_shape"], ["y" if noise else "lr"]),
    ]
    if noise:
        noise_io(nodes, inits, inputs, "y", "lr", elem)
    size = str(kh) if kh == kw else f"{kh}x{kw}"
    meta = {"kind": "fixed", "scale": scale, "kernel_size": size, "noise": _noise_meta(noise),
            "tile": tile, "borders": BORDERS, "dtype": dtype_name}
    doc = f"hr (N,C,H,W) -> lr (N,C,ceil(H/{scale}),ceil(W/{scale})), {size} kernel baked in"
    doc += _noise_doc(noise) + f"; {dtype_name}"
    model = make_model("kgengine_fixed_degrader", nodes, inputs, "lr", inits, doc, elem)
    return stamp(model, meta)


def build_pool_model(
    kernel_size: int, scale: int, noise: bool = False, tile: int = DEFAULT_TILE,
    dtype: str = "fp32",
) -> onnx.ModelProto:
    """The pool degrader: ``hr (N,C,H,W), kernel (N,1,K,K) -> lr``, kernel i on image i.

    Args:
        kernel_size: K, odd, at most 255 (pool kernels are zero-padded to it, centred).
        scale: integer factor s in [1, 8].
        noise: add the ``noise_sigma`` and ``noise`` inputs (see module doc).
        tile: as in :func:`build_fixed_model`.
        dtype: ``"fp32"`` or ``"fp16"`` (``hr``, ``kernel``, noise inputs and ``lr``).
    Raises:
        KGEngineError: ``kernel_size`` not odd in [1, 255], bad ``scale``/``tile``, or an
            unknown dtype.
    """
    scale, tile = check_scale(scale, tile)
    elem, _, dtype_name = check_dtype(dtype)
    k = check_kernel_side("kernel size", kernel_size)
    inits = [
        pads(k, k),
        const("k_flat_shape", np.array([0, -1], np.int64)),
        const("off_range", np.array([100], np.int64)),
        const("k_zero_pad", np.array([0, 0, 0, 1], np.int64)),
        const("tile_index", tile_index(k, k, scale, tile)),
    ]
    inputs = [
        hr_input(elem),
        helper.make_tensor_value_info("kernel", elem, ["N", 1, k, k]),
    ]
    nodes: list = []
    shape_nodes(nodes, inits, scale)
    nodes += [
        helper.make_node("Reshape", ["kernel", "k_flat_shape"], ["k_flat"]),  # (N, K²)
        helper.make_node("Pad", ["k_flat", "k_zero_pad"], ["k_flat0"]),  # (N, K²+1), last 0
        helper.make_node("Gather", ["k_flat0", "tile_index"], ["weights"], axis=1),
        *_kernel_rows_check(),
        helper.make_node("Loop", ["n", ""], ["y" if noise else "lr"],
                         body=_per_image_blur(scale, tile, elem)),
    ]
    if noise:
        noise_io(nodes, inits, inputs, "y", "lr", elem)
    meta = {"kind": "pool", "scale": scale, "kernel_size": k, "noise": _noise_meta(noise),
            "tile": tile, "borders": BORDERS, "dtype": dtype_name}
    doc = f"hr (N,C,H,W), kernel (N,1,{k},{k}) -> lr (N,C,ceil(H/{scale}),ceil(W/{scale}))"
    doc += _noise_doc(noise) + f"; {dtype_name}"
    model = make_model("kgengine_pool_degrader", nodes, inputs, "lr", inits, doc, elem)
    return stamp(model, meta)


def _kernel_rows_check() -> list:
    """Nodes for the Loop's trip count ``n`` = kernel's N, read at index 100·(N_kernel −
    N_hr) of kernel's shape: index 0 when the two batches agree, out of range (an error
    that names this node) when they do not. Before 0.9.27 extra kernels were ignored
    without a word. (A Reshape to hr's N does not do: onnxruntime's optimiser drops it.)"""
    return [
        helper.make_node("Gather", ["in_shape", "i0"], ["n1"], axis=0),
        helper.make_node("Shape", ["kernel"], ["k_shape"]),
        helper.make_node("Gather", ["k_shape", "i0"], ["nk1"], axis=0),
        helper.make_node("Sub", ["nk1", "n1"], ["n_diff"]),
        helper.make_node("Mul", ["n_diff", "off_range"], ["n_index"]),
        helper.make_node("Gather", ["k_shape", "n_index"], ["n_checked"], axis=0,
                         name="kernel_rows_must_equal_hr_images"),
        helper.make_node("Squeeze", ["n_checked"], ["n"]),
    ]


def _per_image_blur(scale: int, tile: int, elem: int = TensorProto.FLOAT) -> onnx.GraphProto:
    """The pool model's Loop body, image i: (C,H,W) -> (C,1,H,W) -> blur with weights[i]
    -> (C,oh,ow); reads ``hr``, ``weights``, ``pads`` and ``ohw`` from the outer graph."""
    body_nodes = [
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("Gather", ["hr", "iter"], ["b_img"], axis=0),
        helper.make_node("Unsqueeze", ["b_img", "b_axis1"], ["b_img1"]),
        helper.make_node("Gather", ["weights", "iter"], ["b_w"], axis=0),
        *blur_nodes("b_img1", "b_w", "b_out1", scale, tile, "b_"),
        helper.make_node("Squeeze", ["b_out1", "b_axis1"], ["b_out"]),
    ]
    return helper.make_graph(
        body_nodes,
        "per_image_blur",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("b_out", elem, ["C", "h", "w"]),
        ],
        [const("b_axis1", np.array([1], np.int64))],
    )


def _noise_meta(noise: bool) -> str:
    if not noise:
        return "none"
    return "lr + noise_sigma * noise; noise ~ N(0,1) drawn by the caller"


def _noise_doc(noise: bool) -> str:
    if not noise:
        return ""
    return "; lr += noise_sigma (N,)|(1,) * noise (unit Gaussian, broadcastable to lr)"
