"""``python -m faults.worker ARGS...``.

The ``jukemir`` command with the fault suite's representations registered.

(``tests/`` must be on ``PYTHONPATH``; :func:`faults.helpers.cli_env` sets it.)
"""

from jukemir.cli import main
from jukemir.representations import REGISTRY

from .fakes import REGISTRY as FAKES

REGISTRY.update(FAKES)
if __name__ == "__main__":  # not in the worker processes that spawn starts (they import this module)
    raise SystemExit(main())
