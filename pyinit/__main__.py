"""Entry point for `python -m pyinit` and for the pyz (`python3 pyinit.pyz`)."""

import sys

from pyinit import _bootstrap

_bootstrap.isolate()

from pyinit.cli import main  # noqa: E402 - only after isolate() has cleaned sys.path

sys.exit(main())
