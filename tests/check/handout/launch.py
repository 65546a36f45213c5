"""Run one handout server (a test fixture) with ``random`` seeded from ``HANDOUT_SEED``.

Usage: ``HANDOUT_PORT=5050 HANDOUT_SEED=1 python launch.py text_server.py``. The server's
file is run unchanged, as ``__main__``, with this folder first on ``sys.path`` (for the
handout's ``import utils``).
"""

import os
import random
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
random.seed(int(os.environ.get("HANDOUT_SEED", "0")))
runpy.run_path(os.path.join(HERE, sys.argv[1]), run_name="__main__")
