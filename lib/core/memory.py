"""Reusing freed memory for large CPU tensors (glibc malloc).

glibc serves every allocation at or above its mmap threshold (128 KiB at start, rising as freed blocks come back, to
at most 32 MiB) with a fresh mmap and unmaps it when it is freed. A batched analysis whose tensors are larger than
that (a neuron-game pass scores 16,384 rows x a 1,024-token vocabulary: 64 MiB of logits, and as much again for
their log-softmax) therefore page-faults every page of them on every pass, and the kernel zeroes each page first:
that cost half of the neuron game's time. `keep_freed_memory` raises the mmap and trim thresholds, so freed blocks
stay in the heap and the next pass reuses them: 1.8x the game's coalitions/s, 1.1x a keyword evaluation, training
steps unchanged (bench/malloc_reuse.py). The cost is that the process keeps its peak heap instead of giving freed
memory back to the system. session.start (every report) and the sub-model command line call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from lib.core.checks import check, is_int

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
LIMIT = 2**31 - 1  # mallopt takes an int


def _libc():
    """glibc's C library, or None elsewhere (macOS, musl: their allocators are left alone)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Serve allocations below `threshold` bytes from the heap and keep freed heap memory (up to 2 x threshold at its
    top, at most 2 GiB) for reuse, instead of mapping and unmapping each large tensor. True where it was applied (glibc), False
    where the C library is not glibc (nothing changes). Process-wide; call it once, early."""
    check(is_int(threshold) and 0 < threshold <= LIMIT, "threshold", threshold,
          f"an integer number of bytes in 1..{LIMIT} (glibc's mallopt takes an int)")
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(threshold)) == 1
    return bool(ok and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(min(2 * threshold, LIMIT))) == 1)


def mapped_blocks() -> int | None:
    """How many blocks glibc currently serves by mmap (mallinfo2's hblks), or None where that is not glibc >= 2.33."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = MallInfo2
    return int(libc.mallinfo2().hblks)
