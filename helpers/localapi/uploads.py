"""Streaming `multipart/form-data` upload: the file part goes straight to disk with a size limit.

Nothing of the client's filename is used for the path on disk (blobs are named by file id);
the filename is only recorded, cut down to its last path component.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

from helpers.localapi.errors import APIError, bad_request

DRAIN_LIMIT = 64 * 1024 * 1024  # after the size limit is hit, read (and drop) at most this much more


class UploadTooLarge(APIError):
    """The file part is larger than the server accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"File is too large: the local server accepts files up to {limit} bytes "
                              f"(set LOCALAPI_MAX_UPLOAD_BYTES or --max-upload-bytes to change this).",
                         param="file", code="file_too_large")


@dataclass
class Upload:
    """The parsed form: text fields, and the file part written to `tmp_path`."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    tmp_path: Path | None = None
    size: int = 0
    sha256: str = ""


def safe_filename(raw: str) -> str:
    """The last path component of a client-supplied name, without control characters; 400 if nothing is left."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if name in {"", ".", ".."}:
        raise bad_request(f"Invalid filename {raw!r}: it must name a file, not a folder.", param="file")
    return name[:255]


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary of a Content-Type header, or a 400."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise bad_request("Expected a multipart/form-data body with fields 'purpose' and 'file'.")
    return options[b"boundary"]


async def parse_upload(stream: AsyncIterator[bytes], content_type: str, tmp_dir: Path, max_bytes: int) -> Upload:
    """Parse the form from the request stream, writing the `file` part to a temporary file in `tmp_dir`."""
    boundary = boundary_of(content_type)
    up = Upload()
    state: dict = {"headers": {}, "field": b"", "value": b"", "name": None, "buf": bytearray(), "out": None,
                   "too_large": False}
    digest = hashlib.sha256()

    def on_part_begin() -> None:
        state["headers"], state["name"], state["buf"] = {}, None, bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = opts.get(b"name", b"").decode("utf-8", "replace")
        if state["name"] == "file" and b"filename" in opts:
            if up.tmp_path is not None:
                raise bad_request("Only one file may be uploaded per request.", param="file")
            up.filename = opts[b"filename"].decode("utf-8", "replace")
            up.tmp_path = tmp_dir / f".upload-{secrets.token_hex(8)}.part"
            state["out"] = open(up.tmp_path, "wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if state["out"] is not None:
            up.size += len(chunk)
            if up.size > max_bytes:
                state["too_large"] = True
                return
            digest.update(chunk)
            state["out"].write(chunk)
        else:
            state["buf"] += chunk
            if len(state["buf"]) > 64 * 1024:
                raise bad_request(f"Form field {state['name']!r} is too long.", param=state["name"])

    def on_part_end() -> None:
        if state["out"] is not None:
            state["out"].close()
            state["out"] = None
        elif state["name"]:
            up.fields[state["name"]] = bytes(state["buf"]).decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if state["too_large"]:
                if received > max_bytes + DRAIN_LIMIT:
                    break
                continue
            parser.write(chunk)
        if not state["too_large"]:
            parser.finalize()
    except APIError:
        discard(up)
        raise
    except Exception as exc:  # the multipart parser's own errors
        discard(up)
        raise bad_request(f"Could not parse the multipart body: {exc}") from None
    finally:
        if state["out"] is not None:
            state["out"].close()
    if state["too_large"]:
        discard(up)
        raise UploadTooLarge(max_bytes)
    up.sha256 = digest.hexdigest()
    return up


def discard(up: Upload) -> None:
    """Remove the temporary file of an upload that will not be kept."""
    if up.tmp_path is not None:
        try:
            os.unlink(up.tmp_path)
        except FileNotFoundError:
            pass


UPLOAD_PURPOSES = {"fine-tune", "assistants", "batch", "vision", "user_data", "evals"}


def check_upload(up: Upload) -> tuple[str, str]:
    """The (purpose, filename) of a parsed `POST /v1/files` form, checked as OpenAI checks them."""
    purpose = up.fields.get("purpose", "").strip()
    if up.tmp_path is None:
        raise bad_request("Missing required parameter: 'file'.", param="file")
    if not purpose:
        raise bad_request("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in UPLOAD_PURPOSES:
        raise bad_request(f"'{purpose}' is not one of {sorted(UPLOAD_PURPOSES)} - 'purpose'", param="purpose")
    filename = safe_filename(up.filename or "")
    if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
        raise bad_request(f"Invalid file format for Fine-Tuning API. Must be .jsonl (got {filename!r}).",
                          param="file")
    if up.size == 0:
        raise bad_request("File is empty.", param="file")
    return purpose, filename
