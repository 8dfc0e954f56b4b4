"""The `arq` command: one module per subcommand; each parses, calls the library, prints."""

from arq.cli.dispatch import cli, main

__all__ = ["cli", "main"]
