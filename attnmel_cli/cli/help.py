"""``--help`` that reads cleanly at any width (an 80-column terminal, a pipe, a CI log): click's
plain layout, every option name whole, help text without the reST backticks of the docstrings,
and placeholders in capitals (PATH, N, X, TEXT) instead of Typer's ``<type>`` and ``{name}``."""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperCommand

# Typer's placeholder → the one shown (flags show none).
PLACEHOLDERS = {"path": "PATH", "str": "TEXT", "int": "N", "int range": "N", "float": "X",
                "float range": "X", "file": "FILE", "directory": "DIR", "bool": ""}
_TYPE = re.compile(r"\s*<([^<>]+)>(\.\.\.)?")
_TICKS = re.compile(r"``?([^`]+?)``?")


def plain_text(text: str) -> str:
    """Help text without reST/Markdown literal markup: ``x`` and `x` → x."""
    return _TICKS.sub(r"\1", text)


def plain_names(names: str) -> str:
    """An option's help column with Typer's ``<type>`` placeholders in capitals."""

    def swap(m: re.Match[str]) -> str:
        label = PLACEHOLDERS.get(m.group(1), re.sub(r"\W+", "_", m.group(1)).upper())
        return f" {label}{m.group(2) or ''}" if label else ""

    return _TYPE.sub(swap, names)


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def argument_name(param: Any) -> str:
    """PATH..., CKPT…: the argument's metavar (else its name) in capitals."""
    name = (param.metavar or param.name or "ARG").upper()
    return f"{name}..." if param.nargs != 1 else name


class PlainHelpCommand(TyperCommand):
    """A Typer command whose help is laid out by click, in plain words (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:  # the docstring's reST literals, as plain words
            self.help = plain_text(self.help)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if _is_argument(param):
                name = argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            if _is_argument(param):
                args.append((argument_name(param), plain_text(getattr(param, "help", None) or "")))
            elif (record := param.get_help_record(ctx)) is not None:
                opts.append((plain_names(record[0]), plain_text(record[1])))
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
