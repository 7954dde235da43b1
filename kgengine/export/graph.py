"""ONNX graph building blocks shared by every kgengine ONNX model.

Names and shapes used across the blocks (all float32 NCHW unless stated):

- ``hr``: the (N, C, H, W) input; ``in_shape`` = Shape(hr), int64 (4,);
- ``ohw``: ceil((H, W) / s), int64 (2,) (:func:`shape_nodes`);
- ``pads``: the reflect-pad amounts of a (M, 1, H, W) tensor (:func:`pads`).

The degrader blur (:func:`blur_nodes`) is Pad (reflect) -> tiled strided Conv ->
DepthToSpace -> Slice; :func:`tile_index` / :func:`tiled_weight` lay out its Conv weight.
"""

from __future__ import annotations

import numbers

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kgengine._version import __version__
from kgengine.errors import KGEngineError

#: ONNX operator set of every exported model.
OPSET = 17
#: ONNX IR version written (the one that goes with opset 17).
IR_VERSION = 8
#: LR pixels per Conv output position along each axis (``t``; 16 Conv output channels).
DEFAULT_TILE = 4
#: Largest tile, scale and kernel side of the degraders. The tiled weight holds
#: ``t²·(k + s(t−1))²`` values (float32; the pool model's index, int64): at t = 8 a 13×13
#: x2 kernel gives a 0.2 MB fixed / 0.4 MB pool model and a 37×37 x4 one 1.1 / 2.2 MB, at
#: all three maxima the pool model is 50 MB; t = 16 is 2-18 MB, t = 64 316 MB, t = 128 past
#: protobuf's 2 GB limit. Beyond t = 4 the zero taps only add work (the CPU speed-up is from
#: the 16 output channels), so 8 is room enough.
MAX_TILE, MAX_SCALE, MAX_KERNEL_SIZE = 8, 8, 255
#: Element types of the degraders: name -> (ONNX type, NumPy dtype, metadata name).
DTYPES: dict[str, tuple[int, type, str]] = {
    "fp32": (TensorProto.FLOAT, np.float32, "float32"),
    "fp16": (TensorProto.FLOAT16, np.float16, "float16"),
}


def check_dtype(dtype: str) -> tuple[int, type, str]:
    """``DTYPES[dtype]``; raises :class:`KGEngineError` naming the choices otherwise."""
    if dtype not in DTYPES:
        raise KGEngineError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def check_hr_size(h: int, w: int, kernel_size: int) -> None:
    """Raise if an (h, w) HR image is too small for reflect padding with this kernel.

    Rule: ``min(h, w) > kernel_size`` (ONNX reflect padding must be smaller than the side).

    Raises:
        KGEngineError: ``"image is WxH: the HR side must exceed the kernel size K"``.
    """
    if min(h, w) <= kernel_size:
        raise KGEngineError(
            f"image is {w}x{h}: the HR side must exceed the kernel size {kernel_size}"
        )


