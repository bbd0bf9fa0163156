"""The official `openai` client built from the configuration (notebook 04 writes the same line out in a cell)."""

from __future__ import annotations

from openai import OpenAI

from helpers.config import Config


def make_client(cfg: Config, max_retries: int = 5) -> OpenAI:
    """Notebooks 06 and 07: the `OpenAI(base_url=..., api_key=..., timeout=..., max_retries=...)` client notebook 04 builds."""
    return OpenAI(base_url=cfg.base_url, api_key=cfg.api_key, timeout=cfg.request_timeout, max_retries=max_retries)
