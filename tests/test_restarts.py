"""``restarts=K``: K seeds of an image in one batch, combined; equal to K single runs combined."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgengine.api import estimate_kernels, finish_kernel, finish_restarts, restart_seed
from kgengine.confidence import spectral_confidence
from kgengine.config import KernelGANConfig
from kgengine.consensus import combine
from kgengine.imageio import read_image
from kgengine.kernel import (
    analytic_x4,
    collapsed,
    gaussian_kernel,
    principal_axes,
    shrink_elongation,
)
from kgengine.release import released_clean_n, released_prior
from kgengine.spectral import gaussian_of, mix_spectral, spectral_covariance
from kgengine.width import choose_elongation


@pytest.fixture(scope="module")
def lr() -> np.ndarray:
    from importlib.resources import files

    return read_image(files("kgengine") / "data" / "sample_lr.png")[:96, :96]


def test_restart_seeds_are_distinct_and_start_with_the_seed():
    seeds = [restart_seed(7, r) for r in range(6)]
    assert seeds[0] == 7 and len(set(seeds)) == 6 and all(0 <= s < 2**56 for s in seeds)
    assert restart_seed(7, 3) == restart_seed(7, 3) != restart_seed(8, 3)


def test_restarts_equal_single_runs_combined(lr):
    # float32 and 300 iterations (past lr decay, bicubic decay and the late priors): training
    # is batch invariant (tests/test_batch_invariance.py), so the restarts trained as one
    # batch are the single runs byte for byte, and so is their combination
    cfg = KernelGANConfig(lr_decay_every=100, bic_decay_every=100)
    kw = {"iters": 300, "config": cfg, "device": "cpu"}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (res,) = estimate_kernels([lr], seeds=[5], restarts=3, x4=True, **kw)
        singles = [estimate_kernels([lr], seeds=[restart_seed(5, r)], **kw)[0]
                   for r in range(3)]
    finally:
        torch.set_num_threads(old)
    # the report keeps each restart's finished kernel, cleaned with restart_n_filtering (one
    # run: n_filtering); the saved kernel of one run and of the combination are then shrunk
    # (elongation_power), the shrunk or the unshrunk one kept by the image's spectrum, its
    # width calibrated on the image (its scale refined between the grid's points, its pull
    # released where the spectrum looks sharp), and the spectrum's Gaussian mixed in (the
    # last steps)
    assert cfg.clean_n(3) == cfg.restart_n_filtering == 70 != cfg.clean_n(1) == 50
    gray = lr.mean(axis=2)

    def calibrated(k: np.ndarray, scale: int) -> tuple[np.ndarray, float, float]:
        """(the saved kernel, its elongation power, its confidence)."""
        prior = released_prior(cfg.width_prior, spectral_covariance(gray, scale))
        fit, kept = choose_elongation(gray, shrink_elongation(k, cfg.elongation_power), k,
                                      scale, prior, refine=cfg.width_refine)
        saved = mix_spectral(gray, fit.kernel, scale, cfg.spectral_mix)[0]
        g = gaussian_of(spectral_covariance(gray, scale), 13)
        return (saved, 1.0 if kept else cfg.elongation_power,
                spectral_confidence(fit.kernel, g, saved))

    # the clean-up's n, lowered where the spectrum's fit is sharp (clean_release)
    n_restart = released_clean_n(cfg.restart_n_filtering, spectral_covariance(gray, 4))
    n_one = released_clean_n(cfg.n_filtering, spectral_covariance(gray, 2))
    assert res.report["clean_n"] == n_restart and singles[0].report["clean_n"] == n_one
    finished = [finish_kernel(one.raw_kernel, n_restart) for one in singles]
    for r, one in enumerate(singles):
        assert np.asarray(res.report["restarts"]["kernels"][r]).tobytes() == \
            finished[r].tobytes()
        k, beta, conf = calibrated(finish_kernel(one.raw_kernel, n_one), 2)
        assert one.kernel_x2.tobytes() == k.tobytes()
        assert one.report["width"]["elongation_power"] == beta
        # one run has a confidence too (since 0.9.7); 0 where G's kernel has not grown to a
        # sum near 1 by 300 iterations (kgengine.kernel.collapsed, 0.9.29)
        assert one.confidence == (0.0 if collapsed(one.raw_kernel) else conf)
    expected = combine(finished)
    k, beta, conf = calibrated(expected.kernel, 4)
    assert res.kernel_x2.tobytes() == k.tobytes()
    assert res.report["width"]["prior"] == cfg.width_prior
    assert res.report["width"]["prior_used"] == released_prior(
        cfg.width_prior, spectral_covariance(gray, 4))
    assert res.report["width"]["elongation_power"] == beta
    np.testing.assert_allclose(res.kernel_x4, analytic_x4(res.kernel_x2), atol=1e-15)
    # the confidence is KernelGAN's kernel against the spectrum's Gaussian; the restarts'
    # agreement (the confidence before 0.9.7) is in the report, and is the confidence again
    # with spectral_confidence=False (None for one run)
    assert res.confidence == (0.0 if collapsed(res.raw_kernel) else conf)
    assert res.report["restarts"]["agreement"] == expected.confidence
    assert res.report["restarts"]["seeds"] == [restart_seed(5, r) for r in range(3)]
    assert res.report["confidence"] == res.confidence and res.kernel_x4.shape == (37, 37)
    old_cfg = cfg.replace(spectral_confidence=False)
    short = {**kw, "config": old_cfg, "iters": 8}
    (old,) = estimate_kernels([lr], seeds=[5], restarts=3, **short)
    agreement = old.report["restarts"]["agreement"]  # 8 iterations: G's kernel not grown
    assert agreement is not None and old.confidence == (0.0 if collapsed(old.raw_kernel)
                                                        else agreement)
    single = estimate_kernels([lr], seeds=[5], **short)[0]
    assert single.confidence is None and single.report["confidence"] is None


def test_each_restart_runs_restart_iters_unless_iters_is_given(lr):
    # a restart stops at restart_iters (1250 by default; here 40 of 80): its kernel is the
    # single run of that length, byte for byte; an explicit ``iters`` sets both lengths
    cfg = KernelGANConfig(iters=80, restart_iters=40, lr_decay_every=30, bic_decay_every=20)
    assert KernelGANConfig().run_iters(1) == 3000 and KernelGANConfig().run_iters(4) == 1250
    assert cfg.with_iters(10).run_iters(4) == 10 and cfg.run_iters(1) == 80
    (res,) = estimate_kernels([lr], seeds=[5], restarts=2, config=cfg, device="cpu")
    assert res.report["iters"] == 40 and res.report["iters_used"] == 40
    for r in range(2):
        one = estimate_kernels([lr], seeds=[restart_seed(5, r)], iters=40, config=cfg,
                               device="cpu")[0]
        assert one.report["iters"] == 40
        n = released_clean_n(cfg.restart_n_filtering, spectral_covariance(lr.mean(axis=2), 2))
        assert np.asarray(res.report["restarts"]["kernels"][r]).tobytes() == \
            finish_kernel(one.raw_kernel, n).tobytes()
    (given,) = estimate_kernels([lr], seeds=[5], restarts=2, iters=60, config=cfg,
                                device="cpu")
    assert given.report["iters"] == 60
    single = estimate_kernels([lr], seeds=[5], config=cfg, device="cpu")[0]
    assert single.report["iters"] == 80 and single.report["iters_used"] == 80


def test_restarts_must_be_positive(lr):
    with pytest.raises(ValueError, match="restarts"):
        estimate_kernels([lr], restarts=0, iters=1)


def test_finish_restarts_matches_its_parts():
    # the one path from raw kernels to the saved kernel (estimate_kernels and the bench's
    # derived stores both use it): one run = its finished kernel; K runs = their combination
    rng = np.random.default_rng(4)
    raws = [gaussian_kernel(13, 1.2 + 0.2 * i) + 1e-4 * rng.standard_normal((13, 13))
            for i in range(3)]
    k, finished, cons = finish_restarts(raws[:1], 40)
    assert cons is None and k.tobytes() == finish_kernel(raws[0], 40).tobytes()
    k, finished, cons = finish_restarts(raws, 60)
    expected = combine([finish_kernel(r, 60) for r in raws])
    assert k.tobytes() == expected.kernel.tobytes() and cons.confidence == expected.confidence
    assert [f.tobytes() for f in finished] == [finish_kernel(r, 60).tobytes() for r in raws]
    # restarts asked for, one left finite: still a consensus (confidence 1), as the report says
    k, _, cons = finish_restarts(raws[:1], 40, restarts=3)
    assert cons is not None and cons.confidence == pytest.approx(1.0)
    # the elongation shrink is the last step, after the combination; the finished kernels
    # (the report's restarts) are kept as they were
    k, finished, cons = finish_restarts(raws, 60, elongation_power=0.4)
    assert k.tobytes() == shrink_elongation(expected.kernel, 0.4).tobytes()
    assert [f.tobytes() for f in finished] == [finish_kernel(r, 60).tobytes() for r in raws]
    k, _, _ = finish_restarts(raws[:1], 40, elongation_power=0.4)
    assert k.tobytes() == shrink_elongation(finish_kernel(raws[0], 40), 0.4).tobytes()


def test_report_gives_the_axes_before_and_after_the_shrink(lr):
    # the saved kernel's axes, and those KernelGAN found (before elongation_power); the width
    # calibration, which scales the area after the shrink, and the spectral mix are off here
    res = estimate_kernels([lr], seeds=[3], iters=60, device="cpu",
                           config=KernelGANConfig(width_calibration=False, spectral_mix=0.0,
                                                  clean_release=False))[0]
    assert res.report["width"] is None and res.report["spectral"] is None
    before = finish_kernel(res.raw_kernel, KernelGANConfig().n_filtering)
    stats = res.report["kernel_x2"]
    v1, v2, _ = principal_axes(res.kernel_x2)
    u1, u2, _ = principal_axes(before)
    assert (stats["axes"]["var_long"], stats["axes"]["var_short"]) == pytest.approx((v1, v2))
    assert (stats["axes_unshrunk"]["var_long"], stats["axes_unshrunk"]["var_short"]) == \
        pytest.approx((u1, u2))
    # log-elongation x 0.4, area kept (to the spline warp's accuracy on a 13x13 grid)
    assert np.log(v1 / v2) == pytest.approx(0.4 * np.log(u1 / u2), abs=0.05)
    assert v1 * v2 == pytest.approx(u1 * u2, rel=0.05)
