"""Intra-op thread count for loops of small operations.

A minibatch step of a compressor (batch 256, width 128) is a few dozen operations of a few microseconds each. With
two or more intra-op threads every operation wakes the thread pool, and under OMP_WAIT_POLICY=PASSIVE (which the
Makefile sets, because spin-waiting threads made a 2-thread training step up to 10x slower when processes share
the cores) the wake-up costs more than the operation: such loops ran 2-3x faster on one thread
(bench/small_op_threads.py). Model training and the batched analyses keep every thread (their matmuls are large
enough to gain from two).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from lib.core.checks import check, is_int


@contextmanager
def at_most(n: int = 1) -> Iterator[None]:
    """Run the block with at most n torch intra-op threads; the previous count is restored afterwards."""
    check(is_int(n) and n >= 1, "n", n, "an integer >= 1 (torch intra-op threads)")
    old = torch.get_num_threads()
    if n >= old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
