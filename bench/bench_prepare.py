"""``attnmel prepare`` throughput (images/s) and peak memory on the real ISIC folders.

    python bench/bench_prepare.py                    # isic2017-256 (2,150 photos) and the full-res
                                                     # ISIC 2016 test folder (131 photos)
    python bench/bench_prepare.py --limit 20         # smoke run: the first 20 rows of each CSV
    python bench/bench_prepare.py --workers-list 1,2 # decoding threads side by side

Each source is prepared into an empty temporary folder (*write*: decode, crop, PNG, masks), then
once more into the same folder (*re-run*: every image already done, only hashed and skipped).
The source files are read once beforehand, so both runs find them in the page cache.
``--limit`` links a subset of each source (first N rows of each label CSV) into a temporary folder.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import benchlib as bl

SOURCES = {"isic2017-256": bl.ISIC2017, "isic2016-test-fullres": bl.DATA / "isic2016-test-fullres"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", action="append", type=Path,
                   help="source folder (repeatable) [default: both shared ISIC folders]")
    p.add_argument("--limit", type=int, help="only the first N rows of each label CSV")
    p.add_argument("--workers-list", default="",
                   help="comma list of --workers values to compare [prepare's default]")
    p.add_argument("--interval", type=float, default=0.1, help="memory sampling period, s")
    p.add_argument("--json", type=Path)
    return p.parse_args()


def warm_cache(folder: Path) -> int:
    total = 0
    for f in folder.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    total += len(chunk)
    return total


def prepare(src: Path, out: Path, workers: str, interval: float) -> tuple[bl.Run, int, float]:
    cmd = [*bl.ATTNMEL, "prepare", str(src), "--out", str(out)]
    if workers:
        cmd += ["--workers", workers]
    run = bl.check(bl.run_monitored(cmd, env=bl.thread_env(None), interval=interval),
                   "attnmel prepare")
    m = re.search(r"prepared (\d+) images .* in ([\d.]+) s", run.stderr_tail)
    if not m:
        raise SystemExit(f"attnmel prepare printed no summary line:\n{run.stderr_tail}")
    return run, int(m.group(1)), float(m.group(2))


def main() -> None:
    args = parse_args()
    info = bl.machine_info()
    bl.print_machine(info)
    from attnmel_cli.parallel import prepare_workers

    sources = args.source or list(SOURCES.values())
    workers_list = [w for w in args.workers_list.split(",") if w] or [""]
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="attnmel-bench-") as tmp:
        for src in sources:
            if not src.is_dir():
                raise SystemExit(f"{src}: not found")
            if args.limit:
                src = bl.subset_source(src, Path(tmp) / "src" / src.name, args.limit, args.limit)
            mb = warm_cache(src) / bl.MIB
            for workers in workers_list:
                out = Path(tmp) / f"out-{src.name}-{workers or 'default'}"
                for kind in ("write", "re-run"):
                    run, n, inner = prepare(src, out, workers, args.interval)
                    label = f"{src.name} ({mb:.1f} MB), {kind}"
                    rows.append([label, workers or f"{prepare_workers()} (default)", n,
                                 bl.num(n / run.wall_s), bl.num(n / inner if inner else None),
                                 f"{run.wall_s:.1f}", f"{inner:.1f}", bl.mib(run.peak_pss),
                                 bl.mib(run.max_rss)])
                    results[f"{src.name}/{workers or 'default'}/{kind}"] = {
                        "images": n, "inner_s": inner, "source_mb": mb, **run.summary(),
                    }
        start = bl.cli_start_s(bl.thread_env(None))
    bl.print_table(
        "attnmel prepare (wall: the whole command; inner: prepare()'s own time as it logs it, "
        "to 0.1 s)",
        ["source", "workers", "images", "images/s wall", "images/s inner", "wall s", "inner s",
         "peak PSS", "max RSS"], rows,
    )
    print(f"\nstarting the CLI (`attnmel --help`, imports only) takes {start:.1f} s of each wall")
    bl.save_json(args.json, {"machine": info, "args": vars(args), "cli_start_s": start,
                             "results": results})


if __name__ == "__main__":
    main()
