"""Keep freed memory in the process instead of handing it back to the OS.

A training step allocates and frees the same few hundred kilobytes of arrays
every time. glibc's malloc returns freed memory at the top of its heap to the
operating system once more than a small threshold is free, so the next step
touches fresh pages, and each first touch is a page fault. On the virtual
machines we measure on, a training step of the seed's MLP took about 400
such faults: more time than its arithmetic. Raising malloc's thresholds
keeps that memory for reuse, as PyTorch's caching allocators do on the GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Allocations below this come from the heap (glibc's ceiling on 64-bit).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory kept at the top of the heap before any is returned.
TRIM_THRESHOLD = 256 * 1024 * 1024


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True if it could.

    Call it once at the start of a training script. It affects the whole
    process: up to ``TRIM_THRESHOLD`` bytes of freed memory stay mapped
    instead of being returned to the OS. Does nothing (returns False) where
    the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
