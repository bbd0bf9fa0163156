"""The one place that builds the official `openai` client from the configuration."""

from __future__ import annotations

from openai import OpenAI

from helpers.config import Config


def make_client(cfg: Config, max_retries: int = 5) -> OpenAI:
    """An `openai.OpenAI` client for the configured backend, with a timeout and retries."""
    return OpenAI(base_url=cfg.base_url, api_key=cfg.api_key, timeout=cfg.request_timeout, max_retries=max_retries)
