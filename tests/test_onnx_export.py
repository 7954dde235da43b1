"""ONNX degraders and generator export: onnxruntime vs the PyTorch references.

Reference for the degraders: ``kgengine.degrade.degrade_torch`` in float64; for the
generator: a plain layer-by-layer ``F.conv2d`` forward. Models run on onnxruntime's CPU
provider with all graph optimisations (the blocked-Conv path used in production).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from kgengine._version import __version__
from kgengine.cli import app
from kgengine.degrade import degrade_torch
from kgengine.errors import KGEngineError
from kgengine.export import (
    EXPORTERS,
    KINDS,
    OPSET,
    Exported,
    build_fixed_model,
    build_generator_model,
    build_pool_model,
    check_hr_size,
    check_model,
    describe_io,
    export_model,
    fold_generator,
    load_generator_weights,
    read_metadata,
    save_model,
    tiled_weight,
)
from kgengine.export.generator import VALID_CONVENTION
from kgengine.kernel import KERNEL_CONVENTION, anisotropic_gaussian
from kgengine.providers import make_session, session_options

ATOL = 1e-5  # the bound on [0, 1] images (float32 sums of <= 625 terms: ~1e-7)
G_SHAPES = [(64, 1, 7, 7), (64, 64, 5, 5), (64, 64, 3, 3), (64, 64, 1, 1), (64, 64, 1, 1),
            (1, 64, 1, 1)]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    check_model(model)  # onnx.checker with full shape inference + metadata keys
    return ort.InferenceSession(
        model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
    )


def _reference(x: np.ndarray, kernels: np.ndarray, scale: int) -> np.ndarray:
    return degrade_torch(torch.from_numpy(x).double(), torch.from_numpy(kernels).double(),
                         scale).numpy()


def _random_kernel(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    k = rng.random(shape) ** 3  # peaky, not symmetric: catches flips and off-by-one shifts
    return (k / k.sum()).astype(np.float32)


# Two or more shapes and batch sizes each; odd sides, non-square, side just above k.
SHAPES = [(1, 3, 30, 41), (3, 3, 47, 26), (2, 1, 27, 33)]
CASES = [(2, (13, 13)), (4, (25, 25)), (3, (8, 8)), (2, (7, 11))]


@pytest.mark.parametrize("tile", [1, 4])
@pytest.mark.parametrize("scale, kshape", CASES)
def test_fixed_model_matches_degrade(scale: int, kshape: tuple[int, int], tile: int) -> None:
    rng = np.random.default_rng(scale * 100 + kshape[0])
    k = _random_kernel(rng, kshape)
    sess = _session(build_fixed_model(k, scale, tile=tile))
    for shape in SHAPES:
        x = rng.random(shape, dtype=np.float32)
        out = sess.run(None, {"hr": x})[0]
        ref = _reference(x, k, scale)
        assert out.shape == ref.shape == (*shape[:2], -(-shape[2] // scale), -(-shape[3] // scale))
        np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("tile", [1, 4])
@pytest.mark.parametrize("scale, ksize", [(2, 13), (4, 25), (2, 5)])
def test_pool_model_matches_degrade(scale: int, ksize: int, tile: int) -> None:
    rng = np.random.default_rng(ksize + tile)
    sess = _session(build_pool_model(ksize, scale, tile=tile))
    for shape in SHAPES:
        x = rng.random(shape, dtype=np.float32)
        ks = np.stack([_random_kernel(rng, (ksize, ksize)) for _ in range(shape[0])])
        out = sess.run(None, {"hr": x, "kernel": ks[:, None]})[0]
        np.testing.assert_allclose(out, _reference(x, ks, scale), rtol=0, atol=ATOL)


def test_pool_model_applies_kernel_i_to_image_i() -> None:
    rng = np.random.default_rng(7)
    x1 = rng.random((1, 3, 40, 36), dtype=np.float32)
    x = np.concatenate([x1, x1, rng.random((1, 3, 40, 36), dtype=np.float32)])
    delta = np.zeros((13, 13), np.float32)
    delta[6, 6] = 1.0
    ks = np.stack([delta, _random_kernel(rng, (13, 13)), _random_kernel(rng, (13, 13))])
    sess = _session(build_pool_model(13, 2))
    out = sess.run(None, {"hr": x, "kernel": ks[:, None]})[0]
    np.testing.assert_allclose(out[0], x1[0, :, ::2, ::2], atol=1e-6)  # delta = plain subsampling
    for i in range(3):
        np.testing.assert_allclose(out[i], _reference(x[i : i + 1], ks[i], 2)[0], atol=ATOL)
    assert np.abs(out[0] - out[1]).max() > 1e-3  # same image, other kernel
    # permuting the (image, kernel) pairs permutes the outputs
    perm = [2, 0, 1]
    out_p = sess.run(None, {"hr": x[perm], "kernel": ks[perm][:, None]})[0]
    np.testing.assert_allclose(out_p, out[perm], atol=1e-6)


@pytest.mark.parametrize("kind", ["fixed", "pool"])
def test_noise_inputs(kind: str) -> None:
    rng = np.random.default_rng(11)
    k = _random_kernel(rng, (13, 13))
    x = rng.random((2, 3, 30, 28), dtype=np.float32)
    feeds = {"hr": x}
    if kind == "fixed":
        plain, noisy = build_fixed_model(k, 2), build_fixed_model(k, 2, noise=True)
    else:
        plain, noisy = build_pool_model(13, 2), build_pool_model(13, 2, noise=True)
        feeds["kernel"] = np.stack([k, k])[:, None]
    base = _session(plain).run(None, feeds)[0]
    sess = _session(noisy)
    unit = rng.standard_normal(base.shape, dtype=np.float32)
    sigma = np.array([0.01, 0.1], np.float32)
    out = sess.run(None, {**feeds, "noise_sigma": sigma, "noise": unit})[0]
    np.testing.assert_allclose(out, base + sigma[:, None, None, None] * unit, atol=1e-6)
    # one sigma for the batch; sigma 0 = no noise (exactly)
    out1 = sess.run(None, {**feeds, "noise_sigma": np.array([0.05], np.float32), "noise": unit})[0]
    np.testing.assert_allclose(out1, base + 0.05 * unit, atol=1e-6)
    zero = sess.run(None, {**feeds, "noise_sigma": np.zeros(1, np.float32),
                           "noise": np.zeros((1, 1, 1, 1), np.float32)})[0]
    np.testing.assert_array_equal(zero, base)


# fp16: every float input, weight and the output in float16. Rounding the inputs and the
# output to 11 significant bits costs up to ~1 float16 ulp near the value (2^-11 = 4.9e-4
# just below 1.0, 9.8e-4 just above it, which noise can reach); observed max 5.2e-4 on
# onnxruntime's CPU provider. The bound leaves a margin of 2x.
FP16_ATOL = 1e-3


@pytest.mark.parametrize("kind", ["fixed", "pool"])
@pytest.mark.parametrize("scale, ksize", [(2, 13), (4, 25)])
def test_fp16_model_matches_fp32_on_three_shapes(kind: str, scale: int, ksize: int) -> None:
    rng = np.random.default_rng(21 + ksize)
    k = _random_kernel(rng, (ksize, ksize))
    if kind == "fixed":
        m32, m16 = (build_fixed_model(k, scale, noise=True, dtype=d) for d in ("fp32", "fp16"))
    else:
        m32, m16 = (build_pool_model(ksize, scale, noise=True, dtype=d) for d in ("fp32", "fp16"))
    s32, s16 = _session(m32), _session(m16)  # onnx.checker (full) passes for both
    names = ["hr", "kernel", "noise_sigma", "noise"] if kind == "pool" else [
        "hr", "noise_sigma", "noise"]
    assert [i.name for i in s16.get_inputs()] == names  # the noise inputs are kept
    assert {i.type for i in s16.get_inputs()} == {"tensor(float16)"}
    assert s16.get_outputs()[0].type == "tensor(float16)"
    assert read_metadata(m16)["dtype"] == "float16" and read_metadata(m32)["dtype"] == "float32"
    worst = 0.0
    for shape in SHAPES:
        x = rng.random(shape, dtype=np.float32)
        lr_shape = (*shape[:2], -(-shape[2] // scale), -(-shape[3] // scale))
        feeds = {"hr": x, "noise_sigma": np.full(shape[0], 0.02, np.float32),
                 "noise": rng.standard_normal(lr_shape, dtype=np.float32)}
        if kind == "pool":
            feeds["kernel"] = np.stack([_random_kernel(rng, (ksize, ksize))
                                        for _ in range(shape[0])])[:, None]
        out32 = s32.run(None, feeds)[0]
        out16 = s16.run(None, {n: v.astype(np.float16) for n, v in feeds.items()})[0]
        assert out16.dtype == np.float16 and out16.shape == out32.shape == lr_shape
        worst = max(worst, float(np.abs(out16.astype(np.float32) - out32).max()))
    assert 1e-5 < worst <= FP16_ATOL  # really half precision, and within the bound


def test_fp16_through_the_registry_and_bad_dtype(tmp_path) -> None:
    done = export_model("pool", tmp_path / "p16.onnx", kernel_size=13, scale=2, dtype="fp16")
    assert "input  kernel: (N, 1, 13, 13) float16" in done.lines
    assert read_metadata(done.path)["dtype"] == "float16"
    with pytest.raises(KGEngineError, match="dtype must be one of fp32, fp16"):
        build_fixed_model(np.ones((3, 3)) / 9, 2, dtype="fp64")


def test_tiled_weight_layout() -> None:
    k = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    w = tiled_weight(k, 2, 2)  # 4 output channels, 5x5 support
    assert w.shape == (4, 1, 5, 5)
    np.testing.assert_array_equal(w[0, 0, :3, :3], k)  # LR pixel (0, 0)
    np.testing.assert_array_equal(w[1, 0, :3, 2:], k)  # LR pixel (0, 1): 2 columns right
    np.testing.assert_array_equal(w[2, 0, 2:, :3], k)  # LR pixel (1, 0)
    np.testing.assert_array_equal(w[3, 0, 2:, 2:], k)
    assert w.sum() == 4 * k.sum()


# --- generator -------------------------------------------------------------------------


def _random_generator(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    ws = []
    for shape in G_SHAPES:
        fan = shape[1] * shape[2] * shape[3]
        ws.append((rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32))
    return ws


def _generator_layers_torch(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """The authors' forward: six valid convs on each channel, stride 2 last; float64."""
    n, c, h, w = x.shape
    t = torch.from_numpy(x).double().reshape(n * c, 1, h, w)
    for i, wt in enumerate(weights):
        t = F.conv2d(t, torch.from_numpy(wt).double(), stride=2 if i == len(weights) - 1 else 1)
    return t.reshape(n, c, *t.shape[-2:]).numpy()


