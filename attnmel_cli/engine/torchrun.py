"""Whether this process runs under ``torchrun``, read from its environment without importing
torch (``prepare`` and ``explain`` refuse it; the commands check what a user typed before torch
loads, outside torchrun)."""

from __future__ import annotations

import os

from attnmel_cli.errors import AttnMelError


def under_torchrun(env: dict[str, str] | None = None) -> bool:
    """Whether torchrun started this process as one of several (``WORLD_SIZE`` > 1)."""
    value = (os.environ if env is None else env).get("WORLD_SIZE", "1")
    try:
        return int(value) > 1
    except ValueError:
        raise AttnMelError(
            f"WORLD_SIZE={value!r} is not an integer; start distributed runs with torchrun"
        ) from None


def refuse(command: str, hint: str = "run it in one process") -> None:
    """Stop a command that does not split its work when it runs under torchrun."""
    if under_torchrun():
        raise AttnMelError(
            f"{command} does not run under torchrun (every process would redo all the work); "
            f"{hint}"
        )
