"""Add ``train_image_ids`` to a checkpoint trained before attnmel recorded them (0.2), so that
``evaluate`` finds its training images by id on any data (e.g. the ISIC 2016 photos, 120 of which
are ISIC 2017 training images).

The ids come from the prepared dir the checkpoint was trained on, which must be that very dir
(its data fingerprint must equal the checkpoint's), through the checkpoint's own ``train_splits``
or ``folds``/``fold``/``seed``: the rows training used; or from one of the checkpoint's other
``sources`` (a further ``--data`` dir, or the first stage it was ``--init`` from): that dir's
train and val images. The ids are added to those already recorded. The tensors are copied
unchanged; the file is rewritten (atomically) with the one new header key. Export the ONNX
model again after it (its metadata holds the checkpoint's SHA-256):

    python scripts/record_train_ids.py weights/attnmel-default.safetensors prepared/isic2017
    attnmel export weights/attnmel-default.safetensors --out weights/attnmel-default.onnx --force
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnmel_cli.config import TrainConfig
from attnmel_cli.data.id_set import decode_ids, encode_ids, union_ids
from attnmel_cli.data.manifest import data_fingerprint, read_manifest
from attnmel_cli.data.mix import EXTRA_SPLITS
from attnmel_cli.data.prepare import prepared_crop_fraction
from attnmel_cli.engine.setup import split_rows
from attnmel_cli.io.atomic import atomic_path
from attnmel_cli.io.checkpoint import CheckpointMeta, read_tensors, save_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("prepared", type=Path, help="the prepared dir the checkpoint was trained on")
    args = p.parse_args()
    tensors, header = read_tensors(args.checkpoint)
    meta = CheckpointMeta.from_header(args.checkpoint, header)
    rows = read_manifest(args.prepared)
    fingerprint = data_fingerprint(rows, prepared_crop_fraction(args.prepared))
    others = {s.get("fingerprint"): s for s in meta.sources if s.get("role") != "target"}
    if fingerprint == meta.data_fingerprint:
        cfg = meta.train_config
        config = TrainConfig(data=args.prepared, out=Path("."),
                             train_splits=cfg.get("train_splits", "train"),
                             folds=int(cfg.get("folds", 0)), fold=int(cfg.get("fold", 0)),
                             seed=int(cfg.get("seed", 0)))
        train_rows, _ = split_rows(config, rows)
    elif fingerprint in others:  # a further source, or a first stage (--init): train + val
        train_rows = [r for r in rows if r.split in EXTRA_SPLITS]
    else:
        raise SystemExit(f"{args.prepared}: data fingerprint {fingerprint[:12]}… is neither the "
                         f"checkpoint's {meta.data_fingerprint[:12] or '(none)'}… nor one of its "
                         "sources': not its data")
    ids = union_ids(encode_ids(r.image_id for r in train_rows), meta.train_image_ids)
    with atomic_path(args.checkpoint, overwrite=True) as tmp:
        save_file(tensors, str(tmp), {**header, "train_image_ids": ids})
    print(f"{args.checkpoint}: recorded {len(decode_ids(ids))} training image ids "
          f"({len(ids)} characters)")


if __name__ == "__main__":
    main()
