"""Shared helpers of the benchmark scripts in ``bench/`` (run by hand, never by the test suite).

- :func:`machine_info`: what the figures were measured on (CPU model, cores, threads, torch, GPU).
- :func:`run_monitored`: run a command, timestamp its stdout lines and sample the memory of its
  whole process tree (the command and its worker processes) from ``/proc``.
- :func:`make_checkpoint`: a randomly initialised checkpoint (speed does not depend on weights).
- :func:`print_table` / :func:`save_json`: the report.

Memory figures: *PSS* (proportional set size, ``/proc/PID/smaps_rollup``) summed over the process
tree counts pages shared between a parent and its forked workers once, so it is the tree's real
footprint; it is sampled every ``interval`` seconds, so a spike shorter than that can be missed.
*max RSS* is the kernel's exact peak resident size of the largest single process in the tree
(``wait4`` rusage), which counts shared pages in full.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FULLRES = DATA / "isic2016-test-fullres" / "ISBI2016_ISIC_Part3_Test_Data"
ISIC2017 = DATA / "isic2017-256"
ATTNMEL = [sys.executable, "-m", "attnmel_cli"]
MIB = 1024 * 1024


# ── the machine ──────────────────────────────────────────────────────────────────────────────


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine and software the figures come from (printed and saved beside them)."""
    import PIL
    import torch
    import torchvision

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    return info


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"{info['cpu_capability']}; GPU: {info['gpu'] or 'none'}"
    )
    print(
        f"software: torch {info['torch']}, torchvision {info['torchvision']}, Pillow "
        f"{info['pillow']}, Python {info['python']}; torch threads {info['torch_threads']} "
        f"(OMP_NUM_THREADS={info['OMP_NUM_THREADS'] or 'unset'})"
    )
    load = info.get("loadavg_at_start")
    if load:
        busy = " — the machine is busy, figures are unreliable" if load[0] > 0.5 else ""
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}{busy}")


def thread_env(threads: int | None) -> dict[str, str]:
    """The environment for subprocesses: ``threads`` → OMP/MKL thread count (read by torch)."""
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(REPO))
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


# ── memory of a process tree ──────────────────────────────────────────────────────────────────


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            except OSError:
                continue
            out.extend(int(c) for c in text.split())
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux ``/proc``)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def _kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(PSS sum, RSS sum, processes) of ``pid``'s tree, in bytes."""
    pss = rss = 0
    tree = process_tree(pid)
    for p in tree:
        pss += _kib(f"/proc/{p}/smaps_rollup", "Pss:") * 1024
        rss += _kib(f"/proc/{p}/status", "VmRSS:") * 1024
    return pss, rss, len(tree)


@dataclass
class Run:
    """What :func:`run_monitored` saw of one command."""

    cmd: list[str]
    returncode: int
    wall_s: float
    peak_pss: int  # bytes, sampled sum over the tree
    peak_rss_sum: int  # bytes, sampled sum over the tree (shared pages counted per process)
    max_rss: int  # bytes, kernel peak of the largest single process (wait4)
    max_procs: int
    line_times: list[float] = field(default_factory=list)  # seconds after start, per stdout line
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, PSS bytes)
    stdout_tail: str = ""
    stderr_tail: str = ""

    def pss_between(self, t0: float, t1: float) -> int:
        """Peak sampled PSS in the time window [t0, t1]."""
        return max((m for t, m in self.samples if t0 <= t <= t1), default=0)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples")
        d.pop("line_times")
        d["lines"] = len(self.line_times)
        return d


def run_monitored(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdin_text: str | None = None,
    interval: float = 0.1,
    keep_lines: int = 5,
) -> Run:
    """Run ``cmd``; timestamp each stdout line (the content is discarded, but the last
    ``keep_lines`` lines are kept); sample the tree's memory every ``interval`` s."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO,
    )
    line_times: list[float] = []
    tail: list[bytes] = []
    err_chunks: list[bytes] = []
    samples: list[tuple[float, int]] = []
    peaks = {"pss": 0, "rss": 0, "procs": 0}
    done = threading.Event()

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line_times.append(time.perf_counter() - start)
            tail.append(line)
            del tail[:-keep_lines]

    def read_err() -> None:
        assert proc.stderr is not None
        for chunk in iter(lambda: proc.stderr.read(65536), b""):  # type: ignore[union-attr]
            err_chunks.append(chunk)
            del err_chunks[:-4]

    def write_in() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin_text.encode())  # type: ignore[union-attr]
            proc.stdin.close()
        except BrokenPipeError:
            pass

    def sample() -> None:
        while not done.is_set():
            pss, rss, n = tree_memory(proc.pid)
            if n and (pss or rss):
                samples.append((time.perf_counter() - start, pss))
                peaks["pss"] = max(peaks["pss"], pss)
                peaks["rss"] = max(peaks["rss"], rss)
                peaks["procs"] = max(peaks["procs"], n)
            done.wait(interval)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err, sample)]
    if stdin_text is not None:
        threads.append(threading.Thread(target=write_in, daemon=True))
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for t in threads:
        t.join(timeout=5)
    return Run(
        cmd=list(cmd), returncode=proc.returncode, wall_s=wall, peak_pss=peaks["pss"],
        peak_rss_sum=peaks["rss"], max_rss=usage.ru_maxrss * 1024, max_procs=peaks["procs"],
        line_times=line_times, samples=samples,
        stdout_tail=b"".join(tail).decode(errors="replace"),
        stderr_tail=b"".join(err_chunks).decode(errors="replace")[-2000:],
    )


def check(run: Run, what: str) -> Run:
    """Stop with the command's stderr when it failed."""
    if run.returncode not in (0,):
        sys.stdout.flush()
        sys.exit(
            f"{what} failed with exit status {run.returncode}: {' '.join(run.cmd)}\n"
            f"{run.stderr_tail.strip()}"
        )
    return run


