"""This process's heap (glibc): give freed memory back to the system, so that a model unloaded is memory regained.

glibc keeps what a program frees for its next allocations. Two things hand it back: a fixed mmap threshold (blocks
at least that large are mapped on their own and unmapped when freed; the training worker sets it, because its
activations of ever-changing sizes fragment the heap) and `malloc_trim`, which returns every free page of the heap
(the model pool calls it after unloading models). Elsewhere (macOS, musl, Windows) both do nothing.
See benchmarks/README.md, "The course with 08". Pages of a memory-mapped file that were read also count as this
process's resident memory until it lets them go (`drop_file_pages`).
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
from typing import Any

# glibc's default threshold grows up to 32 MiB as mapped blocks are freed; LOCALAPI_MMAP_THRESHOLD overrides this
# value in bytes (0 leaves glibc's default).
MMAP_THRESHOLD = 4 * 1024 * 1024
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


@functools.lru_cache(maxsize=None)
def _libc_function(name: str) -> Any | None:
    """A function of the C library this process runs on, or None where it has no such function."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def cap_mmap_threshold(threshold: int | None = None) -> bool:
    """Fix glibc's mmap threshold for this process; False where there is no glibc or the threshold is 0."""
    if threshold is None:
        threshold = int(os.environ.get("LOCALAPI_MMAP_THRESHOLD", MMAP_THRESHOLD))
    mallopt = _libc_function("mallopt") if threshold > 0 else None
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1


def trim() -> bool:
    """Return the heap's free pages to the system (glibc's malloc_trim); True when some memory was released."""
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    return malloc_trim(0) == 1


def drop_file_pages(address: int, length: int) -> bool:
    """Let the kernel take back the whole pages in [address, address + length) of a read-only memory-mapped file
    (madvise MADV_DONTNEED): they are clean copies of the file, read again if touched again. Never call it on
    memory the process wrote. False where there is no madvise (nothing is done)."""
    madvise = _libc_function("madvise")
    if madvise is None:
        return False
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    first, last = -(-address // page) * page, (address + length) // page * page
    if last > first:
        madvise(first, last - first, 4)  # MADV_DONTNEED
    return True
