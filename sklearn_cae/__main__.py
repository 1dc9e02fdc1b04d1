"""``python -m sklearn_cae``: the ``sklearn-cae`` command line (``demo``, ``evaluate``, ...)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m sklearn_cae"))
