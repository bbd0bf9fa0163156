"""How many CPU threads torch may use in the server and its training worker."""

from __future__ import annotations

from helpers.config import env_int

THREADS_ENV = "LOCALAPI_TORCH_THREADS"


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
