"""A/B measurements of the scoring fast paths, each pair measured side by side, interleaved.

    python bench/bench_fastpaths.py                         # every section, full VGG-16-BN, 224 px
    python bench/bench_fastpaths.py --only decode,layout    # some sections
    python bench/bench_fastpaths.py --limit 8 --width 0.125 --reps 2   # smoke run

Sections (``--only``):
- ``decode``  : JPEG decoding at full size (what predict and prepare use) vs Pillow's draft
                mode (``load_photo`` with ``draft_min_side=256``, what they used before 0.2;
                thumbnails only now), decode alone and decode + preprocessing to the network
                input; with the mean |difference| of the resulting inputs (0–255 scale).
- ``scoring`` : the default model's ONNX export scoring the photos (decoding in 1 thread beside
                ONNX Runtime, as predict) with the full decode vs the draft decode: images/s
                and the largest |Δ p_melanoma| between them.
- ``layout``  : the network on channels-last vs contiguous (NCHW) weights (``Session.load``).
- ``threads`` : the network at torch.set_num_threads(t), t = 1 … cores (``--thread-list``).
- ``grad``    : torch.inference_mode vs torch.no_grad around the forward pass.
- ``e2e``     : ``attnmel predict`` with OMP threads × decoding workers combinations
                (``--e2e-grid``; workers 0 = decoding in the main process, no overlap).
- ``cuda``    : (CUDA only) fp32 vs bf16 autocast, cudnn.benchmark off/on, torch.compile off/on,
                pageable vs pinned host→device copies.
Network sections use one batch of real photos (``--batch-size``), one warm-up pass per variant,
then ``--reps`` rounds alternating the variants; median and best images/s are printed.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib as bl

SECTIONS = ("decode", "scoring", "layout", "threads", "grad", "e2e", "cuda")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections")
    p.add_argument("--folder", type=Path, default=bl.FULLRES)
    p.add_argument("--limit", type=int, help="only the first N photos (decode, e2e)")
    p.add_argument("--checkpoint", "-c", type=Path)
    p.add_argument("--arch", default="attnmel")
    p.add_argument("--backbone", default="vgg16_bn")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", "-b", type=int, default=16)
    p.add_argument("--reps", type=int, default=3, help="rounds per network A/B")
    p.add_argument("--device", default="auto")
    p.add_argument("--thread-list", help="comma list for 'threads' [1 … cores]")
    p.add_argument("--e2e-grid", default="",
                   help="THREADS:WORKERS,… for 'e2e' [cores:cores-1 (the defaults), cores:0, "
                   "1:1, cores:cores]")
    p.add_argument("--interval", type=float, default=0.1, help="memory sampling period, s")
    p.add_argument("--json", type=Path)
    return p.parse_args()


def timed_ab(variants: dict[str, Callable[[], Any]], reps: int, n: int,
             sync: Callable[[], None] = lambda: None) -> dict[str, dict[str, float]]:
    """Warm each variant once, then ``reps`` rounds alternating their order; images/s stats."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        fn()
        sync()
    names = list(variants)
    for r in range(reps):
        for name in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            variants[name]()
            sync()
            times[name].append(time.perf_counter() - t)
    return {k: {"median_ips": n / statistics.median(v), "best_ips": n / min(v), "times": v}
            for k, v in times.items()}


def ab_rows(res: dict[str, dict[str, float]], base: str) -> list[list[str]]:
    b = res[base]["median_ips"]
    return [[k, bl.num(v["median_ips"]), bl.num(v["best_ips"]), bl.ratio(v["median_ips"], b)]
            for k, v in res.items()]


AB_HEAD = ["variant", "images/s (median)", "images/s (best)", "vs first"]


def section_decode(paths: list[str], reps: int) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    from attnmel_cli.config import PREPARED_SIZE, PreprocessConfig
    from attnmel_cli.data.decode import load_photo
    from attnmel_cli.data.tensors import photo_to_input

    sizes = {p: Image.open(p).size for p in paths}
    largest = max(sizes.values(), key=lambda s: s[0] * s[1])
    groups = {"all photos": paths,
              f"largest ({largest[0]}×{largest[1]})": [p for p in paths if sizes[p] == largest]}
    out: dict[str, Any] = {}
    rows = []
    for group, files in groups.items():
        t = {"full": 0.0, "draft": 0.0, "full+prep": 0.0, "draft+prep": 0.0}
        diffs = []
        for r in range(reps):
            for p in files:
                for mode in ("full", "draft") if r % 2 == 0 else ("draft", "full"):
                    t0 = time.perf_counter()
                    img = load_photo(p, draft_min_side=PREPARED_SIZE if mode == "draft" else None)
                    t1 = time.perf_counter()
                    x = photo_to_input(img, PreprocessConfig(224))
                    t2 = time.perf_counter()
                    t[mode] += t1 - t0
                    t[mode + "+prep"] += t2 - t0
                    if r == 0:
                        if mode == "full":
                            full_x = x
                        else:
                            draft_x = x
                if r == 0:
                    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
                    diffs.append(float(np.abs((full_x - draft_x).numpy() * std * 255).mean()))
        k = len(files) * reps
        ms = {m: 1000 * v / k for m, v in t.items()}
        out[group] = {"ms_per_image": ms, "mean_abs_diff_255": float(np.mean(diffs)),
                      "images": len(files)}
        rows.append([group, len(files), f"{ms['full']:.1f}", f"{ms['draft']:.1f}",
                     bl.ratio(ms["full"], ms["draft"]), f"{ms['full+prep']:.1f}",
                     f"{ms['draft+prep']:.1f}", bl.ratio(ms["full+prep"], ms["draft+prep"]),
                     f"{np.mean(diffs):.2f}"])
    bl.print_table(
        "JPEG decoding: full size vs draft mode (ms per photo, one core)",
        ["photos", "n", "full", "draft", "speed-up", "full+prep", "draft+prep", "speed-up",
         "mean |Δ| input (0–255)"], rows,
    )
    return out


