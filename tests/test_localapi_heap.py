"""helpers/localapi/heap.py: freed memory goes back to the system (glibc), and nothing happens elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

PROBE = """
import ctypes, os
from helpers.localapi import heap

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

print(heap.cap_mmap_threshold(0), heap.cap_mmap_threshold())
heap.cap_mmap_threshold(64 * 1024 * 1024)  # keep the blocks below in the heap, as a model's weights end up there
blocks = [ctypes.create_string_buffer(3 * 1024 * 1024) for _ in range(100)]  # 300 MB of 3 MB blocks, touched
before = rss()
del blocks[1:-1]  # freed in the middle of the heap: glibc keeps the pages
kept = rss()
heap.trim()
print(before > 250e6, kept > 250e6, rss() < kept - 200e6)
"""


def test_threshold_and_trim_hand_memory_back() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True).stdout.split()
    if not GLIBC:
        assert out[:2] == ["False", "False"]
        return
    assert out == ["False", "True", "True", "True", "True"]
