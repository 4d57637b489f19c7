"""DAG stages: one module per stage, each a small script run as ``python -m stages.<name>``.

A stage reads its slice of params.yaml (only the keys it declares in :mod:`stages.registry`), calls the
library, and writes exactly its declared outputs, each to a temporary name that is renamed when complete.
"""

import os

# OpenMP threads that wait for work sleep instead of spinning. A stage's torch uses every core; on a machine
# where anything else runs, spinning threads fight it and the demo's tiny models step several times slower
# (benchmarks/threads_bench.py). Read by OpenMP when torch loads, so set before any stage imports torch; an
# OMP_WAIT_POLICY in the environment wins. It changes the timing, never the numbers.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
