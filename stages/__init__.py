"""DAG stages: one module per stage, each a small script run as ``python -m stages.<name>``.

A stage reads its slice of params.yaml (only the keys it declares in :mod:`stages.registry`), calls the
library, and writes exactly its declared outputs, each to a temporary name that is renamed when complete.
"""

# OpenMP's wait policy (read when torch loads, so before any stage imports it). A stage that has the cores to
# itself (`dvc repro` runs one job at a time) keeps OpenMP's default, threads spinning briefly between ops: the
# demo's tiny models then step ~1.5x faster than with sleeping threads. Jobs that share the cores (Snakemake
# running several at once) get OMP_WAIT_POLICY=PASSIVE from the Snakefile, since the spinning threads of
# concurrent jobs fight each other (a step several times slower). benchmarks/threads_bench.py measures both
# (idle and busy); an OMP_WAIT_POLICY in the environment always wins. It changes the timing, never the numbers.