def section_scoring(paths: list[str], reps: int) -> dict[str, Any]:
    """The default ONNX model over ``paths``: full decode vs the draft decode, side by side."""
    import numpy as np

    from attnmel_cli.config import PREPARED_SIZE
    from attnmel_cli.data import decode
    from attnmel_cli.deploy.runtime import OnnxSession
    from attnmel_cli.engine import scored
    from attnmel_cli.engine.scored import ScoringOptions
    from attnmel_cli.io.default_model import default_checkpoint

    session = OnnxSession.load(default_checkpoint(onnx=True), "cpu")
    probs: dict[str, np.ndarray] = {}

    def run(draft: bool) -> Callable[[], Any]:
        def go() -> None:
            scored.load_photo = (  # type: ignore[attr-defined]
                (lambda p, **kw: decode.load_photo(p, draft_min_side=PREPARED_SIZE, **kw))
                if draft else decode.load_photo)
            ps = [s.p_melanoma for s in session.score(paths, ScoringOptions(workers=1))]
            scored.load_photo = decode.load_photo  # type: ignore[attr-defined]
            probs["draft" if draft else "full"] = np.array(ps, dtype=np.float64)
        return go

    res = timed_ab({"full decode": run(False), "draft decode": run(True)}, reps, len(paths))
    delta = np.abs(probs["full"] - probs["draft"])
    bl.print_table(
        f"ONNX default model over {len(paths)} photos: full vs draft JPEG decode "
        f"(max |Δp| {delta.max():.4f}, mean {delta.mean():.4f}, "
        f"{int((delta > 0.01).sum())} photos > 0.01)", AB_HEAD, ab_rows(res, "full decode"))
    return {**res, "max_abs_dp": float(delta.max()), "mean_abs_dp": float(delta.mean()),
            "over_0_01": int((delta > 0.01).sum())}


def main() -> None:
    args = parse_args()
    import torch

    from attnmel_cli.engine.inference import ImageFiles, Session, forward_batch, resolve_device

    info = bl.machine_info()
    bl.print_machine(info)
    only = {s for s in args.only.split(",") if s}
    unknown = only - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown sections {', '.join(sorted(unknown))}; "
                 f"choose from {', '.join(SECTIONS)}")
    device = resolve_device(args.device)
    paths = bl.image_files(args.folder, args.limit)
    results: dict[str, Any] = {}
    if "decode" in only:
        results["decode"] = section_decode(paths, max(1, args.reps))
    if "scoring" in only:
        results["scoring"] = section_scoring(paths, max(1, args.reps))
    if not only - {"decode", "scoring"}:  # no network section: no VGG-16 to build
        bl.save_json(args.json, {"machine": info, "args": vars(args), "results": results})
        return
    with tempfile.TemporaryDirectory(prefix="attnmel-bench-") as tmp:
        ckpt = args.checkpoint or bl.make_checkpoint(
            Path(tmp) / "bench.safetensors", args.arch, args.backbone, args.width, args.image_size,
        )
        session = Session.load(ckpt, device)
        meta = session.meta
        print(f"\nmodel: {meta.arch} {meta.backbone} width {meta.width}, {meta.image_size} px; "
              f"batch {args.batch_size}; device {device}")
        data = ImageFiles((paths * args.batch_size)[: args.batch_size], meta)
        batch = torch.stack([data[i][1] for i in range(args.batch_size)]).to(device)
        n = len(batch)
        sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)

        def fwd(model: Any, grad: Any = torch.inference_mode) -> Callable[[], Any]:
            def run() -> Any:
                with grad():
                    return forward_batch(model, batch, device)
            return run

        if "layout" in only:
            plain = Session.load(ckpt, device, channels_last=False).model
            cl = Session.load(ckpt, device, channels_last=True).model
            res = timed_ab({"contiguous (NCHW)": fwd(plain), "channels_last": fwd(cl)},
                           args.reps, n, sync)
            bl.print_table("weights memory format", AB_HEAD, ab_rows(res, "contiguous (NCHW)"))
            results["layout"] = res
        if "threads" in only and device.type == "cpu":
            default = torch.get_num_threads()
            counts = ([int(t) for t in args.thread_list.split(",")] if args.thread_list
                      else list(range(1, (os.cpu_count() or 1) + 1)))

            def at(t: int) -> Callable[[], Any]:
                def run() -> Any:
                    torch.set_num_threads(t)
                    return fwd(session.model)()
                return run

            res = timed_ab({f"{t} thread{'s' * (t > 1)}": at(t) for t in counts}, args.reps, n)
            torch.set_num_threads(default)
            bl.print_table(f"torch intra-op threads (default {default})", AB_HEAD,
                           ab_rows(res, next(iter(res))))
            results["threads"] = res
        if "grad" in only:
            res = timed_ab({"inference_mode": fwd(session.model),
                            "no_grad": fwd(session.model, torch.no_grad)}, args.reps, n, sync)
            bl.print_table("autograd mode", AB_HEAD, ab_rows(res, "inference_mode"))
            results["grad"] = res
        if "cuda" in only and device.type == "cuda":
            results["cuda"] = section_cuda(session, ckpt, batch, args, sync)
        if "e2e" in only:
            results["e2e"] = section_e2e(args, ckpt, paths)
    bl.save_json(args.json, {"machine": info, "args": vars(args), "results": results})


