"""Data-parallel runs under ``torchrun`` (one process per GPU, one node or several).

``torchrun --nproc_per_node N -m attnmel_cli train|predict|evaluate …`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous variables); :func:`process_group` reads them,
picks each rank's device (``cuda:LOCAL_RANK``, or the CPU), and opens the process group (NCCL on
CUDA, gloo on the CPU). Outside torchrun, or with ``WORLD_SIZE=1``, every helper here is a no-op
and the commands run exactly as in a single process.

Conventions shared by the commands:
- rank 0 ("main") is the only one that reads the run dir and writes any file or stdout; setup
  that may fail with a user error runs on main first and is relayed to the others
  (:meth:`Dist.on_main`), so a bad flag gives one message, not one per rank;
- work is split into contiguous blocks in rank order (:meth:`Dist.bounds`, the same blocks as
  ``--shard``), so gathering the blocks in rank order restores input order;
- ``--batch-size`` stays the global batch: each rank takes ``batch_size / WORLD_SIZE`` images of
  every step (:func:`make_sampler`), so the learning-rate recipe does not depend on the GPU count.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from attnmel_cli.config import torchrun_env
from attnmel_cli.data.sampler import OversamplingSampler, ShardedOversamplingSampler
from attnmel_cli.engine.inference import resolve_device
from attnmel_cli.errors import AttnMelError
from attnmel_cli.parallel import per_process

log = logging.getLogger("attnmel")
T = TypeVar("T")


class RelayedError(AttnMelError):
    """Rank 0's user error, raised again on the other ranks (the CLI prints it once, on rank 0)."""

    relayed = True


@dataclass(frozen=True)
class Dist:
    """This process's place in the run; ``world == 1`` outside torchrun (all helpers no-ops)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's contiguous block of ``n`` items (``--shard``'s blocks)."""
        return self.rank * n // self.world, (self.rank + 1) * n // self.world

    def local_batch(self, batch_size: int) -> int:
        """Images per step on this rank when ``batch_size`` is the global batch."""
        if batch_size % self.world:
            raise AttnMelError(
                f"--batch-size {batch_size} is the global batch; it must be divisible by the "
                f"{self.world} processes"
            )
        return batch_size // self.world

    def workers(self, default: int) -> int:
        """A per-process share of ``default`` data-loading workers (the node's cores are shared)."""
        return per_process(default, self.local_world)

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and hand its result (or its AttnMelError) to every rank."""
        if not self.enabled:
            return fn()
        box: list[Any] = [None]
        failure: BaseException | None = None
        if self.is_main:
            try:
                box = [("ok", fn())]
            except AttnMelError as exc:
                failure, box = exc, [("error", str(exc), exc.exit_code)]
            except BaseException as exc:
                failure, box = exc, [("error", f"rank 0 failed: {exc!r}", 1)]
        tdist.broadcast_object_list(box, src=0)
        if failure is not None:
            raise failure
        if box[0][0] == "error":
            err = RelayedError(box[0][1])
            err.exit_code = box[0][2]
            raise err
        return box[0][1]

    def gather(self, local: list[T]) -> list[T]:
        """Every rank's ``local`` list, concatenated in rank order, on every rank."""
        if not self.enabled:
            return local
        parts: list[Any] = [None] * self.world
        tdist.all_gather_object(parts, local)
        return [x for part in parts for x in part]

    def collect(self, items: Iterable[T]) -> Iterable[T]:
        """``items`` as they come in a single process (streamed); under torchrun every rank's
        items, gathered in rank order on every rank (so blocks from :meth:`bounds` come back in
        input order)."""
        return self.gather(list(items)) if self.enabled else items

    def sum(self, *values: Tensor | float) -> list[Tensor]:
        """Element-wise sums over the ranks, each as a tensor of its own dtype (summed in float64
        on the first tensor's device)."""
        tensors = [v if isinstance(v, Tensor) else torch.tensor(v) for v in values]
        if not self.enabled:
            return tensors
        device = next((v.device for v in values if isinstance(v, Tensor)), torch.device("cpu"))
        flat = torch.cat([t.to(device, torch.float64).reshape(-1) for t in tensors])
        tdist.all_reduce(flat)
        out, at = [], 0
        for t in tensors:
            out.append(flat[at:at + t.numel()].reshape(t.shape).to(t.dtype))
            at += t.numel()
        return out

    def broadcast_state(self, model: nn.Module, *, buffers_only: bool = False) -> None:
        """Copy rank 0's parameters and buffers (or only buffers) to every rank, in place."""
        if not self.enabled:
            return
        tensors = list(model.buffers()) if buffers_only else list(model.state_dict().values())
        with torch.no_grad():
            for t in tensors:
                tdist.broadcast(t, src=0)

    def average_buffers(self, model: nn.Module) -> None:
        """Mean of each floating-point buffer (batch-norm running statistics) over the ranks."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in model.buffers():
                if t.is_floating_point():
                    tdist.all_reduce(t)
                    t /= self.world

    def wrap(self, model: nn.Module, device: torch.device, *, sync_bn: bool = False) -> nn.Module:
        """``model`` in DistributedDataParallel (SyncBatchNorm first with ``sync_bn``).

        DDP copies rank 0's weights to every rank here, so only rank 0 needs to load them. The
        layers stay those of ``model`` (SyncBatchNorm keeps the parameter objects and state-dict
        keys), so ``model`` itself is what gets saved: no ``module.`` prefix.
        """
        if not self.enabled:
            if sync_bn:
                log.info("--sync-bn has no effect in a single process")
            return model
        if sync_bn:
            if device.type != "cuda":
                raise AttnMelError("--sync-bn needs CUDA devices (SyncBatchNorm has no CPU kernel)")
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
        )


SINGLE = Dist()


def from_env(env: dict[str, str] | None = None) -> Dist:
    """This process's place as torchrun describes it (``SINGLE`` outside torchrun)."""
    place = torchrun_env(env)
    if place is None:
        return SINGLE
    rank, world, local_rank, local_world = place
    return Dist(rank=rank, world=world, local_rank=local_rank, local_world=local_world)


