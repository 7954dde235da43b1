"""Each kernel prior against a hand-computed value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgengine import priors
from kgengine.kernel import bicubic_taps_x2, boundary_mask


def _k(arr) -> torch.Tensor:
    return torch.as_tensor(np.asarray(arr, dtype=np.float64))[None]


def test_sum_to_one():
    k = np.zeros((13, 13))
    k[6, 6], k[0, 0] = 0.7, 0.05
    assert priors.sum_to_one(_k(k)).item() == pytest.approx(0.25)


def test_boundaries_only_outer_two_pixel_ring():
    m = boundary_mask(13, 30.0)
    assert (m[2:-2, 2:-2] == 0).all() and (m[0] > 0).all() and (m[:, 1] > 0).all()
    # corner value: 30 * (1 - exp(-(6² + 6²) / (2·13²))): the authors' σ = kernel size
    # (their create_penalty_mask; kgengine 0.1 used σ = 7, still reachable with sigma=7)
    assert m[0, 0] == pytest.approx(30 * (1 - np.exp(-72 / 338)))
    assert boundary_mask(13, 30.0, sigma=7)[0, 0] == pytest.approx(30 * (1 - np.exp(-72 / 98)))
    k = np.zeros((13, 13))
    k[0, 0], k[6, 6] = 0.1, 0.9  # the centre entry costs nothing
    mask = torch.as_tensor(m)
    expected = 0.1 * m[0, 0] / 169
    assert priors.boundaries(_k(k), mask).item() == pytest.approx(expected)


def test_sparsity():
    k = np.zeros((13, 13))
    k[6, 6], k[6, 7] = 0.5, -0.25
    expected = (0.5**0.2 + 0.25**0.2) / 169
    assert priors.sparsity(_k(k), 0.2).item() == pytest.approx(expected)


def test_sparsity_gradient_at_an_exact_zero_is_zero_not_nan():
    """The authors' ``abs() ** p`` has a NaN gradient at k = 0 (inf * 0), which made whole
    trainings diverge; elsewhere the value and gradient keep their bits."""
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, 13, 13, generator=g)
    k[0, 0, 0] = 0.0
    k[1, 5, 7] = -0.0
    k.requires_grad_()
    (grad,) = torch.autograd.grad(priors.sparsity(k, 0.2).sum(), k)
    assert torch.isfinite(grad).all()
    assert grad[0, 0, 0] == 0 and grad[1, 5, 7] == 0
    plain = k.detach().clone().requires_grad_()
    value = plain.abs().pow(0.2).flatten(1).mean(1)
    (want,) = torch.autograd.grad(value.sum(), plain)
    nonzero = k.detach() != 0
    assert torch.isnan(want[~nonzero]).all()  # what the authors' formula gives
    assert torch.equal(grad[nonzero], want[nonzero])


def test_centralized():
    k = np.zeros((13, 13))
    k[6, 6], k[8, 6] = 0.5, 0.5  # centre of mass (7, 6)
    c = priors.centre_target(13, 2)
    assert c == 6.5
    expected = 0.5 * ((7 - 6.5) ** 2 + (6 - 6.5) ** 2)
    assert priors.centralized(_k(k), c).item() == pytest.approx(expected)


def test_gan_loss():
    d = torch.full((2, 4, 4), 0.25, dtype=torch.float64)
    np.testing.assert_allclose(priors.gan_loss(d, real=True).numpy(), [0.75, 0.75])
    np.testing.assert_allclose(priors.gan_loss(d, real=False).numpy(), [0.25, 0.25])


def test_bicubic_taps_are_matlab_x2():
    w = bicubic_taps_x2()
    assert w.sum() == pytest.approx(1.0)
    # the corner of the authors' 8x8 table is w[0]^2 = 0.0001373291015625
    assert w[0] ** 2 == pytest.approx(0.0001373291015625)
    assert w[3] == pytest.approx(0.8671875 / 2)


def test_bicubic_prior_zero_for_bicubic_generator_and_rgb_sum_defect():
    """A G output equal to the bicubic target gives 0; the defect-1 target is the RGB sum."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    target = priors.bicubic_downscale(x)
    assert target.shape == (1, 3, 32, 32)
    g_out = target[..., 3:29, 3:29]
    assert priors.bicubic_prior(x, g_out).item() == pytest.approx(0.0, abs=1e-20)
    summed = priors.bicubic_downscale(x, rgb_sum=True)
    torch.testing.assert_close(summed[:, 0], target.sum(1))
    # a constant image is reproduced exactly away from the zero-padded border
    ones = priors.bicubic_downscale(torch.ones(1, 1, 64, 64, dtype=torch.float64))
    torch.testing.assert_close(ones[..., 3:29, 3:29], torch.ones(1, 1, 26, 26, dtype=torch.float64))
