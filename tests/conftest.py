import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import kill_leftovers


@pytest.fixture(autouse=True)
def _no_leftover_servers() -> Iterator[None]:
    yield
    kill_leftovers()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A command run through ``main()`` configures socklab's logging for the whole process
    (its handler, its level, loggers it turns down): undo it, so that later tests see
    their log records."""
    root = logging.getLogger("socklab")
    handlers, level, propagate = list(root.handlers), root.level, root.propagate
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith("socklab.") and isinstance(logger, logging.Logger)
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = propagate
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("socklab.") and isinstance(logger, logging.Logger):
            logger.setLevel(levels.get(name, logging.NOTSET))
