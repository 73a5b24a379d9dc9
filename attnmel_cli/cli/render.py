"""What the commands draw on the terminal: the Rich tables of ``predict``'s records and
``evaluate``'s report (the console, progress bars and one-line failures:
:mod:`attnmel_cli.cli.console`; ``prepare``'s summary stays in its torch-free module). The HTML
report draws itself (:mod:`attnmel_cli.evaluation.html_report`); both lay out the same cells
(:mod:`attnmel_cli.evaluation.rendering`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from attnmel_cli.io.safe_text import printable
from attnmel_cli.models.names import is_binary, melanoma_index

if TYPE_CHECKING:
    from attnmel_cli.evaluation.results import Report


def show_records(stream: TextIO, classes: Sequence[str], records: list[dict[str, Any]]) -> None:
    """Print :func:`records_table` on ``stream`` (``RecordWriter``'s ``show_table``)."""
    Console(file=stream, soft_wrap=True).print(records_table(classes, records))


def records_table(classes: Sequence[str], records: Sequence[dict[str, Any]]) -> Table:
    """``predict --format table``: path, p_melanoma and the prediction (a multi-class one with
    its probability) of each record (:func:`attnmel_cli.io.records.record`)."""
    table = Table(show_edge=False)
    for name in ("path", "p_melanoma", "prediction"):
        table.add_column(name, justify="right" if name == "p_melanoma" else "left")
    melanoma = classes[melanoma_index(classes)]
    for rec in records:
        # literal (a file name may look like Rich markup), control characters escaped
        path = Text(printable(rec["path"]))
        if rec.get("error"):
            table.add_row(path, "—", Text(f"error: {printable(rec['error'])}", style="red"))
            continue
        name = rec["prediction"]
        style = "bold red" if name == melanoma else ""
        pred = (Text(printable(name), style=style) if is_binary(classes)
                else Text(f"{printable(name)} {rec[f'p_{name}']:.3f}", style=style))
        table.add_row(path, f"{rec['p_melanoma']:.3f}", pred)
    return table


def class_tables(report: Report) -> list[Table]:
    """Per multi-class checkpoint: its per-class table and its confusion matrix."""
    from attnmel_cli.evaluation.rendering import CLASS_COLUMNS, class_rows

    tables = []
    for rep in report.checkpoints:
        section = rep.class_section
        if section is None:
            continue
        name = printable(rep.name)  # a file name: its control characters escaped
        per_class = Table(title=f"{name} · per class (one vs the rest)",
                          caption=f"rates of the predicted class: the {section.prediction}")
        for k, column in enumerate(CLASS_COLUMNS):
            per_class.add_column(column, justify="right" if k else "left", no_wrap=not k)
        for cells in class_rows(section):
            per_class.add_row(*cells)
        cm = Table(title=f"{name} · confusion matrix (rows: true, columns: predicted)")
        cm.add_column("")
        for name in section.classes:
            cm.add_column(name, justify="right")
        for name, counts in zip(section.classes, section.confusion, strict=True):
            cm.add_row(name, *map(str, counts))
        tables += [per_class, cm]
    return tables


def report_table(report: Report) -> Table:
    """The report as a Rich table: one column per checkpoint
    (:func:`attnmel_cli.evaluation.rendering.metric_rows`)."""
    from attnmel_cli.evaluation.rendering import metric_rows  # lazy: matplotlib

    reports = report.checkpoints
    left_out = report.score_weight_zero
    leaks = [r.training_overlap.sentence(r.name) for r in reports
             if r.training_overlap is not None and r.training_overlap.trained_on_evaluated_images]
    table = Table(
        title=f"{printable(report.data)} · split {report.split} · {report.n_images} images"
        + (f" ({left_out} of score_weight 0 left out)" if left_out else "")
        + "".join(f"\n[bold red]TRAINED ON THESE IMAGES:[/] {escape(s)}" for s in leaks)
    )
    table.add_column("metric")
    for rep in reports:
        table.add_column(printable(rep.name), justify="right")
    for label, cells in metric_rows(report):
        table.add_row(label, *cells)
    return table
