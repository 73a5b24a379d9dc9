"""Training throughput (samples/s): the ``train`` loop vs the model's step alone vs data loading
alone, measured side by side in one run (issue 6).

    python bench/bench_train.py                          # full VGG-16-BN attnmel, 224 px, batch 32
    python bench/bench_train.py --data PREPARED_DIR      # an existing prepared dir
    python bench/bench_train.py --width 0.125 --limit 24 --val-limit 40 --batch-size 8  # smoke run

Without ``--data``, the first ``--limit`` training and ``--val-limit`` validation rows of the shared
ISIC 2017 folder are prepared into a temporary dir first (not timed).

Each pipeline runs :func:`attnmel_cli.engine.trainer.train` — the function ``attnmel train`` calls —
in its own process, randomly initialised (``--no-pretrained``), same options, same thread settings:

- **train**: one epoch as ``attnmel train --epochs 1`` runs it; samples/s = the epoch's training
  samples / its training time (the figure ``train`` logs; validation and checkpoint writes are
  excluded from it, and shown in the wall time).
- **model step**: the same loop and the same step (``engine.epoch.Step``: normalise, forward,
  loss, backward, SGD) on one batch already in memory, repeated for as many batches as the epoch has
  (train's DataLoader replaced by that batch).
- **data loading**: the same loop over train's own DataLoader (same Dataset, sampler,
  augmentations, workers), with the step replaced by a no-op; the figure is the second epoch's,
  after the workers have started.
Validation is replaced by a constant in the last two (it is not what they measure).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

PHASES = ("train", "model", "data")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, help="prepared dir [default: a subset of ISIC 2017]")
    p.add_argument("--limit", type=int, default=64, help="training rows of the default subset")
    p.add_argument("--val-limit", type=int, default=40,
                   help="validation rows of the default subset (the first melanoma is row 26)")
    p.add_argument("--arch", default="attnmel")
    p.add_argument("--backbone", default="vgg16_bn")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", "-b", type=int, default=32)
    p.add_argument("--roi", default="none", help="none, lesion, dermo or background")
    p.add_argument("--workers", "-j", type=int, help="DataLoader workers [train's default]")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every pipeline")
    p.add_argument("--skip", default="", help="comma list of train,model,data to leave out")
    p.add_argument("--interval", type=float, default=0.1, help="memory sampling period, s")
    p.add_argument("--json", type=Path)
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ── phases (run in a subprocess of this script) ───────────────────────────────────────────────


class InMemoryLoader:
    """Stands in for train's DataLoader: its first batch, built once, yielded as many times as
    the real loader would yield batches."""

    def __init__(self, dataset: Any, *, batch_size: int, sampler: Any, drop_last: bool = False,
                 pin_memory: bool = False, **_: Any) -> None:
        from itertools import islice

        from torch.utils.data import default_collate

        self.batch = default_collate([dataset[k] for k in islice(iter(sampler), batch_size)])
        if pin_memory:
            self.batch = [t.pin_memory() for t in self.batch]
        n = len(sampler)
        self.batches = n // batch_size if drop_last else math.ceil(n / batch_size)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Any:
        return (self.batch for _ in range(self.batches))


def phase(args: argparse.Namespace) -> None:
    import torch

    try:
        from attnmel_cli import config, parallel
        from attnmel_cli.engine import trainer as tr

        needed = ("train", "DataLoader", "Step", "validate")
        missing = [name for name in needed if not hasattr(tr, name)]
    except ImportError as exc:
        missing = [f"the module ({exc})"]
    if missing:
        raise SystemExit(
            "bench_train needs attnmel_cli.engine.trainer to provide " + ", ".join(missing) +
            " (train(), the DataLoader it builds, its Step and validate)"
        )
    epochs = 1
    if args.phase in ("model", "data"):
        tr.validate = lambda *a, **k: {"val_loss": 0.0, "val_ap": 0.0, "val_auc": 0.5}
    if args.phase == "model":
        tr.DataLoader = InMemoryLoader
    elif args.phase == "data":
        tr.Step.__call__ = lambda self, batch: torch.zeros(4, device=self.device)
        epochs = 2  # the second epoch's figure: workers already running
    run_config = config.TrainConfig(
        data=args.data, out=args.out, arch=args.arch, backbone=args.backbone, pretrained=False,
        roi=args.roi, epochs=epochs, batch_size=args.batch_size, width=args.width,
        image_size=args.image_size, device=args.device, workers=args.workers, force=True,
    )
    t = time.perf_counter()
    result = tr.train(run_config)
    wall = time.perf_counter() - t
    print(json.dumps({
        "samples_per_s": result.samples_per_s, "epoch_s": [h["seconds"] for h in result.history],
        "train_wall_s": wall, "threads": torch.get_num_threads(),
        "workers": parallel.train_workers(args.workers),
        "self_peak_rss": bl.self_peak(),
    }))


# ── driver ────────────────────────────────────────────────────────────────────────────────────


def default_data(args: argparse.Namespace, tmp: Path) -> Path:
    src = bl.subset_source(bl.ISIC2017, tmp / "src", args.limit, args.val_limit)
    out = tmp / "prepared"
    done = subprocess.run([*bl.ATTNMEL, "-q", "prepare", str(src), "--out", str(out)],
                          capture_output=True, text=True, cwd=bl.REPO, env=bl.thread_env(None))
    if done.returncode:
        raise SystemExit(f"attnmel prepare failed:\n{done.stderr}")
    return out


def main() -> None:
    args = parse_args()
    if args.phase:
        phase(args)
        return
    info = bl.machine_info()
    bl.print_machine(info)
    skip = {s for s in args.skip.split(",") if s}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="attnmel-bench-") as tmp:
        data = args.data or default_data(args, Path(tmp))
        from attnmel_cli.data.manifest import read_manifest
        from attnmel_cli.data.sampler import OversamplingSampler

        rows = [r for r in read_manifest(data) if r.split == "train"]
        epoch = len(OversamplingSampler([r.label for r in rows]))
        print(f"model: {args.arch} {args.backbone} width {args.width}, {args.image_size} px, "
              f"random init; batch {args.batch_size}; device {args.device}; data {data} "
              f"({len(rows)} training images, {epoch} samples per epoch with oversampling)")
        for name in PHASES:
            if name in skip:
                continue
            cmd = [sys.executable, __file__, "--phase", name, "--data", str(data),
                   "--out", str(Path(tmp) / f"run-{name}"), "--arch", args.arch,
                   "--backbone", args.backbone, "--width", str(args.width),
                   "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                   "--roi", args.roi, "--device", args.device]
            if args.workers is not None:
                cmd += ["--workers", str(args.workers)]
            run = bl.check(bl.run_monitored(cmd, env=bl.thread_env(args.threads),
                                            interval=args.interval), f"{name} phase")
            results[name] = {**bl.phase_result(run), **run.summary()}
    report(args, info, results)


def report(args: argparse.Namespace, info: dict, results: dict[str, Any]) -> None:
    model = results.get("model", {}).get("samples_per_s")
    labels = {"train": "train epoch (attnmel train's loop)",
              "model": "model step only (batch in memory)",
              "data": "data loading only (2nd epoch)"}
    rows = []
    for name, r in results.items():
        workers = "—" if name == "model" else r["workers"]
        rows.append([labels[name], args.batch_size, workers, bl.num(r["samples_per_s"]),
                     bl.ratio(r["samples_per_s"], model), f"{r['wall_s']:.1f}",
                     bl.mib(r["peak_pss"]), bl.mib(r["max_rss"]), r["max_procs"]])
    threads = next(iter(results.values()), {}).get("threads", "?")
    bl.print_table(
        f"training throughput (threads: {threads} in the main process; wall s: the whole "
        "process, model build, validation and checkpoints included)",
        ["pipeline", "batch", "workers", "samples/s", "vs model step", "wall s", "peak PSS",
         "max RSS", "procs"], rows,
    )
    print()
    if "train" in results and model:
        print(f"train / model step: {bl.ratio(results['train']['samples_per_s'], model)} "
              "(target ≥ 0.90)")
    if "data" in results and model:
        print(f"data loading / model step: {bl.ratio(results['data']['samples_per_s'], model)} "
              "(target ≥ 5)")
    bl.save_json(args.json, {"machine": info, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
