"""Python API QA: bad inputs to the public functions fail with one clear line naming the
problem (a kgengine error, ValueError or TypeError), never a NumPy/PyTorch traceback from
deep inside, and never a silently wrong result. Trainings here are a few iterations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kgengine
from kgengine import api
from kgengine.errors import BadImageError, BadKernelError, KGEngineError, TrainingDivergedError
from kgengine.export import (
    build_fixed_model,
    build_generator_model,
    build_pool_model,
    fold_generator,
)
from kgengine.kernel import gaussian_kernel
from kgengine.pool import KernelPool, load_pool, make_pool, save_pool
from kgengine.pool_interop import export_pool, import_kernels, resize_kernel

TINY = {"iters": 3, "device": "cpu", "stop": "full"}


@pytest.fixture
def lr(sample_hr) -> np.ndarray:
    """An 80×80 RGB crop of the bundled sample, float32 in [0, 1]."""
    return sample_hr[:80, :80].copy()


# ------------------------------------------------------------------------- image arrays
@pytest.mark.parametrize("make, match", [
    (lambda a: a[:0, :0], "image is empty"),
    (lambda a: a.astype(np.complex64), "unsupported dtype complex64"),
    (lambda a: a.astype(object), "unsupported dtype object"),
    (lambda a: (a * 255).astype(np.uint8), r"uint8 values .* \(divide by 255 first\)"),
    (lambda a: (a * 65535).astype(np.uint16), r"divide by 65535 first"),
    (lambda a: a.transpose(2, 0, 1), r"C in 1, 3, 4 \(channels last\), got shape \(3, 80, 80\)"),
])
def test_bad_arrays_are_one_line_bad_image_errors(lr, make, match) -> None:
    with pytest.raises(BadImageError, match=rf"^image0: .*{match}"):
        kgengine.estimate_kernel(make(lr), **TINY)


def test_an_hw1_array_is_gray_like_an_hw_array(lr) -> None:
    gray = lr.mean(axis=2)
    a, b = api.estimate_kernels([gray, gray[..., None]], seeds=[0, 0], **TINY)
    np.testing.assert_array_equal(a.kernel_x2, b.kernel_x2)


@pytest.mark.parametrize("image", [[[0.5]], None, 3, torch.zeros(80, 80, 3)])
def test_an_image_that_is_no_path_or_array_is_a_type_error(image) -> None:
    with pytest.raises(TypeError, match="^image0: expected a path or an"):
        kgengine.estimate_kernel(image, **TINY)


# ------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("images, kwargs, error, match", [
    ([], {}, ValueError, "images: no images given"),
    ("photo.png", {}, TypeError, "expected a list of images"),
    (2, {"seeds": [0]}, ValueError, "seeds: 1 for 2 images"),
    (1, {"seeds": [0, 1]}, ValueError, "seeds: 2 for 1 images"),
    (2, {"names": ["a"]}, ValueError, "names: 1 for 2 images"),
    (1, {"seeds": [-1]}, ValueError, "seed must be an integer in"),
    (1, {"seed": 2**70}, ValueError, "seed must be an integer in"),
    (1, {"seeds": [1.5]}, ValueError, "seed must be an integer in"),
    (1, {"restarts": 1.5}, ValueError, "restarts must be an integer >= 1, got 1.5"),
    (1, {"on_diverge": "retrun"}, ValueError, "on_diverge: expected 'raise' or 'return'"),
    (1, {"dtype": torch.float16}, ValueError, "dtype: expected torch.float32"),
    (1, {"config": {"crop_size": 64}}, TypeError, "config: expected a KernelGANConfig"),
])
def test_bad_arguments_are_refused_before_training(lr, images, kwargs, error, match) -> None:
    imgs = [lr] * images if isinstance(images, int) else images
    with pytest.raises(error, match=match):
        api.estimate_kernels(imgs, **{**TINY, **kwargs})


def test_estimate_kernel_raises_a_divergence_even_with_on_diverge_return(lr, monkeypatch):
    real = api.make_trainer

    def diverging(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.final_finite = lambda: np.zeros(len(args[1]), dtype=bool)
        return trainer

    monkeypatch.setattr(api, "make_trainer", diverging)
    (res,) = api.estimate_kernels([lr], on_diverge="return", **TINY)
    assert isinstance(res, TrainingDivergedError)
    with pytest.raises(TrainingDivergedError, match="diverged"):
        kgengine.estimate_kernel(lr, on_diverge="return", **TINY)


# ------------------------------------------------------------------------- pools
K13 = gaussian_kernel(13, 1.5)


@pytest.mark.parametrize("row, match", [
    (K13 * 5, r"row 0 \('a'\) sums to 5, not 1"),
    (np.where(K13 > 0.05, np.nan, K13), r"row 0 \('a'\) sums to nan"),
    (-K13, "sums to -1"),
])
def test_a_pool_of_unusable_kernels_is_refused(row, match) -> None:
    with pytest.raises(KGEngineError, match=match):
        KernelPool(np.stack([row, K13]), ["a", "b"], ["s", "t"], [0, 1], 2)


def test_pool_ids_are_unique_as_stored_and_the_scale_whole() -> None:
    with pytest.raises(KGEngineError, match="not unique"):
        KernelPool(np.stack([K13, K13]), [1, "1"], ["s", "t"], [0, 1], 2)
    with pytest.raises(KGEngineError, match="scale must be an integer >= 1, got 2.5"):
        KernelPool(np.stack([K13]), ["a"], ["s"], [0], 2.5)


@pytest.mark.parametrize("seed", [1.5, 2.0, True, "3", None])
def test_pool_seeds_must_be_integers(seed) -> None:
    with pytest.raises(KGEngineError, match=f"seeds must be integers, got {seed!r}"):
        KernelPool(np.stack([K13]), ["a"], ["s"], [seed], 2)
    assert KernelPool(np.stack([K13]), ["a"], ["s"], [np.int64(7)], 2).seeds == [7]


def test_an_empty_pool_is_not_saved_since_it_could_not_be_loaded(tmp_path) -> None:
    empty = make_pool([K13], ["a"], ["s"], 2).select([])
    with pytest.raises(KGEngineError, match=r"p\.npz: the pool holds no kernels; nothing"):
        save_pool(tmp_path / "p.npz", empty)
    assert list(tmp_path.iterdir()) == []  # no file and no temporary left behind


def test_load_pool_checks_its_scale_argument(tmp_path) -> None:
    path = save_pool(tmp_path / "p.npz", make_pool([K13], ["a"], ["s"], 2))
    assert load_pool(path, scale=2).scale == 2
    with pytest.raises(KGEngineError, match="scale must be an integer >= 1, got '2'"):
        load_pool(path, scale="2")


def test_a_complex_kernel_file_is_refused(tmp_path) -> None:
    np.save(tmp_path / "k.npy", K13.astype(complex))
    with pytest.raises(BadKernelError, match="complex"):
        load_pool(tmp_path / "k.npy")


def test_import_and_export_check_scale_size_and_sources(tmp_path) -> None:
    np.save(tmp_path / "k.npy", K13)
    with pytest.raises(KGEngineError, match="scale must be an integer >= 1, got 2.5"):
        import_kernels([tmp_path / "k.npy"], scale=2.5)
    with pytest.raises(TypeError, match="got one path"):
        import_kernels(str(tmp_path / "k.npy"))
    pool = make_pool([K13], ["a"], ["s"], 2)
    with pytest.raises(KGEngineError, match="got 2.5"):
        export_pool(pool, tmp_path / "out", "npy", size=2.5)
    with pytest.raises(KGEngineError, match="NaN or inf"):
        resize_kernel(K13 * np.nan, 5)


# ------------------------------------------------------------------------- exports
@pytest.mark.parametrize("kernel, match", [
    (np.where(K13 > 0.05, np.nan, K13), "NaN or inf"),
    (K13 + np.inf, "NaN or inf"),
    (K13 * 1e40, "NaN or inf"),  # overflows float32
    (K13.astype(complex), "expected real numbers"),
    (np.array([["a"]]), "expected real numbers"),
])
def test_a_fixed_degrader_refuses_a_kernel_it_cannot_bake(kernel, match) -> None:
    with pytest.raises(KGEngineError, match=match):
        build_fixed_model(kernel, 2)


def test_export_numbers_that_are_no_integers_are_one_line() -> None:
    with pytest.raises(KGEngineError, match="scale must be an integer in .* got None"):
        build_fixed_model(K13, None)
    with pytest.raises(KGEngineError, match="no generator weights"):
        build_generator_model([])
    with pytest.raises(KGEngineError, match="no generator weights"):
        fold_generator([])


@pytest.mark.parametrize("bad", [True, np.bool_(True), float("nan"), float("inf"), 2.5, "2"])
def test_export_sizes_refuse_bools_and_non_finite_numbers(bad) -> None:
    with pytest.raises(KGEngineError, match=f"scale must be an integer in .* got {bad!r}"):
        build_fixed_model(K13, bad)
    with pytest.raises(KGEngineError, match=f"tile must be an integer in .* got {bad!r}"):
        build_fixed_model(K13, 2, tile=bad)
    with pytest.raises(KGEngineError, match="kernel size must be an odd integer"):
        build_pool_model(bad, 2)
    whole = build_fixed_model(K13, 2.0, tile=1.0).SerializeToString()  # whole floats: as ints
    assert whole == build_fixed_model(K13, 2, tile=1).SerializeToString()


@pytest.mark.parametrize("bad", [True, 5.0, 4, 0])
def test_export_pool_size_refuses_bools_and_floats(tmp_path, bad) -> None:
    pool = make_pool([K13], ["a"], ["s"], 2)
    with pytest.raises(KGEngineError, match=f"--size must be odd .* got {bad}"):
        export_pool(pool, tmp_path / "out", "npy", size=bad)


@pytest.mark.parametrize("scale", [0, -2, 2.5, "2", True])
def test_degrade_refuses_a_scale_that_is_not_a_whole_number(scale) -> None:
    from kgengine import degrade

    with pytest.raises(KGEngineError, match="degrade: scale must be an integer >= 1"):
        degrade(np.zeros((8, 8)), np.full((3, 3), 1 / 9), scale)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_degrade_refuses_a_kernel_that_is_not_finite(bad) -> None:
    from kgengine import degrade

    k = np.full((3, 3), 1 / 9)
    k[1, 1] = bad
    with pytest.raises(KGEngineError, match="degrade: the kernel has NaN or inf values"):
        degrade(np.zeros((8, 8, 3)), k, 2)


def test_degrade_keeps_a_float_scale_that_is_whole() -> None:
    from kgengine import degrade

    x = np.random.default_rng(0).random((9, 7))
    k = np.full((3, 3), 1 / 9)
    np.testing.assert_array_equal(degrade(x, k, 2.0), degrade(x, k, 2))
