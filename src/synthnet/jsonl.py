"""The one JSON-lines reader: metrics.jsonl, patches/history.jsonl, a zoo's manifest.jsonl, sweep records."""

from __future__ import annotations

import json
from pathlib import Path

from synthnet.errors import SynthNetError


def read_jsonl(path: Path, torn_tail: bool = False) -> list[dict]:
    """The JSON objects of `path`, one per line ([] when it does not exist). A line that is not a JSON object is a
    SynthNetError naming path:line. torn_tail: a last line without its newline (a write cut short by a kill) is
    dropped instead of failing; its writer rewrites the file without it."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    last = lines.pop()  # "" when the file ends with a newline
    if last and not torn_tail:
        lines.append(last)
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise SynthNetError(f"{path}:{n}: not a JSON object line (a corrupt or hand-edited file?)")
        rows.append(row)
    return rows
