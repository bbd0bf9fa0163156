"""helpers/localapi/threads.py: torch's CPU runtime settings of the server and the training worker."""

from __future__ import annotations

import os

import pytest

from helpers.localapi import threads


def test_onednn_keeps_a_bounded_number_of_primitives_unless_the_reader_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.PRIMITIVE_CACHE_ENV, raising=False)
    assert threads.limit_primitive_cache() == "256" == os.environ[threads.PRIMITIVE_CACHE_ENV]
    monkeypatch.setenv(threads.PRIMITIVE_CACHE_ENV, "1024")
    assert threads.limit_primitive_cache() == "1024" == os.environ[threads.PRIMITIVE_CACHE_ENV]


def test_the_thread_limit_applies_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    assert threads.limit_torch_threads() is None and torch.get_num_threads() == before
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    try:
        assert threads.limit_torch_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
