"""The deployment fast path (issue 14), side by side in one run: start-up, one photo, throughput
and int8 accuracy of PyTorch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8.

    python bench/bench_deploy.py                      # everything (about 15 min on 2 cores)
    python bench/bench_deploy.py --limit 16 --auc-limit 40 --repeats 1   # smoke run

Models: the default model (EfficientNet-Lite0 AttnMel, 192 px) and a full VGG-16-BN AttnMel at
224 px (randomly initialised: speed does not depend on the weights; its AUC is meaningless), each
exported with ``attnmel export`` (fp32) and ``attnmel export --int8 --calibrate`` on 300 training
images of the prepared ISIC 2017 dir (``--prepared``, default /work/runs/prepared-2017); the
default model also with ``--keep-float blocks.0/,blocks.2/,blocks.5/``.

1. start-up: wall time of ``attnmel --help`` and ``--version`` (median of ``--repeats``);
2. one photo: wall time of ``attnmel predict ONE.jpg`` with each model file (whole command);
3. throughput: ``attnmel predict -`` on the 131 full-resolution ISIC 2016 test photos (decoding
   counts; CLI start-up included; ``--repeats`` rounds through the model files in turn, the
   median of each), and the network alone on preprocessed batches of 16 (in
   process, after one warm-up batch);
4. AUC of each model file on the ISIC 2017 validation split (prepared, 150 images) and on the
   ISIC 2016 photos (leak warning: 120 of the 131 are ISIC 2017 training images, and the default
   model was trained on ISIC 2017 train + val, so these AUCs only compare int8 with fp32).
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl
import numpy as np

DEFAULT = bl.REPO / "weights" / "attnmel-default.safetensors"
PREPARED = Path("/work/runs/prepared-2017")
TRUTH_2016 = bl.FULLRES.parent / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"
# The int8 models of each: every layer quantised, and for the default model also one with the
# three blocks int8 hurts most left in float (found by quantising one block at a time).
INT8 = {"default": {"ONNX int8": "",
                    "ONNX int8, blocks 0/2/5 float": "blocks.0/,blocks.2/,blocks.5/"},
        "VGG-16-BN 224": {"ONNX int8": ""}}


def attnmel(*args: str | Path, env: dict[str, str], stdin: str | None = None) -> bl.Run:
    cmd = [*bl.ATTNMEL, *(str(a) for a in args)]
    return bl.check(bl.run_monitored(cmd, env=env, stdin_text=stdin, keep_lines=100_000),
                    " ".join(cmd[2:5]))


def median_wall(args: list[str | Path], env: dict[str, str], repeats: int) -> float:
    return statistics.median(attnmel(*args, env=env).wall_s for _ in range(repeats))


def scores(run: bl.Run) -> dict[str, float]:
    """path → p_melanoma from a ``predict -f csv`` run's stdout."""
    rows = csv.DictReader(io.StringIO(run.stdout_tail))
    return {r["path"]: float(r["p_melanoma"]) for r in rows if r["p_melanoma"]}


def network_rate(model: Path, batch: np.ndarray, seconds: float = 8.0) -> float:
    """Images/s of the network alone on ``batch`` (N, 3, S, S): PyTorch for a checkpoint, ONNX
    Runtime for an .onnx file; as many batches as fit in ``seconds`` after a warm-up."""
    if model.suffix == ".onnx":
        from attnmel_cli.deploy.runtime import OnnxSession

        session = OnnxSession.load(model, "cpu")

        def step() -> None:
            session.forward(batch)
    else:
        import torch

        from attnmel_cli.engine.inference import Session, forward_batch

        torch_session = Session.load(model, torch.device("cpu"))
        x = torch.from_numpy(batch)

        def step() -> None:
            with torch.inference_mode():
                forward_batch(torch_session.model, x, torch_session.device, keep_maps=True)

    step()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        n += len(batch)
    return n / (time.perf_counter() - start)


def auc(labels: dict[str, int], p: dict[str, float]) -> float:
    from sklearn.metrics import roc_auc_score

    keys = sorted(set(labels) & set(p))
    return float(roc_auc_score([labels[k] for k in keys], [p[k] for k in keys]))


