"""The ``sklearn-cae`` command line: evaluate, fit, predict, featurize and export, no code.

DATA is an ImageFolder-style folder (one sub-folder of images per class), a MedMNIST
name (read from ``$MEDMNIST_ROOT`` offline), or an ``.npz`` file with ``images`` and
``labels`` arrays (and optionally ``class_names``), read by
:func:`sklearn_cae.datasets.load_dataset`; ``evaluate`` cross-validates with
:mod:`sklearn_cae.evaluation` the pipelines of :mod:`sklearn_cae.pipelines`. Heavy
imports happen inside the commands, so ``--help`` answers at once.

Results go to standard output; progress (a line per step, fold and method, and tqdm
bars when standard error is a terminal), warnings and errors to standard error, each
warning and error on one line. ``-q`` silences progress, ``-v`` adds the featurizers'
own bars and the auto-encoder's epoch table (colour codes only on a terminal).

Files are written atomically: a model or CSV is written to a temporary file in the
destination folder and renamed over the destination only once complete, so a full
disk, a file-size limit or Ctrl-C never leaves a truncated file in place of a good one.

One module per command. A command module (``evaluate.py``, ``fit.py``,
``predict.py``, ``featurize.py``, ``export.py``, ``cache.py``, ``demo.py``) holds

* ``NAME``, the command's name;
* ``add_parser(subparsers) -> None``, which adds the command's parser (its help, its
  own arguments, and the shared option groups of ``_options.py``) to ``subparsers``;
* ``run(args) -> None``, which does the work; a user error is a ``CLIError``
  (``_console.py``), printed by :func:`main` as one line.

A new command is one such module plus its line in ``_COMMANDS`` below. What several
commands share has its own module: ``_options.py`` (option groups, their value
parsers, the checks made before any work, and the pipelines the model options give),
``_data.py`` (the ``DATA`` argument: loading, ``--split``, ``--max-images``, class
checks, image numbers in messages), ``_io.py`` (image arguments, output checks, saving
and loading models: :func:`~._io.load_model` is the one way a command loads one) and
``_console.py`` (one-line errors and warnings, the epoch table).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings

from .._utils import error_reason
from . import cache, demo, evaluate, export, featurize, fit, predict
from ._console import CLIError, warning_printer
from ._options import join_option_values

__all__ = ["build_parser", "main"]

# The commands, in the order --help lists them.
_COMMANDS = (evaluate, fit, predict, featurize, export, cache, demo)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help, never cutting a word at a hyphen (``--labelled-`` / ``fraction``).

    Lines break at spaces only, so an option or an example such as
    ``--intensity=-1000,400`` stays whole on one line.
    """

    def _split_lines(self, text, width):
        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.wrap(text, width, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.fill(
            text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
        )


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, formatter_class=_HelpFormatter, **kwargs):
        # The command parsers are _Parser too (argparse's default parser_class).
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        # One clear line instead of argparse's usage block.
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _CommandListFormatter(_HelpFormatter):
    """Lines the command list up however long a command's name.

    argparse measures the commands without their indent, so a name two characters
    longer than the others pushed its help to a line of its own.
    """

    def add_argument(self, action):
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS:
            for subaction in self._iter_indented_subactions(action):
                length = len(self._format_action_invocation(subaction)) + self._current_indent
                self._action_max_length = max(self._action_max_length, length)


def build_parser(prog: str = "sklearn-cae") -> argparse.ArgumentParser:
    """The argument parser of the ``sklearn-cae`` command."""
    parser = _Parser(
        prog=prog,
        formatter_class=_CommandListFormatter,
        description="Unsupervised deep transfer features for medical images (Ahn et al., ISBI "
        "2019): a frozen ImageNet CNN, a convolutional auto-encoder trained on its feature maps "
        "without labels, and an SVC on the pooled codes.",
        epilog=f"Run '{prog} COMMAND --help' for the options of a command.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None, prog: str = "sklearn-cae") -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments; ``sys.argv[1:]`` when None.
    prog : str, default="sklearn-cae"
        Program name shown in help and error messages.

    Returns
    -------
    int
        0 on success, 1 on an error (printed as one line on standard error), 2 on a
        usage error.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(join_option_values(argv))
    run = {command.NAME: command.run for command in _COMMANDS}[args.command]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = warning_printer(prog)
            run(args)
    except (CLIError, FileNotFoundError, ImportError, ValueError, TypeError, OSError) as exc:
        print(f"{prog}: error: {error_reason(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