def phase_result(run: Run) -> dict[str, Any]:
    """The JSON a ``--phase`` subprocess printed as its last stdout line."""
    lines = run.stdout_tail.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        sys.exit(f"phase {' '.join(run.cmd)} printed no result:\n{run.stderr_tail.strip()}")


def self_peak() -> int:
    """Kernel peak RSS of this process, bytes."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ── checkpoints ───────────────────────────────────────────────────────────────────────────────


def make_checkpoint(
    path: Path, arch: str = "attnmel", backbone: str = "vgg16_bn", width: float = 1.0,
    image_size: int = 224, seed: int = 0,
) -> Path:
    """A randomly initialised attnmel checkpoint (the figures do not depend on the weights)."""
    import torch

    from attnmel_cli.io.checkpoint import CheckpointMeta
    from attnmel_cli.io.model_checkpoint import save_checkpoint
    from attnmel_cli.models.attnmel import AttnMelNet, check_image_size

    check_image_size(image_size)
    torch.manual_seed(seed)
    model = AttnMelNet(arch, backbone, width)
    meta = CheckpointMeta(arch=arch, backbone=backbone, width=width, image_size=image_size)
    return save_checkpoint(path, model, meta)


def image_files(folder: Path, limit: int | None = None) -> list[str]:
    from attnmel_cli.data.image_files import expand_inputs

    if not folder.is_dir():
        sys.exit(f"{folder}: not found (the shared data folder is expected beside the repository)")
    files = list(expand_inputs([str(folder)]))
    return files[:limit] if limit else files


# ── report ────────────────────────────────────────────────────────────────────────────────────


def mib(n: float | None) -> str:
    return "—" if not n else f"{n / MIB:,.0f} MiB"


def num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}×"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for k, r in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                               enumerate(zip(r, widths, strict=True))))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


def save_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nsaved {path}")


def flops_per_image(model: Any, image_size: int, device: Any = "cpu") -> float:
    """Matrix FLOPs (convolutions and matrix products, 2 per multiply-add) of one forward pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, image_size, image_size, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


# ── data subsets ──────────────────────────────────────────────────────────────────────────────


def subset_source(src: Path, dst: Path, limit: int, val_limit: int | None = None) -> Path:
    """A copy of an ISIC-style download ``src`` with only the first ``limit`` rows of each label
    CSV (``val_limit`` for a CSV named *Validation*): trimmed CSVs, symlinks to the kept ids'
    files (photos, masks); other top-level files linked as they are."""
    import re

    id_of = re.compile(r"ISIC_\d+")
    keep: set[str] = set()
    dst.mkdir(parents=True, exist_ok=True)
    for csv_file in sorted(src.glob("*.csv")):
        lines = csv_file.read_text(encoding="utf-8").splitlines()
        header = [] if lines and id_of.match(lines[0]) else lines[:1]
        body = lines[len(header):]
        n = val_limit if val_limit is not None and "validation" in csv_file.name.lower() else limit
        body = body[:n]
        keep.update(m.group(0) for line in body if (m := id_of.match(line)))
        (dst / csv_file.name).write_text("\n".join(header + body) + "\n", encoding="utf-8")
    for entry in sorted(src.iterdir()):
        if entry.suffix == ".csv":
            continue
        if entry.is_dir():
            (dst / entry.name).mkdir(exist_ok=True)
            for f in entry.iterdir():
                m = id_of.match(f.name)
                if m and m.group(0) in keep:
                    (dst / entry.name / f.name).symlink_to(f.resolve())
        else:
            (dst / entry.name).symlink_to(entry.resolve())
    return dst


def cli_start_s(env: dict[str, str] | None = None) -> float:
    """Wall time of ``attnmel --help``: Python start plus importing the CLI and its modules."""
    return check(run_monitored([*ATTNMEL, "--help"], env=env), "attnmel --help").wall_s
