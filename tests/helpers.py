"""Test helpers: floating-point tolerances derived from the precision and the size of the quantities.

Two evaluations of the same function that differ only in kernels (AVX2 vs AVX-512, MKL vs oneDNN), in batch
shape or in summation order (1 vs 2 threads) agree to a few units of rounding per accumulation. A tolerance must
follow from that and from the size of what is compared, never from what one CPU happened to give.

- **float32** (`fp32_tol`): unit roundoff u = 2^-24 ≈ 6e-8. The test models are tiny (d_model ≤ 32, ≤ 2 layers,
  reductions of ≤ ~100 terms), so a rounding difference stays within a few dozen u of the largest magnitude
  compared; 256 u (≈ 1.5e-5 relative) leaves a margin for growth through the layers and is still orders below
  what a real discrepancy (a missing bias, a wrong scale, a wrong mask: ≥ 1e-3 relative) produces.
- **float64** (`F64_RTOL`): u = 2^-53 ≈ 1e-16; the same argument gives ≲ 1e-13, and 1e-9 of the largest
  magnitude leaves 10^4 for growth while catching any discrepancy a float32 test could. Where a claim is "these
  two implementations compute the same function", tests check it in float64, where the answer does not depend
  on the CPU at all.
- **bfloat16** (`bf16_tol`): u = 2^-9 ≈ 2e-3, so a bf16 result is compared with its float32 reference at 16 u of
  the largest input or output magnitude: rounding the inputs alone costs a few u, and a real bug (a missing
  1/sqrt(d_head), a wrong mask) costs O(1).
- **Bitwise** (`torch.equal`) is claimed only where the same kernels run on the same inputs in the same order in
  one process (determinism for a seed, resume, hooks removed), which holds on any CPU.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

U32 = torch.finfo(torch.float32).eps / 2  # unit roundoff of float32, 2^-24
U_BF16 = 2.0**-9  # unit roundoff of bfloat16 (8 significand bits)
F64_RTOL = 1e-9


def _scale(reference) -> float:
    """The largest |reference|, at least 1 (the intermediates of these computations are O(1) or larger)."""
    if isinstance(reference, torch.Tensor):
        reference = reference.detach().double().cpu().numpy()
    return max(float(np.max(np.abs(np.asarray(reference, dtype=np.float64)))), 1.0)


def fp32_tol(reference, ulps: float = 256) -> float:
    """Absolute tolerance for comparing float32 results: `ulps` units of roundoff at the largest |reference|."""
    return ulps * U32 * _scale(reference)


def bf16_tol(reference, ulps: float = 16) -> float:
    """Absolute tolerance for a bf16 result against its float32 reference: `ulps` bf16 roundoffs at max |reference|."""
    return ulps * U_BF16 * _scale(reference)


def f64_tol(reference) -> float:
    """Absolute tolerance for comparing float64 results: F64_RTOL of the largest |reference| (at least 1)."""
    return F64_RTOL * _scale(reference)


def float64(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of a module (the original is untouched)."""
    return copy.deepcopy(module).to(torch.float64)
