"""Where videos come from: :class:`VideoSource` (folders, CSVs and lists, paths to predict) and
the data errors. Torch-free: listing a source needs no torch."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """The data cannot be used as given (message: one line naming what and what is allowed)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data folder, CSV or video that was named explicitly does not exist."""


class DataWarning(UserWarning):
    """Something in the data was skipped (bad files, empty class folders, missing clips)."""


@dataclass
class VideoSource:
    """A list of ``(video path, label or None)`` and where it came from.

    ``name`` is how messages refer to it (a folder or CSV path); ``classes`` the class list the
    source declares on its own (Kinetics annotations do; folders and CSVs leave it ``None`` and
    the classes are the labels of the usable videos); ``skipped`` what was already found
    unusable before any probing (missing clips, files outside class folders).
    """

    name: str
    root: Path
    items: list[tuple[Path, str | None]]
    classes: tuple[str, ...] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    empty_message: str = ""

    @classmethod
    def from_folder(cls, folder: str | Path) -> VideoSource:
        """Class-per-folder layout ``FOLDER/<label>/<video>`` (videos may sit in subfolders of
        a class folder). Hidden files are ignored; files not inside a class folder are skipped.
        An empty class folder is a warning: it only counts as a class if another split has it.
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise DataError(
                f"data folder {folder} is a file (expected class-per-folder layout: "
                f"{folder}/<label>/<video>.mp4)"
            )
        if not folder.is_dir():
            raise DataNotFoundError(
                f"data folder {folder} does not exist (expected "
                f"class-per-folder layout: {folder}/<label>/<video>.mp4)"
            )
        items: list[tuple[Path, str | None]] = []
        skipped: dict[str, str] = {}
        empty = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_file():
                skipped[str(entry)] = "not inside a class folder"
                continue
            files = _list_files(entry)
            if not files:
                empty.append(entry.name)
            items.extend((p, entry.name) for p in files)
        if empty:
            warnings.warn(
                f"{folder}: empty class folder(s) {', '.join(empty)}", DataWarning, stacklevel=2
            )
        return cls(
            str(folder),
            folder,
            items,
            skipped=skipped,
            empty_message=(
                f"no videos in {folder} (expected class-per-folder layout: "
                f"{folder}/<label>/<video>.mp4)"
            ),
        )

    @classmethod
    def from_csv(cls, csv_path: str | Path, root: str | Path | None = None) -> VideoSource:
        """A CSV of ``path,label`` rows (an optional ``path,label`` header), or PyTorchVideo's
        list of space-separated ``path label`` lines; paths relative to ``root`` or, by
        default, to the file's folder. Integer labels are class indices: a list labelled
        0..K-1 declares the classes "0" ... "K-1" (so label k is output k)."""
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise DataNotFoundError(f"CSV file {csv_path} does not exist")
        base = Path(root) if root is not None else csv_path.parent
        with open(csv_path, newline="") as f:
            lines = f.read().splitlines()
        first = next((ln for ln in lines if ln.strip() and not ln.startswith("#")), "")
        spaced = "," not in first and len(first.split()) >= 2
        rows = _space_rows(lines) if spaced else list(enumerate(csv.reader(lines), start=1))
        items: list[tuple[Path, str | None]] = []
        for n, row in rows:
            if not row or row[0].startswith("#"):
                continue
            if n == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                expected = "'path label'" if spaced else "'path,label'"
                raise DataError(f"{csv_path}:{n}: expected {expected}, got {row!r}")
            items.append((base / row[0].strip(), row[1].strip()))
        labels = {label for _, label in items}
        classes = None
        if labels and all(label.isdigit() for label in labels):
            classes = tuple(str(i) for i in range(max(int(x) for x in labels) + 1))
            items = [(path, str(int(label))) for path, label in items]  # "007" is class 7
        return cls(
            str(csv_path),
            base,
            items,
            classes=classes,
            empty_message=f"no videos listed in {csv_path} (expected rows 'path,label')",
        )

    @classmethod
    def from_paths(cls, paths: str | Path | Sequence[str | Path]) -> VideoSource:
        """Unlabelled videos to predict: a folder (searched recursively) or a list of files."""
        if isinstance(paths, str | Path) and Path(paths).is_dir():
            folder = Path(paths)
            return cls(
                str(folder),
                folder,
                [(p, None) for p in _list_files(folder)],
                empty_message=f"no videos in {folder}",
            )
        if isinstance(paths, str | Path):
            paths = [paths]
        files = [Path(p) for p in paths]
        if not files:
            raise DataError("no videos given to predict")
        parents = [str(p.resolve().parent) for p in files]
        root = Path(os.path.commonpath(parents))
        return cls(
            f"{len(files)} given path(s)",
            root,
            [(p, None) for p in files],
            empty_message="none of the given paths is a readable video",
        )


def _space_rows(lines: list[str]) -> list[tuple[int, list[str]]]:
    """PyTorchVideo's ``path label`` lines: the label is the last word (paths may hold
    spaces)."""
    return [(n, line.rsplit(None, 1)) for n, line in enumerate(lines, start=1)]


def _list_files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out