def test_fold_generator_is_the_impulse_response() -> None:
    ws = _random_generator(0)
    k = fold_generator(ws)
    assert k.shape == (13, 13)
    # G with stride 1 on a 25x25 impulse gives the flipped kernel (correlation): check it
    impulse = np.zeros((1, 1, 25, 25))
    impulse[0, 0, 12, 12] = 1.0
    t = torch.from_numpy(impulse)
    for wt in ws:
        t = F.conv2d(t, torch.from_numpy(wt).double())
    np.testing.assert_allclose(t[0, 0].numpy()[::-1, ::-1], k, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("folded", [False, True])
def test_generator_model_matches_layer_forward(folded: bool) -> None:
    ws = _random_generator(1)
    sess = _session(build_generator_model(ws, folded=folded))
    rng = np.random.default_rng(2)
    for shape in [(1, 3, 40, 33), (3, 3, 29, 50), (2, 1, 13, 14)]:
        x = rng.random(shape, dtype=np.float32)
        out = sess.run(None, {"hr": x})[0]
        ref = _generator_layers_torch(ws, x)
        assert out.shape == ref.shape == (*shape[:2], (shape[2] - 13) // 2 + 1,
                                          (shape[3] - 13) // 2 + 1)
        scale = max(1.0, np.abs(ref).max())  # float32 through 64-channel layers
        np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5 * scale)


def test_generator_six_layer_and_folded_agree_and_match_degrade() -> None:
    ws = _random_generator(3)
    x = np.random.default_rng(4).random((2, 3, 45, 38), dtype=np.float32)
    six = _session(build_generator_model(ws)).run(None, {"hr": x})[0]
    one = _session(build_generator_model(ws, folded=True)).run(None, {"hr": x})[0]
    np.testing.assert_allclose(six, one, rtol=0, atol=2e-5 * np.abs(six).max())
    # G(x)[i, j] = degrade(x, K, 2)[i + 3, j + 3]: the valid region of the convention
    ref = degrade_torch(torch.from_numpy(x).double(), torch.from_numpy(fold_generator(ws)), 2)
    h, w = one.shape[-2:]
    np.testing.assert_allclose(one, ref[..., 3 : 3 + h, 3 : 3 + w].numpy(), rtol=0,
                               atol=2e-5 * np.abs(six).max())


def test_load_generator_weights(tmp_path) -> None:
    ws = _random_generator(5)
    path = tmp_path / "img_generator.npz"
    np.savez(path, **{f"w{i}": w for i, w in enumerate(ws)})  # the trainer's format
    back = load_generator_weights(path)
    assert [w.shape for w in back] == G_SHAPES
    for a, b in zip(back, ws, strict=True):
        np.testing.assert_array_equal(a, b)
    bad = tmp_path / "bad_generator.npz"
    np.savez(bad, w0=ws[0], w1=ws[0])
    with pytest.raises(KGEngineError, match="generator.npz: w1 has 1 input channels, expected 64"):
        load_generator_weights(bad)
    np.savez(bad, x=ws[0])
    with pytest.raises(KGEngineError, match="no generator weights"):
        load_generator_weights(bad)


# --- metadata, checker, dynamic axes ---------------------------------------------------


def test_metadata_round_trip(tmp_path) -> None:
    k = anisotropic_gaussian(13, 1.0, 3.0, 0.4)
    models = {
        "fixed": build_fixed_model(k, 2),
        "pool": build_pool_model(25, 4, noise=True),
        "generator": build_generator_model(_random_generator(6), folded=True),
    }
    expected_scale = {"fixed": "2", "pool": "4", "generator": "2"}
    expected_size = {"fixed": "13", "pool": "25", "generator": "13"}
    for kind, model in models.items():
        path = save_model(model, tmp_path / f"{kind}.onnx")
        meta = read_metadata(path)
        assert meta["kind"] == kind
        assert meta["kgengine_version"] == __version__
        # the generator is a valid (unpadded, uncentred) correlation, not the degraders' map
        assert meta["kernel_convention"] == (VALID_CONVENTION if kind == "generator"
                                             else KERNEL_CONVENTION)
        assert meta["opset"] == str(OPSET) == "17"
        assert meta["scale"] == expected_scale[kind]
        assert meta["kernel_size"] == expected_size[kind]
        loaded = onnx.load(str(path))
        assert [o.version for o in loaded.opset_import if o.domain == ""] == [OPSET]
        onnx.checker.check_model(loaded, full_check=True)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert sess.get_modelmeta().custom_metadata_map == meta
        # named inputs/outputs with dynamic batch/height/width
        hr = sess.get_inputs()[0]
        assert hr.name == "hr" and hr.shape == ["N", "C", "H", "W"]
        assert [o.name for o in sess.get_outputs()] == ["lr"]
    io = describe_io(models["pool"])
    assert ("input", "kernel", "(N, 1, 25, 25) float32") in io
    assert [r[1] for r in io] == ["hr", "kernel", "noise_sigma", "noise", "lr"]


def test_check_hr_size_and_bad_arguments() -> None:
    check_hr_size(14, 20, 13)
    with pytest.raises(KGEngineError, match="must exceed the kernel size 13"):
        check_hr_size(13, 20, 13)
    with pytest.raises(KGEngineError, match="odd"):
        build_pool_model(12, 2)
    with pytest.raises(KGEngineError, match="scale"):
        build_fixed_model(np.ones((3, 3)), 0)
    with pytest.raises(KGEngineError, match=r"expected \(h,w\)"):
        build_fixed_model(np.ones((2, 3, 3)), 2)


def test_make_session_cpu_and_errors() -> None:
    model = build_fixed_model(np.ones((3, 3)) / 9, 2).SerializeToString()
    choice = make_session(model, "cpu")
    assert choice.provider == "cpu" and choice.session.get_providers()[0] == "CPUExecutionProvider"
    with pytest.raises(KGEngineError, match="unknown provider"):
        make_session(model, "vulkan")
    auto = make_session(model, "auto")
    assert auto.session.get_providers()[0] == {
        "tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
        "cpu": "CPUExecutionProvider"}[auto.provider]
    if auto.provider == "cpu":  # no GPU: the skipped providers say why
        assert [n.split(":")[0] for n in auto.notes] == ["tensorrt", "cuda"]
        with pytest.raises(KGEngineError, match="provider 'cuda' cannot run here"):
            make_session(model, "cuda")


def test_registry_exports_each_kind_and_takes_new_ones(tmp_path, monkeypatch) -> None:
    assert KINDS == tuple(EXPORTERS) == ("fixed", "pool", "generator")
    done = export_model("pool", tmp_path / "p.onnx", kernel_size=13, scale=2)
    assert done.path == tmp_path / "p.onnx" and read_metadata(done.path)["kind"] == "pool"
    assert done.lines[0] == "input  hr: (N, C, H, W) float32"
    assert done.lines[-1] == "kind=pool, scale=2, kernel_size=13, opset=17"
    with pytest.raises(KGEngineError, match="unknown export kind 'torchscript'"):
        export_model("torchscript", tmp_path / "t.pt")
    # a new format is one exporter function and one table entry
    def export_text(out, *, text: str) -> Exported:
        (tmp_path / out).write_text(text)
        return Exported(tmp_path / out, [f"{len(text)} chars"])

    monkeypatch.setitem(EXPORTERS, "text", export_text)
    assert export_model("text", "t.txt", text="abc").lines == ["3 chars"]


# --- CLI -------------------------------------------------------------------------------


def test_cli_export_all_kinds(tmp_path) -> None:
    runner = CliRunner()
    k = anisotropic_gaussian(13, 1.0, 3.0, 0.4)
    np.save(tmp_path / "k.npy", k)
    x = np.random.default_rng(8).random((2, 3, 31, 30), dtype=np.float32)

    res = runner.invoke(app, ["export", "fixed", "--kernel", str(tmp_path / "k.npy"),
                              "--scale", "2", "-o", str(tmp_path / "fixed.onnx")])
    assert res.exit_code == 0, res.output
    assert "input  hr: (N, C, H, W) float32" in res.output and "output lr" in res.output
    sess = make_session(str(tmp_path / "fixed.onnx"), "cpu").session
    np.testing.assert_allclose(sess.run(None, {"hr": x})[0], _reference(x, k, 2), atol=ATOL)

    res = runner.invoke(app, ["export", "pool", "--kernel-size", "13", "--scale", "2",
                              "--noise", "-o", str(tmp_path / "pool.onnx")])
    assert res.exit_code == 0, res.output
    assert "input  kernel: (N, 1, 13, 13) float32" in res.output and "noise_sigma" in res.output

    ws = _random_generator(9)
    np.savez(tmp_path / "img_generator.npz", **{f"w{i}": w for i, w in enumerate(ws)})
    res = runner.invoke(app, ["export", "generator", str(tmp_path / "img_generator.npz"),
                              "--folded", "-o", str(tmp_path / "g.onnx")])
    assert res.exit_code == 0, res.output
    assert read_metadata(tmp_path / "g.onnx")["generator_form"] == "folded"
    out = make_session(str(tmp_path / "g.onnx"), "cpu").session.run(None, {"hr": x})[0]
    ref = _generator_layers_torch(ws, x)
    np.testing.assert_allclose(out, ref, atol=2e-5 * max(1.0, np.abs(ref).max()))

    np.save(tmp_path / "bad.npy", np.zeros((5, 5)))
    res = runner.invoke(app, ["export", "fixed", "--kernel", str(tmp_path / "bad.npy"),
                              "-o", str(tmp_path / "bad.onnx")])
    assert res.exit_code == 1
    assert "bad.npy: kernel sum is 0" in res.output
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize("tile", [1, 4])
def test_models_hold_nothing_their_output_does_not_use(tile) -> None:
    """With ``tile = 1`` the Slice's constants were left in and onnxruntime warned about
    each at every session (before 0.9.26)."""
    def nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:  # a Loop's body's too
        return [n for node in graph.node for n in [node, *(
            m for a in node.attribute if a.HasField("g") for m in nodes(a.g))]]

    k = anisotropic_gaussian(13, 2.0, 1.0, 0.3).astype(np.float32)
    for model in (build_fixed_model(k, 2, tile=tile),
                  build_pool_model(13, 2, tile=tile, noise=True)):
        used = {name for node in nodes(model.graph) for name in node.input}
        assert [i.name for i in model.graph.initializer if i.name not in used] == []
        produced = {name for node in model.graph.node for name in node.output}
        needed = used | {o.name for o in model.graph.output}
        assert produced <= needed  # no node whose result nothing reads
        _session(model)
