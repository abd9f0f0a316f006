"""The real Kinetics annotation CSVs, as the ActivityNet crawler publishes them.

Formats (header row first; labels with spaces or commas are double-quoted):

- ``label,youtube_id,time_start,time_end,split[,is_cc]`` (Kinetics-400/600/700 train/val);
- ``youtube_id,time_start,time_end,split`` (the unlabelled test sets).

The crawler saves each row as ``<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (the label
with its spaces kept; unlabelled rows under ``test/``); other downloaders keep them flat by
split, ``<split>/<youtube_id>_<start>_<end>.<ext>``, or in other containers (.webm, .mkv...).
Any of these is found: the video root is listed once and each row's clip looked up by its
``<youtube_id>_<start>_<end>`` name, preferring the row's label folder, then its split folder.
The ``split`` column says which split a row is in (so one annotations file may hold several).
The class list is the sorted set of the raw labels, which is the order published class indices
follow. Downloads always miss some clips, so a missing file is counted and reported, and only
an error if no clip exists at all.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.datasets import DataError, DataNotFoundError, VideoSource

REQUIRED = ("youtube_id", "time_start", "time_end")
# The split column's values (and annotation file names) -> this project's split names.
SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class KineticsRow:
    """One annotated clip. ``label`` is None for the unlabelled test set."""

    label: str | None
    youtube_id: str
    time_start: int
    time_end: int
    split: str

    @property
    def stem(self) -> str:
        """The clip's file name without its extension."""
        return f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}"

    @property
    def relpath(self) -> str:
        """Where the crawler saves this clip, relative to the video root."""
        folder = self.label if self.label is not None else "test"
        return f"{folder}/{self.stem}.mp4"


def read_annotations(csv_path: str | Path) -> list[KineticsRow]:
    """Parse a Kinetics annotation CSV (with or without ``label``/``is_cc`` columns)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataNotFoundError(f"Kinetics annotation file {csv_path} does not exist")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DataError(
                f"{csv_path}: missing column(s) {missing}; expected "
                "label,youtube_id,time_start,time_end,split[,is_cc]"
            )
        has_label = "label" in header
        rows = []
        for n, r in enumerate(reader, start=2):
            try:
                rows.append(
                    KineticsRow(
                        label=r["label"] if has_label else None,
                        youtube_id=r["youtube_id"],
                        # Some releases write times as floats ("17.0"); the file names use ints.
                        time_start=int(float(r["time_start"])),
                        time_end=int(float(r["time_end"])),
                        split=r.get("split") or "",
                    )
                )
            except (TypeError, ValueError) as e:
                raise DataError(f"{csv_path}:{n}: bad row {list(r.values())!r} ({e})") from e
    return rows


def classes(rows: list[KineticsRow]) -> list[str]:
    """The sorted set of raw labels (spaces, quotes and parentheses kept)."""
    return sorted({r.label for r in rows if r.label is not None})


def splits_of(rows: list[KineticsRow]) -> set[str]:
    """The splits named in the rows' ``split`` column (this project's names), or a DataError
    for a value that is not a split."""
    named = {r.split.strip().lower() for r in rows if r.split.strip()}
    unknown = sorted(named - set(SPLITS))
    if unknown:
        raise DataError(f"split column values {unknown}: allowed: {', '.join(SPLITS)}")
    return {SPLITS[v] for v in named}


def _index(root: Path) -> dict[str, list[Path]]:
    """Every file under ``root`` by its name without the extension (one walk)."""
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                found.setdefault(os.path.splitext(name)[0], []).append(Path(dirpath) / name)
    return found


def _find(row: KineticsRow, root: Path, index: dict[str, list[Path]]) -> Path | None:
    """The clip of ``row``: in its label folder first, then in its split's folder, then
    wherever its name is."""
    paths = index.get(row.stem)
    if not paths:
        return None
    folders = [row.label or "test", row.split.strip().lower()]
    for folder in folders:
        for path in paths:
            if folder and path.parent.name == folder:
                return path
    return sorted(paths)[0]


def kinetics_source(
    csv_path: str | Path, video_root: str | Path, split: str | None = None
) -> VideoSource:
    """A :class:`VideoSource` of the clips of ``csv_path`` found under ``video_root``: the rows
    the ``split`` column puts in ``split``; all rows when ``split`` is None or no row's column
    names it (the caller named the file's split: ``validate.csv`` is the val split).

    Rows whose clip is missing go to ``skipped`` (the DataModule's one-line warning summary
    counts them); if none exists it is an error.
    """
    rows = read_annotations(csv_path)
    if split is not None and splits_of(rows):
        rows = [r for r in rows if SPLITS.get(r.split.strip().lower()) == split] or rows
    root = Path(video_root)
    if not root.is_dir():
        raise DataNotFoundError(f"Kinetics video root {root} does not exist")
    index = _index(root)
    items, missing = [], {}
    for row in rows:
        path = _find(row, root, index)
        if path is not None:
            items.append((path, row.label))
        else:
            missing[str(root / row.relpath)] = "clip not downloaded (file missing)"
    if not items:
        raise DataError(
            f"none of the {len(rows)} clips of {csv_path} exists under {root} "
            "(expected <label>/<youtube_id>_<start:06d>_<end:06d>.mp4, or <split>/...)"
        )
    declared = classes(rows)
    name = f"{csv_path} ({split})" if split else str(csv_path)
    return VideoSource(name, root, items, classes=tuple(declared) or None, skipped=missing)
