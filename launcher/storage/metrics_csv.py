"""The one reader of the ``metrics.csv`` a script writes (Lightning's CSVLogger format): the
agent reads its latest values into status.json, ``launch metrics`` its rows.

It is the script's file, so nothing in it may break the reader: bytes that are not UTF-8 are
replaced, fields of any size are read, a cell that is not a finite number is None.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

Row = dict[str, float | None]

csv.field_size_limit(sys.maxsize)  # a script may log a huge field; the default 128 KiB raises


def parse_metrics_csv(text: str) -> list[Row]:
    """Rows of a CSVLogger file: numbers as floats, blanks (and non-numbers) as None."""
    rows = []
    try:
        for raw in csv.DictReader(io.StringIO(text.replace("\0", ""))):
            row: Row = {}
            for k, v in raw.items():
                if k is None or not isinstance(v, str):  # cells beyond or short of the header
                    continue
                try:
                    f = float(v) if v != "" else None
                except ValueError:
                    f = None
                row[k] = f if f is None or math.isfinite(f) else None
            rows.append(row)
    except csv.Error:
        pass  # a malformed tail (a write in progress): the rows before it stand
    return rows


def latest_metrics(csv_path: Path) -> dict[str, float]:
    """The last logged value of each column of a metrics.csv (rows have blanks); {} if none."""
    try:
        text = Path(csv_path).read_bytes().decode(errors="replace")
    except OSError:
        return {}
    latest: dict[str, float] = {}
    for row in parse_metrics_csv(text):
        for k, v in row.items():
            if k and v is not None:
                latest[k] = v
    return latest