def device_for(d: Dist, name: str) -> torch.device:
    """The device of this rank: ``auto``/``cuda`` → ``cuda:LOCAL_RANK`` (else the CPU)."""
    if not d.enabled:
        return resolve_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = resolve_device(name)
    if device.type == "cuda":
        if device.index is not None:
            raise AttnMelError(
                f"--device {name}: under torchrun pass --device cuda (or auto); rank r uses "
                "cuda:LOCAL_RANK (restrict GPUs with CUDA_VISIBLE_DEVICES)"
            )
        if d.local_rank >= torch.cuda.device_count():
            raise AttnMelError(
                f"LOCAL_RANK {d.local_rank} but only {torch.cuda.device_count()} CUDA devices; "
                "lower --nproc_per_node"
            )
        return torch.device("cuda", d.local_rank)
    if device.type != "cpu":
        raise AttnMelError(f"--device {name}: torchrun runs use CUDA (NCCL) or the CPU (gloo)")
    return device


@contextlib.contextmanager
def process_group(device_name: str = "auto") -> Iterator[tuple[Dist, torch.device]]:
    """This process's :class:`Dist` and device, with the process group open while inside.

    A group opened by an outer caller is reused (and left open). Ranks other than 0 log only
    warnings and errors.
    """
    d = from_env()
    device = device_for(d, device_name)
    if not d.enabled or tdist.is_initialized():
        yield d, device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        tdist.init_process_group("nccl", device_id=device)
    else:
        tdist.init_process_group("gloo")
    attnmel_log = logging.getLogger("attnmel")
    saved_level = attnmel_log.level
    if not d.is_main:
        attnmel_log.setLevel(logging.WARNING)
    log.info("distributed: %d processes (%s), %d per node", d.world,
             "NCCL" if device.type == "cuda" else "gloo", d.local_world)
    try:
        yield d, device
    finally:
        attnmel_log.setLevel(saved_level)
        tdist.destroy_process_group()


def make_sampler(
    d: Dist, labels: Sequence[int], factor: int, seed: int, batch_size: int, passes: int = 1,
    sources: Sequence[int] | None = None, weights: Sequence[float] | None = None,
) -> OversamplingSampler:
    """The training sampler: the whole epoch, or this rank's share of it (global ``batch_size``);
    ``sources``/``weights``: each item's source and each source's share per pass."""
    if not d.enabled:
        return OversamplingSampler(labels, factor, seed, passes, sources, weights)
    return ShardedOversamplingSampler(
        labels, factor, seed, passes, sources, weights, rank=d.rank, world=d.world,
        batch_size=batch_size,
    )
