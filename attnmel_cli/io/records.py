"""Scoring records on stdout: CSV with a header, JSON lines, one JSON document, or a Rich table.

Record fields (design contract): ``path, p_melanoma, prediction, checkpoint`` (+ ``error``).
``label`` is reserved for ground truth; during its deprecation period ``predict`` still adds the
old ``label`` field, a copy of ``prediction``, after the others (:data:`LEGACY_LABEL`).
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from attnmel_cli.errors import AttnMelError

LEGACY_LABEL = "label"  # deprecated copy of ``prediction``; to be removed in attnmel 0.3
FIELDS = ("path", "p_melanoma", "prediction", "checkpoint", "error", LEGACY_LABEL)
# Every command's --format: records one per line (csv, jsonl), one JSON document, or for people.
FORMATS = ("table", "csv", "jsonl", "json")
LEGACY_LABEL_NOTE = (
    "the 'label' field of predict's records is deprecated and will be removed in attnmel 0.3: "
    "read 'prediction' (the same value); 'label' now means ground truth only"
)


def check_format(fmt: str) -> str:
    """``--format``: one of :data:`FORMATS` (the same set for every command)."""
    if fmt not in FORMATS:
        raise AttnMelError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def record(
    path: str, p: float | None, threshold: float, checkpoint: str, error: str | None
) -> dict[str, Any]:
    """One scoring record; ``prediction`` is 1 (melanoma) when ``p >= threshold``."""
    prediction = None if p is None else int(p >= threshold)
    rec: dict[str, Any] = {
        "path": path,
        "p_melanoma": None if p is None else round(p, 6),
        "prediction": prediction,
        "checkpoint": checkpoint,
    }
    if error is not None:
        rec["error"] = error
    rec[LEGACY_LABEL] = prediction
    return rec


def default_format(stream: TextIO | None = None) -> str:
    """A table on a terminal, CSV when piped (``stream``: the current ``sys.stdout`` by default)."""
    return "table" if (stream or sys.stdout).isatty() else "csv"


class RecordWriter:
    """Streams records to ``stream`` (CSV and JSON lines line by line; JSON and a table at the
    end)."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        # sys.stdout looked up now, not at import: it may have been redirected since.
        self.fmt, self.stream = check_format(fmt), stream or sys.stdout
        self._rows: list[dict[str, Any]] = []
        self._csv: csv.DictWriter | None = None
        if fmt == "csv":
            self._csv = csv.DictWriter(self.stream, fieldnames=FIELDS, lineterminator="\n")
            self._csv.writeheader()

    def write(self, rec: dict[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow({k: "" if rec.get(k) is None else rec[k] for k in FIELDS})
        elif self.fmt == "jsonl":
            self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            self._rows.append(rec)
            return
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write(json.dumps(self._rows, ensure_ascii=False, indent=1) + "\n")
        elif self.fmt == "table":
            Console(file=self.stream, soft_wrap=True).print(self._table())

    def _table(self) -> Table:
        table = Table(show_edge=False)
        for name in ("path", "p_melanoma", "prediction"):
            table.add_column(name, justify="right" if name == "p_melanoma" else "left")
        for rec in self._rows:
            path = Text(rec["path"])  # literal: a file name may look like Rich markup
            if rec.get("error"):
                table.add_row(path, "—", Text(f"error: {rec['error']}", style="red"))
            else:
                pred = "[bold red]melanoma[/bold red]" if rec["prediction"] else "other"
                table.add_row(path, f"{rec['p_melanoma']:.3f}", pred)
        return table
