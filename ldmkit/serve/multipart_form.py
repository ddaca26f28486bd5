"""A multipart/form-data body (RFC 7578) split into its fields, without a parser dependency.

The body has already passed `BodyLimit`, so it is whole and bounded in memory. Each part keeps its bytes
exactly (files are images); a text field is its bytes decoded as UTF-8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_PARAM = re.compile(r';\s*(name|filename)="([^"]*)"', re.IGNORECASE)


class FormError(ValueError):
    """The body is not multipart/form-data that can be read; the message says why."""


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    data: bytes

    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(f"field {self.name!r} is not UTF-8 text") from None


def parse_form(body: bytes, content_type: str) -> dict[str, list[Part]]:
    """The parts of ``body`` by field name (a name may repeat, e.g. ``image[]``); `FormError` when the
    content type is not multipart/form-data with a boundary or the body does not follow it."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise FormError(f"expected a multipart/form-data body, got {content_type or 'no content type'!r}")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise FormError("the multipart/form-data content type has no boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise FormError("the multipart body does not end with its closing boundary")
    fields: dict[str, list[Part]] = {}
    for chunk in chunks[1:-1]:
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise FormError("a multipart part has no blank line after its headers")
        data = data[:-2] if data.endswith(b"\r\n") else data
        disposition = next((line for line in head.decode("latin-1").split("\r\n")
                            if line.lower().startswith("content-disposition:")), "")
        params = {k.lower(): v for k, v in _PARAM.findall(disposition)}
        if "name" not in params:
            raise FormError("a multipart part has no name in its Content-Disposition")
        fields.setdefault(params["name"], []).append(Part(params["name"], params.get("filename"), data))
    return fields
