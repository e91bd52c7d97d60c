"""An unpacked wheel's files for the GPU bundle (scripts/gpu_bundle.py): their RECORD digests, and the
DWARF debug sections its compiled files can do without.

- ``check_record``: every file against the digest the wheel's RECORD lists (the GPU machine runs it
  on every restored wheel);
- ``strip_debug``: ``strip --strip-debug`` (binutils) on the ELF files that carry ``.debug*`` sections,
  their RECORD rows rewritten. av 18.1.0 ships its 49 Cython modules with debug information (25.7 MB
  of their 31 MB): without it the bundle is 4.8 MiB smaller.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import shutil
import struct
import subprocess
import sys
from pathlib import Path


def record_digest(data: bytes, algorithm: str = "sha256") -> str:
    """A RECORD row's digest of ``data``: urlsafe base64 without padding (PEP 376 / 427)."""
    return base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode()


def _record(folder: Path, names: list[str] | None = None) -> Path:
    if names is not None:
        return folder / next(n for n in names if n.endswith(".dist-info/RECORD"))
    return next(folder.glob("*.dist-info/RECORD"))


def check_record(folder: Path) -> None:
    """Every file of an unpacked wheel against the digest its RECORD lists."""
    for row in csv.reader(_record(folder).read_text().splitlines()):
        path, digest = row[0], row[1] if len(row) > 1 else ""
        if not digest:
            continue
        algorithm, expected = digest.split("=", 1)
        if record_digest((folder / path).read_bytes(), algorithm) != expected:
            raise SystemExit(f"{folder.name}: {path} does not match its RECORD (a damaged bundle: rebuild it)")


def has_debug_sections(path: Path) -> bool:
    """True for a 64-bit little-endian ELF file that carries DWARF (``.debug*``) sections."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:6] != b"\x7fELF\x02\x01":
            return False
        shoff, = struct.unpack_from("<Q", head, 0x28)
        entsize, count, names_index = struct.unpack_from("<HHH", head, 0x3A)
        if not shoff or not count or names_index >= count:
            return False
        f.seek(shoff)
        table = f.read(entsize * count)
        names_offset, names_size = struct.unpack_from("<QQ", table, names_index * entsize + 0x18)
        f.seek(names_offset)
        names = f.read(names_size)
    starts = (struct.unpack_from("<I", table, i * entsize)[0] for i in range(count))
    return any(names[s:names.index(b"\0", s)].startswith(b".debug") for s in starts if s < len(names))


def strip_tool() -> str | None:
    """``strip --version``'s first line (binutils), or None where there is no strip."""
    if not shutil.which("strip"):
        return None
    return subprocess.run(["strip", "--version"], capture_output=True, text=True).stdout.splitlines()[0].strip()


def strip_debug(folder: Path, names: list[str]) -> dict:
    """Remove the DWARF sections from the unpacked wheel's ELF files and rewrite their RECORD rows.

    ``strip --strip-debug`` keeps the code, the symbols and the dynamic section: what loads is the same
    library.
    """
    targets = [n for n in names if not n.endswith((".py", ".pyi", ".txt", ".json")) and has_debug_sections(folder / n)]
    if not targets:
        return {"files": 0, "bytes_removed": 0}
    if strip_tool() is None:
        print(f"{folder.name}: strip (binutils) not found: {len(targets)} files keep their debug sections", file=sys.stderr)
        return {"files": 0, "bytes_removed": 0, "not_stripped": "strip (binutils) not found"}
    before = sum((folder / n).stat().st_size for n in targets)
    subprocess.run(["strip", "--strip-debug", *[str(folder / n) for n in targets]], check=True)
    record = _record(folder, names)
    rows = list(csv.reader(record.read_text().splitlines()))
    changed = set(targets)
    for row in rows:
        if row and row[0] in changed:
            data = (folder / row[0]).read_bytes()
            row[1:] = ["sha256=" + record_digest(data), str(len(data))]
    with open(record, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return {"files": len(targets), "bytes_removed": before - sum((folder / n).stat().st_size for n in targets)}
