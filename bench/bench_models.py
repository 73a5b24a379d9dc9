"""Scoring throughput of the default model against the previous default and full VGG-16,
measured side by side in one run (issue 12, part 7).

    python bench/bench_models.py                     # 131 full-resolution photos + 300 prepared
    python bench/bench_models.py --limit 16          # smoke run

Each model scores the same inputs with ``attnmel predict -f csv`` as a subprocess, the same
thread settings for all (``--threads``): the 131 full-resolution ISIC 2016 test photos (576×540
up to 3072×2304: decoding counts) and prepared 256×256 PNGs (the ISIC 2017 validation split run
through ``attnmel prepare`` into a temporary folder first). Models:

- **default**: ``weights/attnmel-default.safetensors`` (EfficientNet-Lite0 AttnMel, 192 px);
- **previous default**: ``weights/attnmel-0.1-vgg16bn-w025.safetensors`` (VGG-16-BN at width
  0.25, 128 px, attnmel 0.1);
- **full VGG-16**: a randomly initialised VGG-16-BN AttnMel at 224 px, the paper's network
  (speed does not depend on the weights);
- **default --tta**: the default model averaging the 8 flips/rotations.

Printed per model and input set: wall seconds (whole command, CLI start-up included),
images/s, and the ratio to the previous default.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import benchlib as bl

DEFAULT = bl.REPO / "weights" / "attnmel-default.safetensors"
PREVIOUS = bl.REPO / "weights" / "attnmel-0.1-vgg16bn-w025.safetensors"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None, help="score only the first N files")
    p.add_argument("--prepared-limit", type=int, default=150, help="prepared images to score")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every run")
    p.add_argument("--no-tta", action="store_true", help="skip the default --tta run")
    p.add_argument("--json", type=Path, default=None, help="also save the figures here")
    args = p.parse_args()

    info = bl.machine_info()
    bl.print_machine(info)
    env = bl.thread_env(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vgg = bl.make_checkpoint(work / "vgg16bn-224.safetensors")
        source = bl.subset_source(bl.ISIC2017, work / "source", 1, args.prepared_limit)
        bl.check(bl.run_monitored([*bl.ATTNMEL, "prepare", str(source), "--out",
                                   str(work / "prepared")], env=env), "attnmel prepare")
        sets = {
            "full-resolution photos": bl.image_files(bl.FULLRES, args.limit),
            "prepared 256×256 PNGs": bl.image_files(work / "prepared" / "images", args.limit),
        }
        models = [("previous default", PREVIOUS, []), ("default", DEFAULT, []),
                  ("full VGG-16-BN, 224 px", vgg, [])]
        if not args.no_tta:
            models.append(("default --tta", DEFAULT, ["--tta"]))
        rows, results = [], {}
        for set_name, files in sets.items():
            base = None
            for name, ckpt, extra in models:
                run = bl.check(bl.run_monitored(
                    [*bl.ATTNMEL, "predict", "-", "-c", str(ckpt), "-f", "csv", *extra],
                    env=env, stdin_text="\n".join(files) + "\n"), f"predict with {name}")
                rate = len(files) / run.wall_s
                base = rate if base is None else base
                rows.append([set_name, name, len(files), bl.num(run.wall_s, 1), bl.num(rate, 1),
                             bl.ratio(rate, base), bl.mib(run.peak_pss)])
                results[f"{set_name} / {name}"] = {"files": len(files), "wall_s": run.wall_s,
                                                   "images_per_s": rate,
                                                   "peak_pss": run.peak_pss}
    bl.print_table("attnmel predict, whole command (CLI start-up included)",
                   ["inputs", "model", "files", "wall s", "images/s", "vs previous", "peak PSS"],
                   rows)
    bl.save_json(args.json, {"machine": info, "results": results})


if __name__ == "__main__":
    main()
