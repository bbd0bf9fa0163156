"""Linear layers whose weights are pre-packed for oneDNN, for generation on a CPU.

A decoding step multiplies a handful of rows (one per answer in the batch) by every weight matrix of the model.
PyTorch's default CPU matmul re-arranges the weight for its kernel on every call, and for so few rows that costs
about as much as the arithmetic. oneDNN (bundled with PyTorch) can re-arrange ("pack") each weight once, at load
time, into the blocked layout its kernel reads; every later call then streams the weights once. Same float32 (or
bf16) arithmetic, same memory (the packed weight replaces the plain one): on a 2-core CPU without native bf16 a
decoding step of 8 rows takes about half the time, and the greedy answers are the same (benchmarks/README.md,
"Generation").

Only the model pool of the local server packs (generation); training keeps plain layers, which need gradients.
peft wraps a PackedLinear like any nn.Linear, so LoRA adapters still load on top of the shared base.
"""

from __future__ import annotations

from typing import Any

import torch

from helpers.localapi import heap

PACK_BATCH_HINT = 8  # rows the packing is tuned for (07 sent 8 requests at a time then, 16 now); any row count works


class PackedLinear(torch.nn.Linear):
    """A frozen nn.Linear whose weight is stored in oneDNN's packed layout (inference only, CPU only)."""

    def __init__(self, linear: torch.nn.Linear, batch_hint: int = PACK_BATCH_HINT) -> None:
        torch.nn.Module.__init__(self)  # not nn.Linear's: it would allocate a fresh weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # a plain attribute, not a Parameter: an opaque oneDNN tensor that only _linear_pointwise reads
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ weight.T + bias, for any leading shape."""
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def can_prepack(model: Any) -> bool:
    """True when the model sits on a CPU in float32 or bfloat16 and this PyTorch has oneDNN."""
    param = next(model.parameters())
    return (param.device.type == "cpu" and param.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available())


def _mapped_weight_files() -> list[tuple[int, int]]:
    """Address ranges of this process's memory-mapped .safetensors files (Linux; empty elsewhere)."""
    try:
        lines = open("/proc/self/maps", encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[5].endswith(".safetensors"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((start, end))
    return ranges


def _release_file_pages(tensor: torch.Tensor, ranges: list[tuple[int, int]]) -> bool:
    """Let the kernel drop the pages of a weight read from a memory-mapped file (madvise DONTNEED); False when the
    weight is not on such a file (then nothing is done).

    Only for pages of a mapped file (never this process's own memory): they are clean copies of the file, re-read
    if anything touches them again (a tied embedding still can). Without it, loading holds the float32 file's
    pages and the packed copies together: Qwen's load peak 5.4 GB instead of 3.5 GB.
    """
    start = tensor.data_ptr()
    end = start + tensor.untyped_storage().nbytes()
    if not any(a <= start and end <= b for a, b in ranges):  # ranges are only ever found on Linux
        return False
    heap.drop_file_pages(start, end - start)
    return True


def prepack_linears(model: Any, batch_hint: int = PACK_BATCH_HINT) -> int:
    """Replace every plain nn.Linear of a (not yet peft-wrapped) model by a PackedLinear; returns how many.

    The file pages of each packed weight are released as soon as it is packed, so the packed weights are the only
    copy of the linear layers in memory. The input embedding stays on the file the weights were loaded from
    (transformers maps it) with its pages released too: a decoding step reads one row per token, so only the rows
    of tokens seen are ever in memory (Qwen: tens of MB instead of 0.55 GB in float32). The other parameters (norms,
    biases) are copied off the file.
    """
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is torch.nn.Linear]
    ranges = _mapped_weight_files()
    embedding = model.get_input_embeddings().weight
    with torch.no_grad():
        for parent, name, child in targets:
            setattr(parent, name, PackedLinear(child, batch_hint))
            _release_file_pages(child.weight, ranges)
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor is embedding and _release_file_pages(tensor, ranges):
                continue
            tensor.data = tensor.data.clone()
    return len(targets)
