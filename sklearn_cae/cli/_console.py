"""What the command prints besides its results: one-line errors and warnings, the epoch table."""

from __future__ import annotations

import re
import sys

_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


class CLIError(ValueError):
    """A user error, printed as one line."""


def warning_printer(prog: str):
    """A ``warnings.showwarning`` printing one line per warning, like errors."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)

    return show


def epoch_table_line(text: str) -> None:
    """skorch's epoch table, without its colour codes unless stdout is a terminal."""
    print(text if sys.stdout.isatty() else _ANSI_CODES.sub("", text), flush=True)
