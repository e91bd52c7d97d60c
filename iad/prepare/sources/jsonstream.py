"""Entries of a huge JSON object one at a time: OpenS2V-5M's metadata files are 0.6-1.4 GB each
(the mask-and-box ones tens of GB), one object keyed by clip id. ``json.load`` would build the whole
tree in memory; this parses ``"key": value`` pairs from a sliding text buffer with the standard
library's decoder, so memory stays at one entry plus one read chunk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

_WHITESPACE = " \t\r\n"
MAX_ENTRY_CHARS = 256 << 20   # an entry this large is a broken file, not an entry


class JsonStreamError(ValueError):
    """The file is not a JSON object of entries; the message names the file and where it broke."""


def iter_object_items(path: str | Path, chunk_chars: int = 1 << 20) -> Iterator[tuple[str, object]]:
    """``(key, value)`` of the top-level JSON object in ``path``, in file order."""
    path = Path(path)
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as handle:
        buffer, pos, eof = "", 0, False

        def fill() -> bool:
            nonlocal buffer, pos, eof
            if eof:
                return False
            chunk = handle.read(chunk_chars)
            eof = not chunk
            if chunk:   # positions stay valid when nothing was read
                buffer, pos = buffer[pos:] + chunk, 0
            return bool(chunk)

        def next_char() -> str:
            nonlocal pos
            while True:
                while pos < len(buffer) and buffer[pos] in _WHITESPACE:
                    pos += 1
                if pos < len(buffer) or not fill():
                    return buffer[pos] if pos < len(buffer) else ""

        def value(what: str, count: int):
            nonlocal pos
            while True:
                try:
                    item, stop = decoder.raw_decode(buffer, pos)
                    if stop < len(buffer) or eof or not fill():   # a number may go on in the next chunk
                        pos = stop
                        return item
                except json.JSONDecodeError as exc:
                    if len(buffer) - pos > MAX_ENTRY_CHARS or not fill():
                        raise JsonStreamError(f"{path}: {what} of entry {count} is not valid JSON ({exc.msg}); the file "
                                              "is truncated or corrupt (download it again)") from None

        if next_char() != "{":
            raise JsonStreamError(f"{path}: the top level is not a JSON object of entries")
        pos += 1
        count = 0
        if next_char() == "}":
            return
        while True:
            key = value("the key", count)
            if not isinstance(key, str) or next_char() != ":":
                raise JsonStreamError(f"{path}: entry {count} is not a '\"key\": value' pair")
            pos += 1
            next_char()
            yield key, value("the value", count)
            count += 1
            sep = next_char()
            pos += 1
            if sep == "}":
                return
            if sep != ",":
                raise JsonStreamError(f"{path}: expected ',' or '}}' after entry {count - 1} ({key!r}), found "
                                      f"{sep or 'the end of the file'!r}; the file is truncated or corrupt")
            next_char()
