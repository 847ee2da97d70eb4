"""Line-oriented reading of the text files that describe datasets.

Every reader goes through :func:`iter_lines` so that CRLF endings, blank lines and a UTF-8
byte-order mark are tolerated in the same way everywhere, and so that bad bytes or a bad
line raise an error that names the file and the 1-based line number.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line of a UTF-8 text file.

    Line numbers are 1-based and count blank lines too, so they match an editor's. Trailing
    whitespace (including ``\\r`` from CRLF files) is stripped.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        A line is not valid UTF-8 (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path}, line {number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                    "re-save the file as UTF-8"
                ) from None
            if number == 1:
                text = text.removeprefix("\ufeff")
            text = text.rstrip()
            if text:
                yield number, text


def read_utf8(path: str | os.PathLike) -> str:
    """The whole text of a UTF-8 file; bad bytes raise a ValueError naming the file and line."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not valid UTF-8") from None


def parse_int(token: str, path: str | os.PathLike, number: int, what: str = "label") -> int:
    """Parse an integer token, raising a ValueError that names the file and line."""
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{path}, line {number}: {what} {token!r} is not an integer") from None


def read_pairs(path: str | os.PathLike, *, what: str = "label") -> list[tuple[str, int, int]]:
    """Read ``<name> <int>`` lines; return ``(name, value, line_number)`` triples.

    The name may not contain whitespace (true of every file list we read).
    """
    out = []
    for number, text in iter_lines(path):
        parts = text.split()
        if len(parts) != 2:
            raise ValueError(
                f"{path}, line {number}: expected '<path> <{what}>' (2 fields), got {len(parts)} field(s): {text[:80]!r}"
            )
        out.append((parts[0], parse_int(parts[1], path, number, what), number))
    return out
