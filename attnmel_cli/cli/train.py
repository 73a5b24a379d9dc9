"""``attnmel train``: the paper's recipe; prints the best checkpoint's path on stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnmel_cli.cli.console import err, log
from attnmel_cli.cli.options import DeviceOpt
from attnmel_cli.config import TrainConfig
from attnmel_cli.engine.distributed import from_env


def train_command(
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Prepared dir (from `attnmel prepare`).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run dir: last/best checkpoints, metrics.csv.")
    ],
    arch: Annotated[
        str, typer.Option(help="attnmel (AttnMel-CNN), mel-cnn, vgg16-gap or vgg16 (paper §3.2).")
    ] = "attnmel",
    backbone: Annotated[str, typer.Option(help="vgg16_bn or vgg16.")] = "vgg16_bn",
    pretrained: Annotated[
        bool, typer.Option("--pretrained/--no-pretrained", help="ImageNet initialisation (§3.1).")
    ] = True,
    pretrained_weights: Annotated[
        Path | None,
        typer.Option(help="Local torchvision VGG-16 ImageNet weights file (.pth or .safetensors)."),
    ] = None,
    roi: Annotated[
        str,
        typer.Option(help="Attention regularisation (Eq. 5): none, lesion, dermo or background."),
    ] = "none",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs.")] = 50,
    lr_step: Annotated[
        int, typer.Option(min=1, help="Divide the learning rate by 10 every this many epochs.")
    ] = 10,
    average_last: Annotated[
        int,
        typer.Option(min=0, help="Also save averaged.safetensors: the weights of the last K "
                     "epochs averaged (batch-norm statistics recomputed); 0 = off."),
    ] = 0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Images per step.")
    ] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="Initial SGD learning rate.")] = 0.01,
    oversample: Annotated[
        int, typer.Option(min=1, help="Times each melanoma is drawn per epoch.")
    ] = 4,
    width: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Channel width multiplier (1 = the paper's VGG-16)."),
    ] = 1.0,
    image_size: Annotated[
        int,
        typer.Option(help="Input side S, a multiple of 32: random S crops of the image resized to "
                     "S·256/224 (224 = the paper)."),
    ] = 224,
    seed: Annotated[
        int, typer.Option(help="Seed of initialisation, sampling and augmentation.")
    ] = 0,
    deterministic: Annotated[
        bool,
        typer.Option(help="Deterministic kernels: a rerun (or --resume) repeats the run exactly."),
    ] = False,
    device: DeviceOpt = "auto",
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-j", min=0,
                     help="Data-loading workers [default: cores - 1, at most 8]."),
    ] = None,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = True,
    cache_images: Annotated[
        bool,
        typer.Option("--cache-images/--no-cache-images",
                     help="Decode the training images once into RAM (when ≤ 1/4 of it)."),
    ] = True,
    resume: Annotated[
        bool,
        typer.Option(help="Continue the interrupted run in --out (same options; --epochs may "
                     "grow)."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a run already in --out.")] = False,
    sync_bn: Annotated[
        bool,
        typer.Option("--sync-bn/--no-sync-bn",
                     help="Under torchrun on GPUs: batch-norm statistics over the global batch "
                     "(SyncBatchNorm) instead of each GPU's share."),
    ] = False,
) -> None:
    """Train a model with the paper's recipe; print the best checkpoint's path on stdout.

    Several GPUs or machines: ``torchrun --nproc_per_node N -m attnmel_cli train …``
    (--batch-size stays the global batch).
    """
    from attnmel_cli.engine.trainer import train  # lazy: imports scikit-learn
    from attnmel_cli.io.run_dir import BEST

    result = train(
        TrainConfig(
            data=data, out=out, arch=arch, backbone=backbone, pretrained=pretrained,
            pretrained_weights=pretrained_weights, roi=roi, epochs=epochs, batch_size=batch_size,
            lr=lr, lr_step=lr_step, average_last=average_last, oversample=oversample, width=width,
            image_size=image_size, seed=seed,
            deterministic=deterministic, device=device, workers=workers, amp=amp,
            cache_images=cache_images, resume=resume, force=force, sync_bn=sync_bn,
        ),
        console=err,
    )
    if from_env().is_main:
        log.info("best epoch %d: validation AUC %.4f", result.best_epoch, result.best_auc)
        typer.echo(result.run_dir / BEST)
