"""``python -m sklearn_cae.cli``, as ``sklearn-cae``."""

import sys

from . import main

sys.exit(main())
