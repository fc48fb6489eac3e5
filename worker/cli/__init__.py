"""The `unsubd` command line."""

from worker.cli.main import main, parser

__all__ = ["main", "parser"]
