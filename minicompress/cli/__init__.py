"""The `minicompress` command (`main.py`: the parser and the error handler; a module per group of commands)."""
from .common import EXIT_USAGE, CommandError
from .main import build_parser, main

__all__ = ["EXIT_USAGE", "CommandError", "build_parser", "main"]
