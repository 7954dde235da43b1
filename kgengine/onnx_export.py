"""ONNX models of kgengine's degradation and of a trained KernelGAN generator.

The graphs are built directly with ``onnx.helper`` (opset :data:`OPSET`, IR version
:data:`IR_VERSION`, so onnxruntime >= 1.14 runs them); no exporter package is needed.
All inputs/outputs are float32 NCHW with dynamic batch ``N``, channels ``C``, height and
width. Colour channels are processed independently (``(N,C,H,W)`` is viewed as ``N·C``
single-channel images).

Three kinds (``metadata_props["kind"]``):

``fixed``
    ``hr (N,C,H,W) -> lr (N,C,ceil(H/s),ceil(W/s))`` with one kernel baked in::

        LR[i, j] = sum_{u,v} k[u, v] * HR[s*i + u - h//2, s*j + v - w//2]

    (the convention of :mod:`kgengine.kernel`, = :func:`kgengine.degrade.degrade_torch`).
``pool``
    ``hr (N,C,H,W), kernel (N,1,K,K) -> lr``: kernel ``i`` is applied to image ``i``.
    ONNX Conv's ``group`` is a static attribute, so a dynamic batch of kernels cannot be one
    grouped Conv: the model runs a ``Loop`` over the batch whose body blurs image ``i``'s
    channels with kernel ``i`` (a runtime Conv weight).

The degrader graph (per single-channel image, :func:`_blur_nodes`): Pad (reflect,
``h//2`` rows before and ``h-1-h//2`` after, likewise columns) -> Conv -> DepthToSpace ->
Slice to ``ceil(H/s) x ceil(W/s)``. The Conv is *tiled*: its ``t²`` output channels are the
``t×t`` LR pixels of one block (weight ``W[p·t+q, 0, s·p+u, s·q+v] = k[u, v]``, stride
``s·t``, :func:`tiled_weight`), and DepthToSpace puts them in place. It computes exactly
the same sums as a plain stride-``s`` Conv plus zero taps. A Conv with a single output
channel leaves most of the CPU's work units idle (SIMD lanes of onnxruntime's blocked Conv,
rows of its im2col GEMM); with 16 output channels the model runs 2-4x faster on the CPU
(``bench/bench_degrade.py``). ``tile = 1`` gives the plain Pad + Conv graph.
``generator``
    ``hr (N,C,H,W) -> lr`` = the trained KernelGAN generator G applied to each channel:
    valid convolutions (no padding), last layer stride 2, so the output is
    ``floor((H - R) / 2) + 1`` rows for receptive field ``R`` (13 for the authors' G)::

        G(x)[i, j] = sum_{u,v} K[u, v] * x[2i + u, 2j + v]

    either as the six-layer network or folded into the one R×R kernel ``K``
    (:func:`fold_generator`).

Noise (``fixed`` and ``pool``, when exported with ``noise=True``): two more inputs,
``noise_sigma`` of shape (N,) or (1,) and ``noise`` (unit Gaussian samples, broadcastable to
``lr``); the model returns ``lr + noise_sigma[:, None, None, None] * noise`` (no clipping).
The noise is drawn by the caller (e.g. ``np.random.default_rng(seed)``) rather than by an
in-graph RandomNormal, so it is reproducible from a seed whatever the provider and call
order; ``noise_sigma = 0`` means no noise.

Reflect padding limit: ONNX ``Pad`` mode ``reflect`` reflects once (whole-sample), which
equals kgengine's convention only while the pad is smaller than the image side (onnxruntime
rejects larger pads with INVALID_ARGUMENT). kgengine requires HR height and width to exceed
the kernel size (:func:`check_hr_size`), which keeps a margin over that limit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kgengine._version import __version__
from kgengine.atomic import atomic_write
from kgengine.errors import KGEngineError
from kgengine.kernel import KERNEL_CONVENTION

#: ONNX operator set of every exported model.
OPSET = 17
#: ONNX IR version written (the one that goes with opset 17).
IR_VERSION = 8
KINDS = ("fixed", "pool", "generator")
#: LR pixels per Conv output position along each axis (``t``; 16 Conv output channels).
DEFAULT_TILE = 4


def check_hr_size(h: int, w: int, kernel_size: int) -> None:
    """Raise if an (h, w) HR image is too small for reflect padding with this kernel.

    Rule: ``min(h, w) > kernel_size`` (ONNX reflect padding must be smaller than the side).
    """
    if min(h, w) <= kernel_size:
        raise KGEngineError(
            f"image is {w}x{h}: the HR side must exceed the kernel size {kernel_size}"
        )


def tile_index(kh: int, kw: int, scale: int, tile: int) -> np.ndarray:
    """Where each entry of the tiled Conv weight comes from in ``k.ravel()``.

    The tiled weight computes a ``t×t`` block of LR pixels per Conv output position::

        W[p*t + q, 0, s*p + u, s*q + v] = k[u, v]   (p, q < t), all else 0

    Returns int64 indices of shape ``(t², 1, kh + s(t-1), kw + s(t-1))`` into
    ``append(k.ravel(), 0)``; the zero entries point at index ``kh*kw``.
    """
    sh, sw = kh + scale * (tile - 1), kw + scale * (tile - 1)
    idx = np.full((tile * tile, 1, sh, sw), kh * kw, dtype=np.int64)
    flat = np.arange(kh * kw, dtype=np.int64).reshape(kh, kw)
    for p in range(tile):
        for q in range(tile):
            idx[p * tile + q, 0, scale * p : scale * p + kh, scale * q : scale * q + kw] = flat
    return idx


def tiled_weight(kernel: np.ndarray, scale: int, tile: int) -> np.ndarray:
    """The ``(t², 1, kh+s(t-1), kw+s(t-1))`` float32 Conv weight of :func:`tile_index`."""
    k = np.asarray(kernel, dtype=np.float32)
    return np.append(k.ravel(), np.float32(0))[tile_index(*k.shape, scale, tile)]


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _shape_nodes(nodes: list, inits: list, scale: int) -> None:
    """Define ``in_shape`` = Shape(hr) and ``ohw`` = ceil((H, W) / s) (int64 tensors)."""
    inits += [
        _const("i0", np.array([0], np.int64)),
        _const("i2", np.array([2], np.int64)),
        _const("i4", np.array([4], np.int64)),
        _const("s_minus_1", np.array([scale - 1], np.int64)),
        _const("s", np.array([scale], np.int64)),
        _const("zeros2", np.array([0, 0], np.int64)),
        _const("axes23", np.array([2, 3], np.int64)),
    ]
    nodes += [
        helper.make_node("Shape", ["hr"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "i2", "i4"], ["hw"]),
        helper.make_node("Add", ["hw", "s_minus_1"], ["hw_up"]),
        helper.make_node("Div", ["hw_up", "s"], ["ohw"]),  # int64: floor for positives
    ]


def _blur_nodes(x: str, w: str, out: str, scale: int, tile: int, pre: str) -> list:
    """Nodes for ``(M,1,H,W) -> (M,1,ceil(H/s),ceil(W/s))`` (uses ``pads``, ``ohw``).

    Reflect-pad by ``(h//2, h-1-h//2)`` rows and ``(w//2, w-1-w//2)`` columns, then the
    tiled strided Conv (stride ``s·t``, ``s(t-1)`` extra zero rows/columns at the end, which
    only reach LR pixels past the image) and DepthToSpace, then Slice to ``ohw``. With
    ``t = 1`` the Conv alone yields exactly ``ceil(H/s)`` rows.
    """
    st, extra = scale * tile, scale * (tile - 1)
    nodes = [helper.make_node("Pad", [x, "pads"], [pre + "pad"], mode="reflect")]
    if tile == 1:
        nodes.append(helper.make_node("Conv", [pre + "pad", w], [out], strides=[st, st]))
        return nodes
    return nodes + [
        helper.make_node(
            "Conv", [pre + "pad", w], [pre + "conv"], strides=[st, st], pads=[0, 0, extra, extra]
        ),
        helper.make_node("DepthToSpace", [pre + "conv"], [pre + "d2s"], blocksize=tile, mode="DCR"),
        helper.make_node("Slice", [pre + "d2s", "zeros2", "ohw", "axes23"], [out]),
    ]


def _pads(kh: int, kw: int) -> onnx.TensorProto:
    """ONNX Pad amounts for (M,1,H,W): ``[0,0,top,left, 0,0,bottom,right]``."""
    top, left = kh // 2, kw // 2
    return _const("pads", np.array([0, 0, top, left, 0, 0, kh - 1 - top, kw - 1 - left], np.int64))


def _noise_io(nodes: list, inits: list, inputs: list, y: str, out: str) -> None:
    """Append ``out = y + reshape(noise_sigma, (-1,1,1,1)) * noise`` to the graph lists."""
    inputs += [
        helper.make_tensor_value_info("noise_sigma", TensorProto.FLOAT, ["S"]),
        helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["Nn", "Cn", "Hn", "Wn"]),
    ]
    inits.append(_const("sigma_shape", np.array([-1, 1, 1, 1], np.int64)))
    nodes += [
        helper.make_node("Reshape", ["noise_sigma", "sigma_shape"], ["sigma4"]),
        helper.make_node("Mul", ["sigma4", "noise"], ["scaled_noise"]),
        helper.make_node("Add", [y, "scaled_noise"], [out]),
    ]


def _model(
    name: str,
    nodes: list,
    inputs: list,
    out_name: str,
    inits: list,
    meta: dict[str, object],
    doc: str,
) -> onnx.ModelProto:
    outputs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", "C", "h", "w"])]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="kgengine",
        producer_version=__version__,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    base = {
        "kgengine_version": __version__,
        "kernel_convention": KERNEL_CONVENTION,
        "opset": OPSET,
    }
    helper.set_model_props(model, {k: str(v) for k, v in {**base, **meta}.items()})
    return model


def _hr_input() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["N", "C", "H", "W"])


def build_fixed_model(
    kernel: np.ndarray, scale: int, noise: bool = False, tile: int = DEFAULT_TILE
) -> onnx.ModelProto:
    """The fixed-kernel degrader: ``hr (N,C,H,W) -> lr (N,C,ceil(H/s),ceil(W/s))``.

    Args:
        kernel: (h, w) kernel (any size; used as given, cast to float32).
        scale: integer factor s >= 1.
        noise: add the ``noise_sigma`` (N,)|(1,) and ``noise`` inputs (see module doc).
        tile: LR pixels per Conv position along each axis (see module doc); any ``t >= 1``
            gives the same result up to float32 rounding.
    """
    k = np.asarray(kernel, dtype=np.float32)
    if k.ndim != 2:
        raise KGEngineError(f"kernel: expected (h,w), got shape {k.shape}")
    _check_scale(scale, tile)
    kh, kw = k.shape
    inits = [_pads(kh, kw), _const("weight", tiled_weight(k, scale, tile)),
             _const("nc1_shape", np.array([-1, 1, 0, 0], np.int64))]
    inputs = [_hr_input()]
    nodes: list = []
    _shape_nodes(nodes, inits, scale)
    nodes.append(helper.make_node("Reshape", ["hr", "nc1_shape"], ["x1"]))  # (N·C,1,H,W)
    nodes += _blur_nodes("x1", "weight", "y1", scale, tile, "f_")
    nodes += [  # (N·C,1,oh,ow) -> (N,C,oh,ow)
        helper.make_node("Slice", ["in_shape", "i0", "i2"], ["nc"]),
        helper.make_node("Concat", ["nc", "ohw"], ["out_shape"], axis=0),
        helper.make_node("Reshape", ["y1", "out_shape"], ["y" if noise else "lr"]),
    ]
    if noise:
        _noise_io(nodes, inits, inputs, "y", "lr")
    size = str(kh) if kh == kw else f"{kh}x{kw}"
    meta = {"kind": "fixed", "scale": scale, "kernel_size": size, "noise": _noise_meta(noise),
            "tile": tile, "borders": "whole-sample reflect; H and W must exceed the kernel size"}
    doc = f"hr (N,C,H,W) -> lr (N,C,ceil(H/{scale}),ceil(W/{scale})), {size} kernel baked in"
    doc += _noise_doc(noise)
    return _model("kgengine_fixed_degrader", nodes, inputs, "lr", inits, meta, doc)


def build_pool_model(
    kernel_size: int, scale: int, noise: bool = False, tile: int = DEFAULT_TILE
) -> onnx.ModelProto:
    """The pool degrader: ``hr (N,C,H,W), kernel (N,1,K,K) -> lr``, kernel i on image i.

    Args:
        kernel_size: K, odd (pool kernels are zero-padded to it, centred).
        scale: integer factor s >= 1.
        noise: add the ``noise_sigma`` and ``noise`` inputs (see module doc).
        tile: as in :func:`build_fixed_model`.
    """
    _check_scale(scale, tile)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise KGEngineError(f"kernel size must be odd and positive, got {kernel_size}")
    k = kernel_size
    inits = [
        _pads(k, k),
        _const("k_flat_shape", np.array([0, -1], np.int64)),
        _const("k_zero_pad", np.array([0, 0, 0, 1], np.int64)),
        _const("tile_index", tile_index(k, k, scale, tile)),
    ]
    inputs = [
        _hr_input(),
        helper.make_tensor_value_info("kernel", TensorProto.FLOAT, ["N", 1, k, k]),
    ]
    nodes: list = []
    _shape_nodes(nodes, inits, scale)
    nodes += [
        helper.make_node("Reshape", ["kernel", "k_flat_shape"], ["k_flat"]),  # (N, K²)
        helper.make_node("Pad", ["k_flat", "k_zero_pad"], ["k_flat0"]),  # (N, K²+1), last 0
        helper.make_node("Gather", ["k_flat0", "tile_index"], ["weights"], axis=1),
        helper.make_node("Gather", ["in_shape", "i0"], ["n1"], axis=0),
        helper.make_node("Squeeze", ["n1"], ["n"]),
    ]
    # Loop body, image i: (C,H,W) -> (C,1,H,W) -> blur with weights[i] -> (C,oh,ow).
    body_nodes = [
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("Gather", ["hr", "iter"], ["b_img"], axis=0),
        helper.make_node("Unsqueeze", ["b_img", "b_axis1"], ["b_img1"]),
        helper.make_node("Gather", ["weights", "iter"], ["b_w"], axis=0),
        *_blur_nodes("b_img1", "b_w", "b_out1", scale, tile, "b_"),
        helper.make_node("Squeeze", ["b_out1", "b_axis1"], ["b_out"]),
    ]
    body = helper.make_graph(
        body_nodes,
        "per_image_blur",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("b_out", TensorProto.FLOAT, ["C", "h", "w"]),
        ],
        [_const("b_axis1", np.array([1], np.int64))],
    )
    nodes.append(helper.make_node("Loop", ["n", ""], ["y" if noise else "lr"], body=body))
    if noise:
        _noise_io(nodes, inits, inputs, "y", "lr")
    meta = {"kind": "pool", "scale": scale, "kernel_size": k, "noise": _noise_meta(noise),
            "tile": tile, "borders": "whole-sample reflect; H and W must exceed the kernel size"}
    doc = f"hr (N,C,H,W), kernel (N,1,{k},{k}) -> lr (N,C,ceil(H/{scale}),ceil(W/{scale}))"
    doc += _noise_doc(noise)
    return _model("kgengine_pool_degrader", nodes, inputs, "lr", inits, meta, doc)


def load_generator_weights(path: str | os.PathLike) -> list[np.ndarray]:
    """Read ``<name>_generator.npz``: arrays ``w0..w{L-1}``, torch layout (out, in, kh, kw).

    Checks that the layers chain (1 channel in and out, ``in_i == out_{i-1}``) and are
    finite. Returns the L float32 arrays in order.
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
        weights.append(np.asarray(arrays[f"w{len(weights)}"], dtype=np.float32))
    if not weights:
        raise KGEngineError(f"{path}: no generator weights (expected arrays w0, w1, ...)")
    try:
        check_generator_weights(weights)
    except KGEngineError as exc:
        raise KGEngineError(f"{path}: {exc}") from None
    return weights


def check_generator_weights(weights: list[np.ndarray]) -> None:
    """Raise unless ``weights`` is a chain of 4-D conv weights from 1 channel to 1 channel."""
    prev = 1
    for i, w in enumerate(weights):
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
    (R, R) array, ``R = 1 + sum(k_i - 1)`` (13 for kernel sizes 7, 5, 3, 1, 1, 1).
    """
    import torch
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
    """
    weights = [np.asarray(w, dtype=np.float32) for w in weights]
    check_generator_weights(weights)
    inits = [
        _const("nc1_shape", np.array([-1, 1, 0, 0], np.int64)),
        _const("i0", np.array([0], np.int64)),
        _const("i2", np.array([2], np.int64)),
        _const("i4", np.array([4], np.int64)),
    ]
    nodes = [
        helper.make_node("Shape", ["hr"], ["in_shape"]),
        helper.make_node("Reshape", ["hr", "nc1_shape"], ["x1"]),  # (N·C,1,H,W)
    ]
    if folded:
        k = fold_generator(weights).astype(np.float32)
        inits.append(_const("folded_kernel", k[None, None]))
        nodes.append(helper.make_node("Conv", ["x1", "folded_kernel"], ["g_out"], strides=[2, 2]))
    else:
        cur = "x1"
        for i, w in enumerate(weights):
            inits.append(_const(f"w{i}", w))
            stride = 2 if i == len(weights) - 1 else 1
            out = "g_out" if i == len(weights) - 1 else f"g{i}"
            nodes.append(helper.make_node("Conv", [cur, f"w{i}"], [out], strides=[stride, stride]))
            cur = out
    nodes += [  # (N·C,1,h,w) -> (N,C,h,w)
        helper.make_node("Shape", ["g_out"], ["g_shape"]),
        helper.make_node("Slice", ["in_shape", "i0", "i2"], ["nc"]),
        helper.make_node("Slice", ["g_shape", "i2", "i4"], ["g_hw"]),
        helper.make_node("Concat", ["nc", "g_hw"], ["out_shape"], axis=0),
        helper.make_node("Reshape", ["g_out", "out_shape"], ["lr"]),
    ]
    rf = 1 + sum(w.shape[2] - 1 for w in weights)
    meta = {"kind": "generator", "scale": 2, "kernel_size": rf,
            "generator_form": "folded" if folded else f"{len(weights)}-layer",
            "borders": "valid (no padding): output floor((H-R)/2)+1, R = kernel_size"}
    doc = f"hr (N,C,H,W) -> lr (N,C,floor((H-{rf})/2)+1,floor((W-{rf})/2)+1), KernelGAN G"
    return _model("kgengine_generator", nodes, [_hr_input()], "lr", inits, meta, doc)


def _check_scale(scale: int, tile: int = 1) -> None:
    if int(scale) != scale or scale < 1:
        raise KGEngineError(f"scale must be a positive integer, got {scale}")
    if int(tile) != tile or tile < 1:
        raise KGEngineError(f"tile must be a positive integer, got {tile}")


def _noise_meta(noise: bool) -> str:
    if not noise:
        return "none"
    return "lr + noise_sigma * noise; noise ~ N(0,1) drawn by the caller"


def _noise_doc(noise: bool) -> str:
    if not noise:
        return ""
    return "; lr += noise_sigma (N,)|(1,) * noise (unit Gaussian, broadcastable to lr)"


def check_model(model: onnx.ModelProto) -> None:
    """``onnx.checker`` (with shape inference) plus the kgengine metadata keys."""
    onnx.checker.check_model(model, full_check=True)
    meta = read_metadata(model)
    needed = ("kgengine_version", "scale", "kernel_size", "kernel_convention", "opset", "kind")
    missing = [k for k in needed if k not in meta]
    if missing:
        raise KGEngineError(f"ONNX model lacks metadata {missing}")


def read_metadata(model: onnx.ModelProto | str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of a model (object or file) as a dict."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Check ``model`` and write it atomically to ``path``."""
    check_model(model)
    data = model.SerializeToString()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write)


def describe_io(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """``(direction, name, shape)`` for each graph input and output, e.g.
    ``("input", "hr", "(N, C, H, W) float32")``."""
    rows = []
    for direction, values in (("input", model.graph.input), ("output", model.graph.output)):
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name
            rows.append((direction, v.name, f"({', '.join(dims)}) {dtype}"))
    return rows
