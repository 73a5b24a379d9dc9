"""attnmel's command line: the Typer app, shared option types, one module per command."""

from attnmel_cli.cli.app import app, main

__all__ = ["app", "main"]
