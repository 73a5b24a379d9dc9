"""Scoring throughput and peak memory: ``attnmel predict`` end to end vs the network alone vs a
naive pipeline, measured side by side in one run (issue 6).

    python bench/bench_predict.py                      # full VGG-16-BN attnmel, 224 px, 131 photos
    python bench/bench_predict.py --limit 8 --width 0.125          # smoke run (seconds)
    python bench/bench_predict.py --repeat-files 77 --width 0.125  # memory flat in the file count

Pipelines, each in its own process (so that each has its own peak memory), same batch size,
same thread settings (``--threads`` sets OMP_NUM_THREADS for all of them):

- **e2e**: ``attnmel predict FOLDER -f csv`` as a subprocess (records read and discarded).
  *wall*: all images / the process's whole life (Python start, model load, workers);
  *scoring*: images after the first batch / time from the first batch's records to the last.
- **compute**: the same network (``Session.load``, ``forward_batch``, inference mode) on the same
  images, already decoded and preprocessed into tensors before the clock starts; one warm-up batch.
- **naive**: full Pillow decode, torchvision transforms (CenterCrop 0.8·min side, Resize R,
  CenterCrop S, ToTensor, Normalize), one image at a time (``--naive-batch-size``), in one process.

GFLOP/s: matrix FLOPs of one forward pass (torch.utils.flop_counter) × the compute images/s.
Memory: see bench/benchlib.py (PSS summed over the process tree, and the kernel's max RSS).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Figures are printed as a table; --json FILE saves them with the machine.",
    )
    p.add_argument("--folder", type=Path, default=bl.FULLRES,
                   help="photos to score [default: the 131 full-resolution ISIC 2016 test photos]")
    p.add_argument("--limit", type=int, help="only the first N photos")
    p.add_argument("--checkpoint", "-c", type=Path,
                   help="checkpoint to use [default: a random-init one built from the next flags]")
    p.add_argument("--arch", default="attnmel")
    p.add_argument("--backbone", default="vgg16_bn")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", "-b", type=int, default=16)
    p.add_argument("--workers", "-j", type=int, help="predict's decoding workers [its default]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every pipeline [torch default]")
    p.add_argument("--naive-batch-size", type=int, default=1)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (compute-only pipeline; e2e if predict has "
                   "--compile)")
    p.add_argument("--peak-gflops", type=float,
                   help="the machine's fp32 matrix peak, for the %% of peak column")
    p.add_argument("--skip", default="", help="comma list of e2e,compute,naive to leave out")
    p.add_argument("--repeat-files", type=int, metavar="N",
                   help="memory mode: feed the file list 1× and N× to predict (stdin) and compare")
    p.add_argument("--interval", type=float, default=0.1, help="memory sampling period, s")
    p.add_argument("--json", type=Path, help="also save the figures to this JSON file")
    p.add_argument("--phase", choices=("compute", "naive"), help=argparse.SUPPRESS)
    p.add_argument("--files-from", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ── phases (run in a subprocess of this script) ───────────────────────────────────────────────


def phase(args: argparse.Namespace) -> None:
    import torch

    from attnmel_cli.engine.inference import ImageFiles, Session, forward_batch, resolve_device

    paths = args.files_from.read_text().splitlines()
    device = resolve_device(args.device)
    session = Session.load(args.checkpoint, device, compile_model=args.compile)
    model, meta = session.model, session.meta
    model.eval()
    out: dict[str, object] = {"threads": torch.get_num_threads(), "n": len(paths)}
    with torch.inference_mode():
        if args.phase == "compute":
            data = ImageFiles(paths, meta)
            tensors = [x for _, x, _ in (data[i] for i in range(len(data))) if x is not None]
            b = args.batch_size
            batches = [
                torch.stack(tensors[i : i + b]).to(device) for i in range(0, len(tensors), b)
            ]
            del tensors
            bl.sync(device)
            t = time.perf_counter()
            forward_batch(model, batches[0], device)  # warm-up (primitive creation, autotune)
            out["warmup_s"] = time.perf_counter() - t
            times = []
            for batch in batches:
                t = time.perf_counter()
                forward_batch(model, batch, device)  # ends with a device → host copy (synchronous)
                times.append(time.perf_counter() - t)
            out.update(batch_times=times, batch_sizes=[len(x) for x in batches])
            out["flops_per_image"] = bl.flops_per_image(
                getattr(model, "_orig_mod", model), meta.image_size, device
            )
        else:
            from PIL import Image
            from torchvision import transforms as T
            from torchvision.transforms import functional as TF

            pre = meta.preprocess  # the checkpoint's own preprocessing
            tf = T.Compose([
                T.Lambda(lambda im: TF.center_crop(im, round(pre.crop_fraction * min(im.size)))),
                T.Resize(pre.resize),
                T.CenterCrop(pre.image_size),
                T.ToTensor(),
                T.Normalize(pre.mean, pre.std),
            ])
            s = meta.image_size
            forward_batch(model, torch.zeros(args.naive_batch_size, 3, s, s), device)  # warm-up
            decode_s = net_s = 0.0
            nb = args.naive_batch_size
            for i in range(0, len(paths), nb):
                t0 = time.perf_counter()
                x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[i : i + nb]])
                t1 = time.perf_counter()
                forward_batch(model, x, device)
                net_s += time.perf_counter() - t1
                decode_s += t1 - t0
            out.update(decode_s=decode_s, net_s=net_s)
    out["self_peak_rss"] = bl.self_peak()
    print(json.dumps(out))


# ── driver ────────────────────────────────────────────────────────────────────────────────────


def run_phase(name: str, args: argparse.Namespace, ckpt: Path, files: Path) -> tuple[dict, bl.Run]:
    cmd = [
        sys.executable, __file__, "--phase", name, "--checkpoint", str(ckpt),
        "--files-from", str(files), "--batch-size", str(args.batch_size), "--device", args.device,
        "--naive-batch-size", str(args.naive_batch_size),
    ] + ["--compile"] * args.compile
    run = bl.check(bl.run_monitored(cmd, env=bl.thread_env(args.threads), interval=args.interval),
                   f"{name} phase")
    return bl.phase_result(run), run


def predict_cmd(args: argparse.Namespace, ckpt: Path, target: str) -> list[str]:
    cmd = [*bl.ATTNMEL, "predict", target, "-c", str(ckpt), "-f", "csv",
           "-b", str(args.batch_size), "--device", args.device]
    if args.workers is not None:
        cmd += ["-j", str(args.workers)]
    if args.compile and _predict_has_compile():
        cmd.append("--compile")
    return cmd


def _predict_has_compile() -> bool:
    """Whether this attnmel's ``predict`` has a ``--compile`` flag (else e2e runs eager)."""
    import subprocess

    out = subprocess.run([*bl.ATTNMEL, "predict", "--help"], capture_output=True, text=True,
                         cwd=bl.REPO, env={**bl.thread_env(None), "COLUMNS": "200"})
    if "--compile" not in out.stdout:
        print("note: `attnmel predict` has no --compile flag; the e2e pipeline runs eager")
        return False
    return True