def _whole(value: object) -> bool:
    """True for a finite whole number that is not a bool (2 and 2.0 are, True and 1.5 not)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return False
    return bool(np.isfinite(value)) and int(value) == value


def check_range(name: str, value: int, high: int, low: int = 1) -> int:
    """``value`` if an integer in [low, high], else :class:`KGEngineError` naming ``name``
    (the option, e.g. ``--tile``), the value and the range."""
    if not _whole(value) or not low <= value <= high:
        raise KGEngineError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def check_scale(scale: int, tile: int = 1) -> tuple[int, int]:
    """``(scale, tile)`` as ints if ``scale`` is in [1, :data:`MAX_SCALE`] and ``tile`` in
    [1, :data:`MAX_TILE`] (whole numbers), else :class:`KGEngineError`."""
    return check_range("scale", scale, MAX_SCALE), check_range("tile", tile, MAX_TILE)


def check_kernel_side(name: str, side: int) -> int:
    """``side`` if odd and in [1, :data:`MAX_KERNEL_SIZE`], else :class:`KGEngineError`."""
    if not _whole(side) or not 1 <= side <= MAX_KERNEL_SIZE or side % 2 == 0:
        raise KGEngineError(f"{name} must be an odd integer in [1, {MAX_KERNEL_SIZE}], got {side}")
    return int(side)


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
    """The ``(t², 1, kh+s(t-1), kw+s(t-1))`` float32 Conv weight of :func:`tile_index`.

    Args:
        kernel: (kh, kw) kernel, cast to float32.
    """
    k = np.asarray(kernel, dtype=np.float32)
    return np.append(k.ravel(), np.float32(0))[tile_index(*k.shape, scale, tile)]


def const(name: str, value: np.ndarray) -> onnx.TensorProto:
    """An initializer ``name`` holding ``value`` (its dtype and shape kept)."""
    return numpy_helper.from_array(np.asarray(value), name)


def hr_input(elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """The ``hr`` input: (N, C, H, W) of ONNX type ``elem`` (float32), every axis dynamic."""
    return helper.make_tensor_value_info("hr", elem, ["N", "C", "H", "W"])


def shape_nodes(nodes: list, inits: list, scale: int) -> None:
    """Define ``in_shape`` = Shape(hr) and ``ohw`` = ceil((H, W) / s) (int64 tensors)."""
    inits += [
        const("i0", np.array([0], np.int64)),
        const("i2", np.array([2], np.int64)),
        const("i4", np.array([4], np.int64)),
        const("s_minus_1", np.array([scale - 1], np.int64)),
        const("s", np.array([scale], np.int64)),
        const("zeros2", np.array([0, 0], np.int64)),
        const("axes23", np.array([2, 3], np.int64)),
    ]
    nodes += [
        helper.make_node("Shape", ["hr"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "i2", "i4"], ["hw"]),
        helper.make_node("Add", ["hw", "s_minus_1"], ["hw_up"]),
        helper.make_node("Div", ["hw_up", "s"], ["ohw"]),  # int64: floor for positives
    ]


def pads(kh: int, kw: int) -> onnx.TensorProto:
    """ONNX Pad amounts ``pads`` for (M,1,H,W): ``[0,0,top,left, 0,0,bottom,right]``.

    ``top = kh//2``, ``bottom = kh-1-kh//2`` (likewise left/right): the kernel's centre
    index ``(kh//2, kw//2)`` reads the HR pixel under its LR pixel.
    """
    top, left = kh // 2, kw // 2
    return const("pads", np.array([0, 0, top, left, 0, 0, kh - 1 - top, kw - 1 - left], np.int64))


def blur_nodes(x: str, w: str, out: str, scale: int, tile: int, pre: str) -> list:
    """Nodes for ``(M,1,H,W) -> (M,1,ceil(H/s),ceil(W/s))`` (uses ``pads``, ``ohw``).

    Reflect-pad by ``(h//2, h-1-h//2)`` rows and ``(w//2, w-1-w//2)`` columns, then the
    tiled strided Conv (stride ``s·t``, ``s(t-1)`` extra zero rows/columns at the end, which
    only reach LR pixels past the image) and DepthToSpace, then Slice to ``ohw``. With
    ``t = 1`` the Conv alone yields exactly ``ceil(H/s)`` rows.

    Args:
        x: name of the (M,1,H,W) input; ``w``: name of the tiled weight
            (t², 1, kh+s(t-1), kw+s(t-1)); ``out``: name of the result; ``pre``: prefix of
            the intermediate names.
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


def noise_io(nodes: list, inits: list, inputs: list, y: str, out: str,
             elem: int = TensorProto.FLOAT) -> None:
    """Append ``out = y + reshape(noise_sigma, (-1,1,1,1)) * noise`` to the graph lists.

    Adds the inputs ``noise_sigma`` (S,) with S = N or 1, and ``noise`` (Nn, Cn, Hn, Wn),
    broadcastable to ``y``, both of ONNX type ``elem`` (float32 by default). ``out`` has
    ``y``'s shape: a ``noise_sigma`` or ``noise`` that would broadcast ``y`` to more images
    or channels is an error naming the node ``noise_must_broadcast_to_lr`` (before 0.9.29
    the output grew instead): the sum's shape is read at the indices ``0..3 + 100·d``, with
    ``d`` the summed difference of the two shapes, and ``out`` is reshaped to what it read.
    """
    inputs += [
        helper.make_tensor_value_info("noise_sigma", elem, ["S"]),
        helper.make_tensor_value_info("noise", elem, ["Nn", "Cn", "Hn", "Wn"]),
    ]
    inits += [const("sigma_shape", np.array([-1, 1, 1, 1], np.int64)),
              const("iota4", np.arange(4, dtype=np.int64)),
              const("noise_off_range", np.array(100, np.int64))]
    nodes += [
        helper.make_node("Reshape", ["noise_sigma", "sigma_shape"], ["sigma4"]),
        helper.make_node("Mul", ["sigma4", "noise"], ["scaled_noise"]),
        helper.make_node("Add", [y, "scaled_noise"], ["noisy"]),
        helper.make_node("Shape", [y], ["y_shape"]),
        helper.make_node("Shape", ["noisy"], ["noisy_shape"]),
        helper.make_node("Sub", ["noisy_shape", "y_shape"], ["shape_diff"]),
        helper.make_node("Abs", ["shape_diff"], ["shape_abs"]),
        helper.make_node("ReduceSum", ["shape_abs"], ["shape_d"], keepdims=0),
        helper.make_node("Mul", ["shape_d", "noise_off_range"], ["shape_off"]),
        helper.make_node("Add", ["iota4", "shape_off"], ["shape_index"]),
        helper.make_node("Gather", ["noisy_shape", "shape_index"], ["lr_shape"], axis=0,
                         name="noise_must_broadcast_to_lr"),
        helper.make_node("Reshape", ["noisy", "lr_shape"], [out]),
    ]


def live_parts(nodes: list, inits: list, out_name: str) -> tuple[list, list]:
    """The ``nodes`` (in topological order) and ``inits`` that ``out_name`` depends on, in
    their order."""
    needed, keep = {out_name}, []
    for node in reversed(nodes):
        if needed.intersection(node.output):
            keep.append(node)
            needed.update(_reads(node))
    return keep[::-1], [i for i in inits if i.name in needed]


def _reads(node: onnx.NodeProto) -> set[str]:
    """The names a node reads: its inputs and those its sub-graphs (a Loop's body) read."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in sub.node:
                names |= _reads(inner)
    return names


def make_model(
    name: str, nodes: list, inputs: list, out_name: str, inits: list, doc: str,
    elem: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    """A model (opset :data:`OPSET`, IR :data:`IR_VERSION`) with one (N,C,h,w) output of
    ONNX type ``elem`` (float32 by default).

    Metadata is added by :func:`kgengine.export.metadata.stamp`. Nodes and initializers the
    output does not depend on (with ``tile = 1`` the Slice's) are left out, so onnxruntime
    has nothing to remove (it warned about each at every session).
    """
    outputs = [helper.make_tensor_value_info(out_name, elem, ["N", "C", "h", "w"])]
    nodes, inits = live_parts(nodes, inits, out_name)
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="kgengine",
        producer_version=__version__,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    return model