def section_cuda(session: Any, ckpt: Path, batch: Any, args: argparse.Namespace,
                 sync: Callable[[], None]) -> dict[str, Any]:
    import torch

    from attnmel_cli.engine.inference import Session

    device, n, model = session.device, len(batch), session.model
    out: dict[str, Any] = {}

    def run(m: Any, amp: bool = True) -> Callable[[], Any]:
        def go() -> Any:
            with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=amp):
                return m(batch)
        return go

    res = timed_ab({"bf16 autocast": run(model), "fp32": run(model, amp=False)}, args.reps, n, sync)
    bl.print_table("CUDA precision", AB_HEAD, ab_rows(res, "bf16 autocast"))
    out["precision"] = res
    torch.backends.cudnn.benchmark = False
    fresh = copy.deepcopy(model)
    res_off = timed_ab({"cudnn.benchmark off": run(fresh)}, args.reps, n, sync)
    torch.backends.cudnn.benchmark = True
    res_on = timed_ab({"cudnn.benchmark on": run(model)}, args.reps, n, sync)
    res = {**res_off, **res_on}
    bl.print_table("cuDNN autotuning", AB_HEAD, ab_rows(res, "cudnn.benchmark off"))
    out["cudnn_benchmark"] = res
    t = time.perf_counter()
    compiled = Session.load(ckpt, device, compile_model=True).model
    run(compiled)()
    sync()
    compile_s = time.perf_counter() - t
    res = timed_ab({"eager": run(model), "torch.compile": run(compiled)}, args.reps, n, sync)
    bl.print_table(f"torch.compile (first call incl. compilation: {compile_s:.1f} s)", AB_HEAD,
                   ab_rows(res, "eager"))
    out["compile"] = {**res, "compile_s": compile_s}
    host = batch.cpu()
    pinned = host.pin_memory()
    res = timed_ab({"pageable copy": lambda: host.to(device, non_blocking=True),
                    "pinned, non_blocking": lambda: pinned.to(device, non_blocking=True)},
                   max(args.reps, 10), n, sync)
    bl.print_table("host → device copy of one batch", AB_HEAD, ab_rows(res, "pageable copy"))
    out["copy"] = res
    return out


def section_e2e(args: argparse.Namespace, ckpt: Path, paths: list[str]) -> dict[str, Any]:
    import bench_predict as bp

    cores = os.cpu_count() or 1
    grid = args.e2e_grid or f"{cores}:{max(1, cores - 1)},{cores}:0,1:1,{cores}:{cores}"
    rows, out = [], {}
    base = None
    for item in grid.split(","):
        threads, workers = (int(v) for v in item.split(":"))
        ns = argparse.Namespace(**{**vars(args), "threads": threads, "workers": workers,
                                   "compile": False})
        run = bp.run_e2e(ns, ckpt, paths)
        rates = bp.e2e_rates(run, len(paths), args.batch_size)
        base = base or rates["wall_ips"]
        rows.append([f"{threads} threads, {workers} workers", bl.num(rates["wall_ips"]),
                     bl.num(rates["scoring_ips"]), bl.ratio(rates["wall_ips"], base),
                     bl.mib(run.peak_pss)])
        out[item] = {**rates, **run.summary()}
    bl.print_table(f"attnmel predict, {len(paths)} photos: OMP threads × decoding workers",
                   ["setting", "images/s wall", "images/s scoring", "vs first", "peak PSS"], rows)
    return out


if __name__ == "__main__":
    main()
