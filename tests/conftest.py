"""Fixtures shared by the engine tests (models, trainer, generator)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One converted-model cache for the whole session, shared by the engine tests (the tokenizer conversion takes a few seconds)."""
    path = tmp_path_factory.getbasetemp() / "engine-cache"
    path.mkdir(exist_ok=True)
    return path
