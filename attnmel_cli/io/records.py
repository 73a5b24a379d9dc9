"""Scoring records on stdout: CSV with a header, JSON lines, one JSON document, or a table (drawn
by the command: :func:`attnmel_cli.cli.render.records_table`).

Record fields (design contract): ``path, p_melanoma, prediction, checkpoint`` (+ ``error``).
``prediction`` is a class name (:func:`predicted_index`): for a binary (other, melanoma)
checkpoint ``melanoma`` when ``p_melanoma ≥ threshold``, else ``other``. A multi-class checkpoint
adds ``p_<class>`` for each of its classes (in its order) after ``p_melanoma`` (not repeated for a
class named ``melanoma``). ``label`` is reserved for ground truth.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from attnmel_cli.errors import AttnMelError
from attnmel_cli.io.safe_text import csv_cell
from attnmel_cli.models.names import CLASSES, class_words, is_binary, melanoma_index

# draws the records of ``--format table`` on a stream: (stream, classes, records)
ShowTable = Callable[[TextIO, Sequence[str], list[dict[str, Any]]], None]

FIELDS = ("path", "p_melanoma", "prediction", "checkpoint", "error")
DEFAULT_THRESHOLD = 0.5  # a binary checkpoint's prediction is 1 when p_melanoma ≥ this
# Every command's --format: records one per line (csv, jsonl), one JSON document, or for people.
FORMATS = ("table", "csv", "jsonl", "json")


def check_format(fmt: str) -> str:
    """``--format``: one of :data:`FORMATS` (the same set for every command)."""
    if fmt not in FORMATS:
        raise AttnMelError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def record_fields(classes: Sequence[str] = CLASSES) -> tuple[str, ...]:
    """The fields of the records of a checkpoint with ``classes``, in order (module docstring)."""
    if is_binary(classes):
        return FIELDS
    per_class = dict.fromkeys(f"p_{c}" for c in ("melanoma", *classes))
    return ("path", *per_class, "prediction", "checkpoint", "error")


def predicted_index(
    classes: Sequence[str], probs: Sequence[float], threshold: float | None = None
) -> int:
    """The class predicted from the probabilities ``probs`` (K,) of ``classes``: melanoma when
    its probability is ``≥ threshold``, otherwise the most probable other class. Without a
    threshold: :data:`DEFAULT_THRESHOLD` for binary classes, else the most probable class (the
    first of a tie)."""
    if threshold is None and is_binary(classes):
        threshold = DEFAULT_THRESHOLD
    mel = melanoma_index(classes)
    candidates = list(range(len(classes)))
    if threshold is not None:
        if probs[mel] >= threshold:
            return mel
        candidates.remove(mel)
    return max(candidates, key=lambda i: probs[i])


def prediction_caption(
    classes: Sequence[str], probs: Sequence[float], threshold: float | None = None
) -> str:
    """The predicted class in words and its probability, e.g. ``seborrheic keratosis 0.71``
    (the overlays' legend and ``explain``'s composite)."""
    i = predicted_index(classes, probs, threshold)
    return f"{class_words(classes[i])} {probs[i]:.2f}"


def record(
    path: str, p: float | None, threshold: float | None, checkpoint: str, error: str | None,
    *, classes: Sequence[str] = CLASSES, probs: Sequence[float] = (),
) -> dict[str, Any]:
    """One scoring record (unscored: ``p`` is None): ``prediction`` the :func:`predicted_index`
    class name (binary ``classes``: melanoma when ``p >= threshold``, default
    :data:`DEFAULT_THRESHOLD`); a multi-class checkpoint adds ``p_<class>`` from ``probs`` (K,)."""
    rec: dict[str, Any] = {"path": path, "p_melanoma": None if p is None else round(p, 6)}
    if is_binary(classes):
        probs = (1.0 - p, p) if p is not None else ()
    else:
        for name, q in zip(classes, probs if p is not None else [None] * len(classes),
                           strict=True):
            rec.setdefault(f"p_{name}", None if q is None else round(q, 6))
    prediction = None if p is None else classes[predicted_index(classes, probs, threshold)]
    rec.update(prediction=prediction, checkpoint=checkpoint)
    if error is not None:
        rec["error"] = error
    return rec


def default_format(stream: TextIO | None = None) -> str:
    """A table on a terminal, CSV when piped (``stream``: the current ``sys.stdout`` by default)."""
    return "table" if (stream or sys.stdout).isatty() else "csv"


class RecordWriter:
    """Streams the records of a checkpoint with ``classes`` to ``stream`` (CSV and JSON lines
    line by line; JSON and a table at the end, the table drawn by ``show_table``)."""

    def __init__(
        self, fmt: str, stream: TextIO | None = None, classes: Sequence[str] = CLASSES,
        show_table: ShowTable | None = None,
    ) -> None:
        if fmt == "table" and show_table is None:
            raise AttnMelError("--format table: the command gave no table to draw the records")
        # sys.stdout looked up now, not at import: it may have been redirected since.
        self.fmt, self.stream = check_format(fmt), stream or sys.stdout
        self.show_table = show_table
        self.classes, self.fields = tuple(classes), record_fields(classes)
        self._rows: list[dict[str, Any]] = []
        self._csv: csv.DictWriter | None = None
        if fmt == "csv":
            self._csv = csv.DictWriter(self.stream, fieldnames=self.fields, lineterminator="\n")
            self._csv.writeheader()

    def write(self, rec: dict[str, Any]) -> None:
        if self._csv is not None:
            # a path or class name a spreadsheet would run as a formula gets a leading '
            self._csv.writerow({k: "" if rec.get(k) is None else csv_cell(rec[k])
                                for k in self.fields})
        elif self.fmt == "jsonl":
            self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            self._rows.append(rec)
            return
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write(json.dumps(self._rows, ensure_ascii=False, indent=1) + "\n")
        elif self.fmt == "table" and self.show_table is not None:
            self.show_table(self.stream, self.classes, self._rows)
