"""How far to trust a saved kernel, without ground truth: KernelGAN against the spectrum.

Two estimates of one image's kernel whose errors are unrelated: KernelGAN's (``k``, the
finished and width-calibrated kernel, before the spectral mix) and the Gaussian that the LR
spectrum fits in closed form (``g``, :func:`kgengine.spectral.spectral_covariance`). Where
they agree, both are likely near the truth; where they disagree, at least one is not.
Elongated kernels are also estimated less well (on the development set, ρ ≈ −0.55 between
the saved kernel's elongation and its aligned kernel PSNR). So::

    s = ‖k − g‖₂ · e³,    confidence = 1 / (1 + s / s₀)

with ``‖·‖₂`` over a common zero-padded canvas (both sum to 1), ``e = var_long / var_short``
of the saved kernel (:func:`kgengine.kernel.principal_axes`, ≥ 1) and ``s₀`` =
:data:`HALF_SCORE`, the development set's median ``s``: confidence 1 when the two agree on
a round kernel, ½ at the development set's median, → 0 as they part.

Chosen on the development set (``bench/study_agreement.py``, docs/ACCURACY.md): the exponent 3 from
{0, 1, 2, 3, 4, 6}. It ranks runs by accuracy with Spearman ρ +0.50 to +0.64 there and
+0.65 to +0.72 on the held-out check set (x2 and x4, one run and ``--restarts 4``); the
restarts' agreement (:mod:`kgengine.consensus`, the confidence before 0.9.7) had ρ ≈ 0.
"""

from __future__ import annotations

import numpy as np

from kgengine.kernel import common_size, pad_to, principal_axes

#: The exponent of the saved kernel's elongation in the score ``s``.
ELONGATION_EXPONENT: float = 3.0
#: ``s`` at which the confidence is ½ (the development set's median, 0.9.6's kernels).
HALF_SCORE: float = 0.12


def agreement_score(k: np.ndarray, g: np.ndarray, saved: np.ndarray) -> tuple[float, float]:
    """``(‖k − g‖₂, e)``: the L2 distance of the two estimates and the saved kernel's elongation.

    Args:
        k: (h, w) KernelGAN's kernel, g: (h', w') the spectrum's Gaussian; both sum to 1 and
            are centred on their middle tap (odd sizes). saved: (h, w) the saved kernel.
    Returns:
        (distance ≥ 0, elongation ≥ 1), floats.
    """
    size = common_size(k, g)
    dist = float(np.linalg.norm(pad_to(k, size) - pad_to(g, size)))
    v_long, v_short, _ = principal_axes(saved)
    # a point (both variances 0) is round: e = 1, not 0 (0.9.28)
    return dist, float(max(v_long, 1e-12) / max(v_short, 1e-12))


def confidence_of(distance: float, elongation: float,
                  exponent: float = ELONGATION_EXPONENT) -> float:
    """``1 / (1 + d · e^p / s₀)`` in (0, 1] for the distance ``d`` ≥ 0 and the elongation
    ``e`` ≥ 1 of :func:`agreement_score` (module docstring; p = ``exponent``, 3 shipped)."""
    return float(1.0 / (1.0 + distance * elongation**exponent / HALF_SCORE))


def spectral_confidence(k: np.ndarray, g: np.ndarray, saved: np.ndarray) -> float:
    """The confidence of a saved kernel: :func:`confidence_of` of :func:`agreement_score`
    ``(k, g, saved)`` (arguments as there)."""
    return confidence_of(*agreement_score(k, g, saved))
