"""``python -m faults.worker ARGS...``: the ``jukemir`` command with the fault suite's representations registered.

(``tests/`` must be on ``PYTHONPATH``; :func:`faults.helpers.cli_env` sets it.)
"""

from jukemir.cli import main
from jukemir.representations import REGISTRY

from .fakes import REGISTRY as FAKES

REGISTRY.update(FAKES)
raise SystemExit(main())
