"""Torch's CPU runtime in the server and its training worker: how many threads, and how many compiled matmuls oneDNN keeps."""

from __future__ import annotations

import os

from helpers.config import env_int

THREADS_ENV = "LOCALAPI_TORCH_THREADS"
PRIMITIVE_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"  # oneDNN's own variable, read when it first runs
PRIMITIVE_CACHE_CAPACITY = 256  # oneDNN's default keeps 1,024


def limit_torch_threads() -> int | None:
    """Apply LOCALAPI_TORCH_THREADS (if set) to torch; return the number applied.

    On a 2-core machine that also runs notebook kernels, tests and a second server, torch's default of one
    thread per core makes OpenMP threads spin while they wait for a core: measured on the tiny test model
    under load, one training step took ~4 s with 2 threads and ~0.6 s with 1. The tests set 1.
    """
    n = env_int(THREADS_ENV, 0, minimum=1)
    if not n:
        return None
    import torch

    torch.set_num_threads(n)
    return n


def limit_primitive_cache(capacity: int = PRIMITIVE_CACHE_CAPACITY) -> str:
    """Bound oneDNN's cache of compiled matmuls (primitives) for this process before torch first runs one; a value
    already set in ONEDNN_PRIMITIVE_CACHE_CAPACITY wins. Returns the capacity in force.

    oneDNN compiles a primitive for every matmul shape it meets and keeps 1,024. The server's packed linear layers
    (prepack.py) meet a new shape with every prefill length, so over 07's answers the cache grew to about 0.3 GB;
    256 keep the decoding steps' shapes and let old prefill shapes go: 07's 150 answers peaked at 4.10 GB instead
    of 4.40 GB, no slower (184 s against 203 s), a re-created primitive computing the same numbers; 16 saved as much
    but took 20 % longer (benchmarks/README.md).
    """
    return os.environ.setdefault(PRIMITIVE_CACHE_ENV, str(capacity))
