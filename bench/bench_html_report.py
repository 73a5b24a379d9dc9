"""Size and build time of ``evaluate --html`` on a large split (issue 15): the gallery is capped,
so the file should grow only with the all-images table (under ~20 MB at 10,000 images).

    python bench/bench_html_report.py --prepared ../runs/prepared-2017            # 10,000 rows
    python bench/bench_html_report.py --prepared P --rows 500 -c weights/attnmel-default.safetensors

A split of ``--rows`` images is synthesised from a prepared dir (its images and lesion masks
reused in turn under new ids, as split ``test``), scored by ``--checkpoint`` (default: a random
VGG-16-BN AttnMel at width 1/16 and 64 px: the file's size does not depend on the weights, and
scoring 10,000 images stays short), then the HTML report is built in phases: the gallery (the
chosen images scored again with their maps, thumbnails), the figures and the page (Jinja2), the
write. Printed: each phase's time, the file size and what it is made of.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", type=Path, required=True, help="prepared dir to draw images from")
    p.add_argument("--rows", type=int, default=10_000, help="images in the synthesised split")
    p.add_argument("--checkpoint", "-c", type=Path, help="[default: a tiny random checkpoint]")
    p.add_argument("--gallery", type=int, default=12, help="evaluate --gallery")
    p.add_argument("--bootstrap", type=int, default=200, help="evaluate --bootstrap")
    p.add_argument("--workers", "-j", type=int, default=1)
    p.add_argument("--out", type=Path, help="keep the report here [default: a temporary folder]")
    p.add_argument("--json", type=Path, help="save the figures as JSON")
    return p.parse_args(argv)


def synthesise(prepared: Path, rows: int, dst: Path) -> Path:
    """A prepared dir of ``rows`` test images: ``prepared``'s rows in turn, ids suffixed, its
    image and mask folders linked."""
    with (prepared / "manifest.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns, source = reader.fieldnames or [], list(reader)
    dst.mkdir(parents=True)
    for top in {r[c].split("/")[0] for r in source for c in ("image", "lesion_mask") if r[c]}:
        (dst / top).symlink_to((prepared / top).resolve())
    with (dst / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for k in range(rows):
            row = dict(source[k % len(source)])
            writer.writerow({**row, "image_id": f"{row['image_id']}-{k}", "split": "test"})
    return dst


def composition(html: str) -> dict[str, int]:
    """Bytes of the page by kind: gallery JPEGs, figure PNGs, the all-images table, the rest."""
    jpeg = sum(len(m) for m in re.findall(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", html))
    png = sum(len(m) for m in re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", html))
    table = re.search(r'<table class="sortable".*?</table>', html, flags=re.DOTALL)
    rows = len(table[0].encode()) if table else 0
    total = len(html.encode())
    return {"gallery_jpeg": jpeg, "figures_png": png, "image_table": rows,
            "rest": total - jpeg - png - rows, "total": total}


def main() -> None:
    args = parse_args()
    import torch

    from attnmel_cli.engine.inference import Session
    from attnmel_cli.engine.scored import ScoringOptions
    from attnmel_cli.evaluation.gallery import build_gallery
    from attnmel_cli.evaluation.html_report import render_html
    from attnmel_cli.evaluation.inputs import load_data
    from attnmel_cli.evaluation.report import run_evaluation
    from attnmel_cli.io.atomic import write_text_atomic

    info = bl.machine_info()
    bl.print_machine(info)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = args.checkpoint or bl.make_checkpoint(root / "tiny.safetensors", width=0.0625,
                                                     image_size=64)
        data = load_data(synthesise(args.prepared, args.rows, (root / "big").resolve()), "test")
        t0 = time.perf_counter()
        ev = run_evaluation(data, [ckpt], device, ScoringOptions(workers=args.workers),
                            n_boot=args.bootstrap)
        t1 = time.perf_counter()
        first = ev.scores[0]
        session = Session.load(first.checkpoint, device)
        threshold = ev.report.checkpoints[0].threshold.value
        sections = build_gallery(first, data, session, threshold, args.gallery,
                                 ScoringOptions(workers=args.workers))
        t2 = time.perf_counter()
        html = render_html(ev, data, sections)
        t3 = time.perf_counter()
        target = (args.out or root) / "report.html"
        write_text_atomic(target, html)
        t4 = time.perf_counter()
    parts = composition(html)
    cards = sum(len(cards) for _, cards in sections)
    phases = [("scoring + report (evaluate itself)", t1 - t0),
              (f"gallery: {cards} images scored again, thumbnails", t2 - t1),
              ("figures + Jinja2 page", t3 - t2), ("write", t4 - t3),
              ("HTML report in all", t4 - t1)]
    bl.print_table(f"{args.rows} images, checkpoint {ckpt.name}, gallery {args.gallery}",
                   ["phase", "seconds"], [(n, f"{s:.2f}") for n, s in phases])
    bl.print_table("report.html", ["part", "bytes", "MB"],
                   [(k, f"{v:,}", f"{v / 1e6:.2f}") for k, v in parts.items()])
    bl.save_json(args.json, {"machine": info, "rows": args.rows, "checkpoint": str(ckpt),
                             "phases_s": dict(phases), "bytes": parts})


if __name__ == "__main__":
    sys.exit(main())
