"""How long a user waits for attnmel to report a mistake (target ≤ 1 s each), and for --help.

    python bench/bench_startup.py             # each case 5 times, median and best wall time
    python bench/bench_startup.py --reps 3 --json startup.json

Each case runs ``python -m attnmel_cli …`` as a user would (start-up and imports included) and
must exit 1 with one ``error:`` line; the table says whether torch was needed (it is not, for
any of them). The cases run round-robin, so that a busy machine slows them alike.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import benchlib as bl

PHOTO = bl.REPO / "examples" / "ISIC_0000279.jpg"


def cases(tmp: Path) -> dict[str, list[str]]:
    foreign = tmp / "model.safetensors"
    foreign.write_bytes(b"not a safetensors file")
    missing = str(tmp / "missing.safetensors")
    return {
        "predict -c MISSING.safetensors": ["predict", str(PHOTO), "-c", missing],
        "predict -c NOT-SAFETENSORS": ["predict", str(PHOTO), "-c", str(foreign)],
        "predict --format xml": ["predict", str(PHOTO), "--format", "xml"],
        "evaluate --data MISTYPED": ["evaluate", "--data", str(tmp / "prepraed")],
        "evaluate --format xml": ["evaluate", "--data", str(tmp), "--format", "xml"],
        "explain -c MISSING.safetensors": ["explain", str(PHOTO), "-o", str(tmp / "x"),
                                           "-c", missing],
        "export MISSING.safetensors": ["export", missing, "-o", str(tmp / "m.onnx")],
        "--help (reference)": ["--help"],
        "predict --help (reference)": ["predict", "--help"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    bl.print_machine(bl.machine_info())
    with tempfile.TemporaryDirectory(prefix="attnmel-bench-") as folder:
        runs = cases(Path(folder))
        times: dict[str, list[float]] = {name: [] for name in runs}
        outcome: dict[str, str] = {}
        for _ in range(args.reps):
            for name, argv in runs.items():
                t = time.perf_counter()
                done = subprocess.run([*bl.ATTNMEL, *argv], capture_output=True, text=True,
                                      cwd=bl.REPO)
                times[name].append(time.perf_counter() - t)
                outcome[name] = (f"exit {done.returncode}: "
                                 f"{(done.stderr.strip().splitlines() or [''])[-1][:60]}")
    rows = [[name, f"{statistics.median(v):.2f}", f"{min(v):.2f}",
             "yes" if statistics.median(v) <= 1.0 else "NO", outcome[name]]
            for name, v in times.items()]
    bl.print_table(f"attnmel start-up to the error (s, {args.reps} runs round-robin)",
                   ["case", "median", "best", "≤ 1 s", "outcome"], rows)
    bl.save_json(args.json, {"reps": args.reps, "seconds": times, "outcome": outcome})


if __name__ == "__main__":
    main()
