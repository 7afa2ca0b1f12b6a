"""lib.core.memory: after keep_freed_memory a large tensor comes from the heap (no new mmap'd block), before it
glibc maps one; a bad threshold is refused."""

import subprocess
import sys

import pytest

from lib.core import memory

CHECK = """
import torch
from lib.core import memory
before = memory.mapped_blocks()
x = torch.empty(64 << 20, dtype=torch.uint8)  # above glibc's largest dynamic mmap threshold (32 MiB)
mapped_default = memory.mapped_blocks() - before
del x
applied = memory.keep_freed_memory()
before = memory.mapped_blocks()
x = torch.empty(64 << 20, dtype=torch.uint8)
print(mapped_default, applied, memory.mapped_blocks() - before)
"""


@pytest.mark.skipif(memory.mapped_blocks() is None, reason="glibc >= 2.33 only (mallinfo2)")
def test_a_large_tensor_is_mapped_by_default_and_comes_from_the_heap_after():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "True", "0"], out


@pytest.mark.parametrize("bad", [0, -1, 2**31, 1.5, "1G"])
def test_a_bad_threshold_is_refused(bad):
    with pytest.raises(ValueError, match=f"threshold={bad!r}"):
        memory.keep_freed_memory(bad)
