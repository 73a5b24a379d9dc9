"""The image files a command works on: PATH arguments (files, folders, ``-`` for stdin) expanded
in a stable order, and the ``--shard I/N`` blocks of them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from attnmel_cli.data.decode import IMAGE_SUFFIXES
from attnmel_cli.errors import AttnMelError

log = logging.getLogger("attnmel")

# Files that sit beside ISIC photos but are not photos (masks, superpixel index images).
NON_PHOTO_ENDINGS = ("_segmentation.png", "_superpixels.png")


def _is_photo(path: Path) -> bool:
    name = path.name.lower()
    return (
        path.suffix.lower() in IMAGE_SUFFIXES
        and not name.endswith(NON_PHOTO_ENDINGS)
        and not name.startswith(".")
    )


def expand_inputs(items: Iterable[str], *, recursive: bool = False) -> Iterator[str]:
    """Files as given; folders → their image files (sorted; ``recursive`` walks subfolders).

    A path that does not exist is passed through, so that it becomes an error record.
    """
    for item in items:
        path = Path(item)
        if not path.is_dir():
            yield item
            continue
        found = path.rglob("*") if recursive else path.iterdir()
        files = sorted(p for p in found if p.is_file() and _is_photo(p))
        if not files:
            log.warning(
                "%s: no image files found%s", path, "" if recursive else " (try --recursive)"
            )
        yield from (str(p) for p in files)


def read_path_list(lines: Iterable[str]) -> Iterator[str]:
    """Paths from a stream, one per line (blank lines skipped); used as data, never via a shell."""
    for line in lines:
        line = line.rstrip("\r\n")
        if line.strip():
            yield line


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → (I, N) with 0 ≤ I < N."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise AttnMelError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise AttnMelError(f"--shard {text}: need 0 ≤ I < N")
    return index, count


def shard(items: Sequence[str], index: int, count: int) -> list[str]:
    """The ``index``-th of ``count`` contiguous, near-equal blocks of ``items``.

    Concatenating the outputs of shards 0 … N-1 gives the unsharded output, in input order.
    """
    n = len(items)
    return list(items[index * n // count : (index + 1) * n // count])


def collect_inputs(
    paths: Sequence[str], recursive: bool, shard_spec: str | None = None
) -> list[str]:
    """Expand PATH arguments (``-`` reads paths from stdin, one per line); keep one shard."""
    items: list[str] = []
    for item in paths:
        items.extend(read_path_list(sys.stdin) if item == "-" else [item])
    inputs = list(expand_inputs(items, recursive=recursive))
    if not inputs:
        raise AttnMelError("no images to score (empty folder or empty list on stdin)")
    if shard_spec is not None:
        index, count = parse_shard(shard_spec)
        inputs = shard(inputs, index, count)
        log.info("shard %d/%d: %d images", index, count, len(inputs))
    return inputs
