"""How many query rows fit in one chunk, so peak memory stays under a budget whatever the gallery size.

A full query × gallery matrix is what blows up evaluation on large galleries (MSMT17: 11,659 × 82,161
float32 = 3.8 GB, plus the temporaries of ranking). Every evaluation step instead walks over the queries
in row blocks whose size is derived here from the budget and the per-row cost.
"""

from __future__ import annotations

from typing import Iterator

from ..errors import OccreidError

# Bytes per (query, gallery) entry while a distance block exists: the float32 block (the masked routes'
# numerator, divided in place) and the float32 denominator, with a margin for the block products.
DISTANCE_BYTES_PER_ENTRY = 12
# Bytes per entry of the ranking temporaries of a sub-block (candidate mask, a copy for the top-k
# search, int64 keys and indices of candidates / kept items).
RANKING_BYTES_PER_ENTRY = 24
# Ranking walks a distance block in sub-blocks of about this many entries: small enough to stay in
# cache, large enough that per-call overhead is negligible.
RANKING_ENTRIES_PER_BLOCK = 1 << 19


def rows_per_chunk(budget_mb: float, ng: int, bytes_per_entry: int, extra_bytes_per_row: int = 0) -> int:
    """Largest number of rows whose working memory (ng entries of ``bytes_per_entry`` each, plus
    ``extra_bytes_per_row``) fits in ``budget_mb``; at least 1 so progress is always possible."""
    if budget_mb <= 0:
        raise OccreidError(f"memory budget {budget_mb} MB must be positive", fix="set evaluate.memory_budget_mb > 0")
    per_row = max(1, ng * bytes_per_entry + extra_bytes_per_row)
    return max(1, int(budget_mb * 2**20) // per_row)


def distance_rows(budget_mb: float, ng: int, dim: int) -> int:
    """Query rows per distance chunk: the block and its temporaries, and the ranking of the block
    (done in small sub-blocks, so it adds a bounded amount), must fit the budget."""
    ranking = RANKING_ENTRIES_PER_BLOCK * RANKING_BYTES_PER_ENTRY / 2**20
    return rows_per_chunk(max(budget_mb - ranking, budget_mb / 2), ng, DISTANCE_BYTES_PER_ENTRY, 8 * dim)


def ranking_rows(ng: int) -> int:
    """Query rows per ranking sub-block."""
    return max(1, RANKING_ENTRIES_PER_BLOCK // max(1, ng))


def chunks(n: int, rows: int) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges covering ``range(n)`` in order."""
    rows = max(1, int(rows))
    for start in range(0, n, rows):
        yield start, min(n, start + rows)
