"""The local server's settings: where it keeps its data, its key, and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from helpers.localapi.faults import FaultSettings

DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # OpenAI's per-file limit


@dataclass
class ServerSettings:
    """Everything the app needs to know about its environment."""

    work_dir: Path
    api_key: str = field(repr=False)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    faults: FaultSettings = field(default_factory=FaultSettings)
    default_max_tokens: int = 512  # when a chat request sets no limit
    model_cache: Path | None = None  # converted base models; default <work_dir>/localapi/models
    train_base_weights: str = "auto"  # the trainer's TrainSpec.base_weights: "auto"/"bf16", or "fp32" (more memory)
    request_shutdown: Callable[[], None] | None = None

    @property
    def root(self) -> Path:
        """`<work_dir>/localapi`: the database, blobs, adapters and model cache."""
        return self.work_dir / "localapi"
