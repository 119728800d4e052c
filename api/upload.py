"""Receive one multipart file upload straight to disk: size-capped and hashed as it streams.

Starlette's form parser would first spool the whole body to a temporary file with no limit;
this reads the request stream itself, so an oversized upload stops at the limit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from trainrun.errors import SpecError, TrainrunError

MAX_FIELD_BYTES = 4096  # text fields (the dataset's name) are short
HEAD_BYTES = 16  # enough for every magic number we sniff


class PayloadTooLarge(TrainrunError):
    status_code = 413


class UnsupportedMediaType(TrainrunError):
    status_code = 415


@dataclass
class Received:
    filename: str | None = None
    size: int = 0
    sha256: str = ""
    head: bytes = b""
    fields: dict[str, str] = field(default_factory=dict)


class _Parts:
    """Multipart callbacks: the part named ``file_field`` goes to ``dest``, others to memory."""

    def __init__(self, dest: Path, file_field: str, limit: int) -> None:
        self.dest, self.file_field, self.limit = dest, file_field, limit
        self.result = Received()
        self._digest = hashlib.sha256()
        self._out: Any = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._value = bytearray()
        self._in_file = False

    def callbacks(self) -> Any:  # python_multipart's TypedDict exists only for type checkers
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition, self._header_name, self._header_value = b"", b"", b""
        self._value = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        self._in_file = self._name == self.file_field
        if self._in_file:
            if self._out is not None:
                raise SpecError(("file",), "send exactly one file")
            self.result.filename = options.get(b"filename", b"").decode("utf-8", "replace")
            self._out = open(self.dest, "xb")  # noqa: SIM115 (closed in close())

    def _data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self._in_file:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise SpecError((self._name,), f"at most {MAX_FIELD_BYTES} bytes")
            return
        r = self.result
        r.size += len(chunk)
        if r.size > self.limit:
            raise PayloadTooLarge(f"the file is larger than the limit of {self.limit:,} bytes")
        if len(r.head) < HEAD_BYTES:
            r.head += chunk[: HEAD_BYTES - len(r.head)]
        self._digest.update(chunk)
        self._out.write(chunk)

    def _part_end(self) -> None:
        if not self._in_file:
            self.result.fields[self._name] = self._value.decode("utf-8", "replace")
        self._in_file = False

    def close(self) -> Received:
        if self._out is not None:
            self._out.close()
        self.result.sha256 = self._digest.hexdigest()
        return self.result


async def receive_file(
    request: Request, dest: Path, limit: int, file_field: str = "file"
) -> Received:
    """Stream the request's multipart body; the ``file_field`` part is written to ``dest``.

    Raises ``PayloadTooLarge`` as soon as the file passes ``limit`` bytes; the caller removes
    ``dest`` on any error.
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("send the file as multipart/form-data")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLarge(f"the file is larger than the limit of {limit:,} bytes")
    parts = _Parts(dest, file_field, limit)
    parser = MultipartParser(boundary, parts.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise TrainrunError(f"malformed multipart body: {exc}") from None
    finally:
        received = parts.close()
    if received.filename is None:
        raise SpecError((file_field,), "a file is required (form field 'file')")
    return received
