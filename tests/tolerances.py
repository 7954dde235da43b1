"""One dtype -> (rtol, atol) table for comparing a custom kernel with its reference.

float32: kernels accumulate in float32 in a different order than the reference (up to a few
hundred taps of a normalised kernel on values in [0, 1]), so results differ by a few ulp of
the sum; 1e-5 leaves a margin of ~10x over what was observed. float64: same, at 1e-12.
"""

from __future__ import annotations

import torch

TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1e-5),
    torch.float64: (1e-12, 1e-12),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """``torch.testing.assert_close`` with the table's tolerance for ``expected.dtype``."""
    rtol, atol = TOL[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
