"""Entry point for `python -m pyinit` and for the pyz (`python3 pyinit.pyz`)."""

import gc

# No garbage collection during start-up: a full collection triggered by the
# imports costs more than any module pyinit loads. runner.run() turns it back
# on before the loop starts (see there).
gc.disable()

from pyinit import _bootstrap  # noqa: E402 - after gc.disable(), on purpose

_bootstrap.isolate()

from pyinit.cli import main  # noqa: E402 - only after isolate() has cleaned sys.path

_bootstrap.exit_now(main())
