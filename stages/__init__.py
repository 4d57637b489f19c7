"""DAG stages: one module per stage, each a small script run as ``python -m stages.<name>``.

A stage reads its slice of params.yaml (only the keys it declares in :mod:`stages.registry`), calls the
library, and writes exactly its declared outputs, each to a temporary name that is renamed when complete.
"""
