"""The real Kinetics annotation CSVs, as the ActivityNet crawler publishes them.

Formats (header row first; labels with spaces or commas are double-quoted):

- ``label,youtube_id,time_start,time_end,split[,is_cc]`` (Kinetics-400/600/700 train/val);
- ``youtube_id,time_start,time_end,split`` (the unlabelled test sets).

The crawler saves each row as ``<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (the label
with its spaces kept; unlabelled rows under ``test/``). The class list is the sorted set of the
raw labels, which is the order published class indices follow. Downloads always miss some
clips, so a missing file is counted and reported, and only an error if no clip exists at all.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from trainer.datasets import DataError, DataNotFoundError, VideoSource

REQUIRED = ("youtube_id", "time_start", "time_end")


@dataclass(frozen=True)
class KineticsRow:
    """One annotated clip. ``label`` is None for the unlabelled test set."""

    label: str | None
    youtube_id: str
    time_start: int
    time_end: int
    split: str

    @property
    def relpath(self) -> str:
        """Where the crawler saves this clip, relative to the video root."""
        folder = self.label if self.label is not None else "test"
        return f"{folder}/{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}.mp4"


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


def kinetics_source(csv_path: str | Path, video_root: str | Path) -> VideoSource:
    """A :class:`VideoSource` of the clips of ``csv_path`` found under ``video_root``.

    Rows whose clip is missing go to ``skipped`` (the DataModule's one-line warning summary
    counts them); if none exists it is an error.
    """
    rows = read_annotations(csv_path)
    root = Path(video_root)
    if not root.is_dir():
        raise DataNotFoundError(f"Kinetics video root {root} does not exist")
    items, missing = [], {}
    for row in rows:
        path = root / row.relpath
        if path.is_file():
            items.append((path, row.label))
        else:
            missing[str(path)] = "clip not downloaded (file missing)"
    if not items:
        raise DataError(
            f"none of the {len(rows)} clips of {csv_path} exists under {root} "
            "(expected <label>/<youtube_id>_<start:06d>_<end:06d>.mp4)"
        )
    declared = classes(rows)
    return VideoSource(str(csv_path), root, items, classes=tuple(declared) or None, skipped=missing)