def truth_2016(files: list[str]) -> dict[str, int]:
    with TRUTH_2016.open() as fh:
        label = {r[0]: int(float(r[1])) for r in csv.reader(fh)}
    return {f: label[Path(f).stem] for f in files}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None, help="full-resolution photos to score")
    p.add_argument("--auc-limit", type=int, default=None, help="validation images for the AUC")
    p.add_argument("--prepared", type=Path, default=PREPARED, help="prepared ISIC 2017 dir")
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3, help="runs per start-up/one-photo figure")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every run")
    p.add_argument("--json", type=Path, default=None, help="also save the figures here")
    p.add_argument("--no-vgg", action="store_true", help="the default model only")
    args = p.parse_args()

    from attnmel_cli.data.manifest import read_manifest
    from attnmel_cli.engine.scored import load_input
    from attnmel_cli.io.checkpoint import read_metadata

    info = bl.machine_info()
    bl.print_machine(info)
    env = bl.thread_env(args.threads)
    photos = bl.image_files(bl.FULLRES, args.limit)
    val = read_manifest(args.prepared, split="val")[: args.auc_limit]
    val_files = [str(args.prepared / r.image) for r in val]
    val_truth = {f: r.label for f, r in zip(val_files, val, strict=True)}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vgg = None if args.no_vgg else bl.make_checkpoint(work / "vgg16bn-224.safetensors")
        files: dict[str, dict[str, Path]] = {}
        export_rows = []
        models = [("default", DEFAULT)] + ([] if args.no_vgg else [("VGG-16-BN 224", vgg)])
        for name, ckpt in models:
            fp32 = work / f"{ckpt.stem}.onnx"
            t32 = attnmel("export", ckpt, "--out", fp32, env=env).wall_s
            files[name] = {"PyTorch fp32": ckpt, "ONNX fp32": fp32}
            for variant, keep in INT8[name].items():
                int8 = work / f"{ckpt.stem}-{len(files[name])}.onnx"
                t8 = attnmel("export", ckpt, "--out", int8, "--int8", "--calibrate",
                             args.prepared, "--calibration-images", str(args.calibration_images),
                             "--keep-float", keep, env=env).wall_s
                files[name][variant] = int8
                export_rows.append([name, variant, bl.num(t32, 1), bl.num(t8, 1),
                                    bl.mib(fp32.stat().st_size), bl.mib(int8.stat().st_size)])
        bl.print_table("attnmel export", ["model", "int8 variant", "fp32 s",
                                          "int8 s (calibration incl.)", "fp32 size",
                                          "int8 size"], export_rows)

        start = [["attnmel --help", bl.num(median_wall(["--help"], env, args.repeats))],
                 ["attnmel --version", bl.num(median_wall(["--version"], env, args.repeats))]]
        bl.print_table("start-up (median wall s)", ["command", "wall s"], start)
        results["startup"] = dict(start)

        one_rows, rate_rows, net_rows, auc_rows = [], [], [], []
        for name, variants in files.items():
            meta = read_metadata(variants["PyTorch fp32"])
            batch = np.stack([load_input(f, meta.preprocess) for f in (photos * 16)[:16]])
            base_rate = base_net = onnx_rate = onnx_net = None
            base_auc: tuple[float, float] | None = None
            # the photos through each model file round-robin (a busy machine slows all alike);
            # the median wall time of each, its last run for the scores and memory
            walls: dict[str, list[float]] = {v: [] for v in variants}
            last: dict[str, bl.Run] = {}
            for _ in range(args.repeats):
                for variant, model in variants.items():
                    last[variant] = attnmel("predict", "-", "-c", model, "-f", "csv", env=env,
                                            stdin="\n".join(photos) + "\n")
                    walls[variant].append(last[variant].wall_s)
            for variant, model in variants.items():
                one = median_wall(["predict", photos[0], "-c", model, "-f", "csv"], env,
                                  args.repeats)
                run = last[variant]
                rate = len(photos) / statistics.median(walls[variant])
                net = network_rate(model, batch)
                base_rate, base_net = base_rate or rate, base_net or net
                if variant == "ONNX fp32":
                    onnx_rate, onnx_net = rate, net
                one_rows.append([name, variant, bl.num(one)])
                rate_rows.append([name, variant, len(photos),
                                  bl.num(statistics.median(walls[variant]), 1),
                                  bl.num(rate, 2), bl.ratio(rate, base_rate),
                                  bl.ratio(rate, onnx_rate) if onnx_rate else "—",
                                  bl.mib(run.peak_pss)])
                net_rows.append([name, variant, bl.num(net, 1), bl.ratio(net, base_net),
                                 bl.ratio(net, onnx_net) if onnx_net else "—"])
                key = f"{name} / {variant}"
                results[key] = {"one_photo_s": one, "photos_wall_s": walls[variant],
                                "photos_per_s": rate, "network_images_per_s": net,
                                "peak_pss": run.peak_pss}
                if name == "default":
                    on_val = scores(attnmel("predict", "-", "-c", model, "-f", "csv", env=env,
                                            stdin="\n".join(val_files) + "\n"))
                    a17, a16 = auc(val_truth, on_val), auc(truth_2016(photos), scores(run))
                    if variant == "ONNX fp32":
                        base_auc = (a17, a16)
                    d17, d16 = ((f"{a17 - base_auc[0]:+.4f}", f"{a16 - base_auc[1]:+.4f}")
                                if base_auc else ("—", "—"))
                    auc_rows.append([variant, f"{a17:.4f}", d17, f"{a16:.4f}", d16])
                    results[key].update({"auc_isic2017_val": a17, "auc_isic2016_photos": a16})
    bl.print_table("one photo: attnmel predict ONE.jpg (median wall s, whole command)",
                   ["model", "scored by", "wall s"], one_rows)
    bl.print_table(f"throughput: attnmel predict on {len(photos)} full-resolution photos "
                   f"(whole command, median of {args.repeats} round-robin runs)",
                   ["model", "scored by", "photos", "wall s", "photos/s", "vs PyTorch",
                    "vs ONNX fp32", "peak PSS"], rate_rows)
    bl.print_table("the network alone: preprocessed batches of 16 (images/s, in process)",
                   ["model", "scored by", "images/s", "vs PyTorch", "vs ONNX fp32"], net_rows)
    bl.print_table(f"AUC of the default model ({len(val_files)} ISIC 2017 val images, "
                   f"{len(photos)} ISIC 2016 photos)",
                   ["scored by", "ISIC 2017 val", "Δ vs ONNX fp32", "ISIC 2016 photos",
                    "Δ vs ONNX fp32"], auc_rows)
    bl.save_json(args.json, {"machine": info, "results": results})


if __name__ == "__main__":
    main()