def run_e2e(args: argparse.Namespace, ckpt: Path, paths: list[str], repeat: int = 1) -> bl.Run:
    """``attnmel predict`` on ``paths`` (×``repeat``, through stdin unless it is the folder)."""
    whole_folder = repeat == 1 and not args.limit
    stdin = None if whole_folder else "\n".join(paths * repeat) + "\n"
    cmd = predict_cmd(args, ckpt, str(args.folder) if whole_folder else "-")
    run = bl.run_monitored(cmd, env=bl.thread_env(args.threads), stdin_text=stdin,
                           interval=args.interval)
    bl.check(run, "attnmel predict")
    records = len(run.line_times) - 1  # minus the CSV header
    if records != len(paths) * repeat:
        sys.exit(f"attnmel predict wrote {records} records for {len(paths) * repeat} inputs")
    return run


def e2e_rates(run: bl.Run, n: int, batch: int) -> dict[str, float | None]:
    rec = run.line_times[1:]  # records, one per image; a batch's records arrive together
    scoring = (n - batch) / (rec[-1] - rec[batch - 1]) if n > batch and rec[-1] > rec[batch - 1] \
        else None
    return {"wall_ips": n / run.wall_s, "scoring_ips": scoring, "first_batch_s": rec[0]}


def memory_mode(args: argparse.Namespace, ckpt: Path, paths: list[str], info: dict) -> None:
    n = args.repeat_files
    runs = {1: run_e2e(args, ckpt, paths), n: run_e2e(args, ckpt, paths, n)}
    rows, payload = [], {}
    for k, run in runs.items():
        files = len(paths) * k
        rec = run.line_times[1:]
        half = rec[len(rec) // 2]
        first, second = run.pss_between(rec[0], half), run.pss_between(half, run.wall_s)
        rows.append([f"{k}× ({files:,} files)", f"{run.wall_s:,.1f}", bl.num(files / run.wall_s),
                     bl.mib(run.peak_pss), bl.mib(first), bl.mib(second), bl.mib(run.max_rss)])
        payload[f"{k}x"] = {"files": files, "first_half_pss": first, "second_half_pss": second,
                            **run.summary()}
    bl.print_table(
        f"predict peak memory vs number of files ({len(paths)} photos repeated)",
        ["list", "wall s", "images/s", "peak PSS", "PSS 1st half*", "PSS 2nd half*", "max RSS"],
        rows,
    )
    print("  * peak PSS from the first record to the middle one, and from there to the end")
    growth = runs[n].peak_pss / runs[1].peak_pss if runs[1].peak_pss else None
    print(f"\npeak PSS {n}× / 1×: {bl.num(growth)} (flat: ≈ 1.00; target: no growth)")
    bl.save_json(args.json, {"machine": info, "args": vars(args), "memory": payload})


def main() -> None:
    args = parse_args()
    if args.phase:
        phase(args)
        return
    info = bl.machine_info()
    bl.print_machine(info)
    paths = bl.image_files(args.folder, args.limit)
    skip = {s for s in args.skip.split(",") if s}
    with tempfile.TemporaryDirectory(prefix="attnmel-bench-") as tmp:
        ckpt = args.checkpoint or bl.make_checkpoint(
            Path(tmp) / "bench.safetensors", args.arch, args.backbone, args.width,
            args.image_size,
        )
        from attnmel_cli.io.checkpoint import read_metadata

        meta = read_metadata(ckpt)
        print(f"model: {meta.arch} {meta.backbone} width {meta.width}, {meta.image_size} px "
              f"({'given' if args.checkpoint else 'random init'}); {len(paths)} photos from "
              f"{args.folder}; batch {args.batch_size}; device {args.device}")
        if args.repeat_files:
            memory_mode(args, ckpt, paths, info)
            return
        files = Path(tmp) / "files.txt"
        files.write_text("\n".join(paths) + "\n")
        results: dict[str, dict] = {}
        n, b = len(paths), args.batch_size
        if "compute" not in skip:
            res, run = run_phase("compute", args, ckpt, files)
            times, sizes = res["batch_times"], res["batch_sizes"]
            steady = (sum(sizes[1:]) / sum(times[1:])) if len(times) > 1 else None
            results["compute"] = {"ips": n / sum(times), "steady_ips": steady, **res,
                                  **run.summary()}
        if "naive" not in skip:
            res, run = run_phase("naive", args, ckpt, files)
            results["naive"] = {"ips": n / (res["decode_s"] + res["net_s"]), **res,
                                **run.summary()}
        if "e2e" not in skip:
            run = run_e2e(args, ckpt, paths)
            results["e2e"] = {**e2e_rates(run, n, b), **run.summary()}
            results["e2e"]["cli_start_s"] = bl.cli_start_s(bl.thread_env(args.threads))
    report(args, info, results, n)


def report(args: argparse.Namespace, info: dict, results: dict[str, dict], n: int) -> None:
    compute = results.get("compute", {})
    c_ips, c_steady = compute.get("ips"), compute.get("steady_ips")
    rows = []
    if "e2e" in results:
        e = results["e2e"]
        rows.append(["e2e predict, wall", args.batch_size, n, bl.num(e["wall_ips"]),
                     bl.ratio(e["wall_ips"], c_ips), f"{e['wall_s']:.1f}",
                     bl.mib(e["peak_pss"]), bl.mib(e["max_rss"]), e["max_procs"]])
        rows.append(["e2e predict, scoring", args.batch_size, n - args.batch_size,
                     bl.num(e["scoring_ips"]), bl.ratio(e["scoring_ips"], c_steady),
                     f"{e['first_batch_s']:.1f} to 1st", "", "", ""])
    if compute:
        rows.append(["compute only", args.batch_size, n, bl.num(c_ips), "1.00×",
                     f"{sum(compute['batch_times']):.1f}", bl.mib(compute["peak_pss"]),
                     bl.mib(compute["max_rss"]), compute["max_procs"]])
    if "naive" in results:
        v = results["naive"]
        rows.append([f"naive (decode {v['decode_s']:.1f} s + net {v['net_s']:.1f} s)",
                     args.naive_batch_size, n, bl.num(v["ips"]), bl.ratio(v["ips"], c_ips),
                     f"{v['decode_s'] + v['net_s']:.1f}", bl.mib(v["peak_pss"]),
                     bl.mib(v["max_rss"]), v["max_procs"]])
    bl.print_table(
        f"scoring throughput (threads: {compute.get('threads', '?')} in the main process)",
        ["pipeline", "batch", "images", "images/s", "vs compute", "seconds", "peak PSS",
         "max RSS", "procs"], rows,
    )
    print()
    if "e2e" in results and compute:
        e = results["e2e"]
        print(f"e2e / compute: {bl.ratio(e['wall_ips'], c_ips)} wall, "
              f"{bl.ratio(e['scoring_ips'], c_steady)} scoring (target ≥ 0.90); of the wall, "
              f"{e['cli_start_s']:.1f} s is starting the CLI (`attnmel --help`)")
    if "e2e" in results and "naive" in results:
        print(f"e2e / naive:   {bl.ratio(results['e2e']['wall_ips'], results['naive']['ips'])} "
              "wall (target ≥ 1.30)")
    if compute:
        flops = compute["flops_per_image"]
        gflops = flops * (c_steady or c_ips) / 1e9
        peak = (f", {100 * gflops / args.peak_gflops:.0f} % of the {args.peak_gflops:g} GFLOP/s "
                "peak" if args.peak_gflops else " (pass --peak-gflops for the % of peak)")
        print(f"compute: {flops / 1e9:.2f} GFLOP per image × {bl.num(c_steady or c_ips)} "
              f"images/s = {gflops:.1f} GFLOP/s{peak}")
    bl.save_json(args.json, {"machine": info, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
