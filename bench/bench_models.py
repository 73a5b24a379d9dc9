"""Scoring throughput of the default model against the previous default and full VGG-16,
measured side by side in one run (issue 12).

    python bench/bench_models.py                     # 131 full-resolution photos + prepared PNGs
    python bench/bench_models.py --limit 40 --repeats 2   # 40 of each, best of 2 rounds
    python bench/bench_models.py --limit 8 --no-tta  # smoke run

Each model scores the same inputs with ``attnmel predict - -f csv`` as a subprocess, the same
thread settings for all (``--threads``, read by torch; ONNX Runtime uses one thread per core):
the full-resolution ISIC 2016 test photos (576×540 up to 3072×2304: decoding counts) and prepared
256×256 PNGs (ISIC 2017 images run through ``attnmel prepare`` into a temporary folder first).
Models:

- **previous default**: ``tests/data/attnmel-0.1-vgg16bn-w025.safetensors`` (VGG-16-BN at width
  0.25, 128 px, from scratch; attnmel 0.1's default), through PyTorch as 0.1 ran it; and the
  same model exported to ONNX here (``attnmel export``), for the networks on equal terms;
- **default, as predict picks it**: no ``--checkpoint`` and no ``$ATTNMEL_CHECKPOINT``, the path
  a user gets: ``weights/attnmel-default.onnx`` through ONNX Runtime where onnxruntime is
  installed, else the checkpoint through PyTorch (the "scored by" column says which file scored);
- **default through PyTorch**: ``--checkpoint weights/attnmel-default.safetensors``
  (EfficientNet-Lite0 AttnMel, 192 px; timm and torch imported);
- **full VGG-16-BN, 224 px**: a randomly initialised VGG-16-BN AttnMel at 224 px, the paper's
  network, through PyTorch (speed does not depend on the weights);
- **default --tta**: the default model as predict picks it, averaging the 8 flips/rotations.

``--repeats N`` runs all models N times in turn (round-robin, so that a load change hits every
model alike) and keeps each one's fastest run. Printed per input set and model: wall seconds
(whole command, CLI start-up included), images/s, the ratio to the previous default and the peak
memory (PSS of the process tree).
"""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
from pathlib import Path

import benchlib as bl

WEIGHTS = bl.REPO / "weights"
DEFAULT = WEIGHTS / "attnmel-default.safetensors"
PREVIOUS = bl.REPO / "tests" / "data" / "attnmel-0.1-vgg16bn-w025.safetensors"
CHECKPOINT_ENV = "ATTNMEL_CHECKPOINT"


def scored_by(run: bl.Run) -> str:
    """The file named in the checkpoint column of a ``predict -f csv`` run's records."""
    names = {r["checkpoint"] for r in csv.DictReader(io.StringIO(run.stdout_tail))}
    return ", ".join(sorted(names))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None,
                   help="score only the first N files of each set")
    p.add_argument("--prepared-limit", type=int, default=150,
                   help="ISIC 2017 validation images to prepare (and one training image)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every run")
    p.add_argument("--repeats", type=int, default=1, help="rounds; each model's fastest is kept")
    p.add_argument("--no-tta", action="store_true", help="skip the default --tta run")
    p.add_argument("--json", type=Path, default=None, help="also save the figures here")
    args = p.parse_args()

    info = bl.machine_info()
    bl.print_machine(info)
    env = {k: v for k, v in bl.thread_env(args.threads).items() if k != CHECKPOINT_ENV}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vgg = bl.make_checkpoint(work / "vgg16bn-224.safetensors")
        previous_onnx = work / "attnmel-0.1-vgg16bn-w025.onnx"
        bl.check(bl.run_monitored([*bl.ATTNMEL, "export", str(PREVIOUS), "--out",
                                   str(previous_onnx)], env=env), "attnmel export")
        source = bl.subset_source(bl.ISIC2017, work / "source", 1, args.prepared_limit)
        bl.check(bl.run_monitored([*bl.ATTNMEL, "prepare", str(source), "--out",
                                   str(work / "prepared")], env=env), "attnmel prepare")
        sets = {
            "full-resolution photos": bl.image_files(bl.FULLRES, args.limit),
            "prepared 256×256 PNGs": bl.image_files(work / "prepared" / "images", args.limit),
        }
        models: list[tuple[str, list[str]]] = [
            ("previous default, PyTorch", ["-c", str(PREVIOUS)]),
            ("previous default, ONNX (exported here)", ["-c", str(previous_onnx)]),
            ("default, as predict picks it", []),
            ("default, PyTorch", ["-c", str(DEFAULT)]),
            ("full VGG-16-BN 224 px, PyTorch", ["-c", str(vgg)]),
        ]
        if not args.no_tta:
            models.append(("default --tta, as predict picks it", ["--tta"]))
        best: dict[tuple[str, str], bl.Run] = {}
        for _ in range(args.repeats):
            for set_name, files in sets.items():
                for name, extra in models:
                    run = bl.check(bl.run_monitored(
                        [*bl.ATTNMEL, "predict", "-", "-f", "csv", *extra], env=env,
                        stdin_text="\n".join(files) + "\n", keep_lines=len(files) + 1,
                    ), f"predict with {name}")
                    key = (set_name, name)
                    if key not in best or run.wall_s < best[key].wall_s:
                        best[key] = run
    rows, results = [], {}
    for set_name, files in sets.items():
        base = len(files) / best[(set_name, models[0][0])].wall_s
        for name, _ in models:
            run = best[(set_name, name)]
            rate = len(files) / run.wall_s
            rows.append([set_name, name, scored_by(run), len(files), bl.num(run.wall_s, 1),
                         bl.num(rate, 1), bl.ratio(rate, base), bl.mib(run.peak_pss)])
            results[f"{set_name} / {name}"] = {
                "files": len(files), "scored_by": scored_by(run), "wall_s": run.wall_s,
                "images_per_s": rate, "vs_previous": rate / base, "peak_pss": run.peak_pss}
    bl.print_table(
        f"attnmel predict, whole command (CLI start-up included), best of {args.repeats}",
        ["inputs", "model", "scored by", "files", "wall s", "images/s", "vs previous",
         "peak PSS"], rows)
    bl.save_json(args.json, {"machine": info, "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
