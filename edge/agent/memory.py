"""Keep a long-running agent's resident memory near what it holds, not what one cycle once touched.

A cycle decodes a frame and builds a few image-sized buffers (a 1280 × 960 frame is 3.7 MB as BGR);
glibc keeps freed heap memory for reuse, and raises its mmap threshold after such frees, so each frame
buffer ends up in a heap that never shrinks: a running agent sat ~14 MB above what it needed. Large
buffers are mapped (and unmapped on free) from the first one instead, and after each cycle the heap's
free tail goes back to the system. Both are glibc calls; elsewhere (musl, macOS) they are skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024  # buffers this large are mmap'd: an image row block, never a small object
TRIM_THRESHOLD_BYTES = 1024 * 1024

_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name or "libc.so.6")
            lib.mallopt  # noqa: B018 - present in glibc only (with malloc_trim)
            lib.malloc_trim  # noqa: B018
        except (OSError, AttributeError):
            return None
        _libc = lib
    return _libc


def tune_malloc() -> bool:
    """Fixed thresholds instead of glibc's sliding ones; True when applied."""
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    log.debug("malloc thresholds set: %s", ok)
    return ok


def release_memory() -> None:
    """Give the heap's free memory back to the system (after a cycle; a few hundred microseconds)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
