"""Evaluation engine: distances (incl. DPM's masked distance), exact ranking metrics without full sorts,
k-reciprocal re-ranking, feature extraction and per-query rank files — all chunked over queries so that
memory stays under ``EvalConfig.memory_budget_mb`` whatever the gallery size.

The contract (docs/ARCHITECTURE.md, "Evaluation")::

    compute_distance(qf, gf, metric, q_mask=None, normalize=True) -> (nq, ng) float32
    rank_metrics(dist, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="market") -> RankingResult
    evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, cfg, q_mask=None) -> RankingResult
    extract_features(embed_fn, loader, flip) -> (feats, masks | None)
"""

from .config import METRICS, PROTOCOLS, EvalConfig
from .distance import PreparedGallery, compute_distance, prepare_gallery
from .evaluate import evaluate_features, save_ranks, top_k
from .extract import extract_features
from .metrics import RankingResult, rank_metrics, subset_metrics
from .rerank import re_ranking, re_ranking_features

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "EvalConfig",
    "PreparedGallery",
    "RankingResult",
    "compute_distance",
    "evaluate_features",
    "extract_features",
    "prepare_gallery",
    "rank_metrics",
    "re_ranking",
    "re_ranking_features",
    "save_ranks",
    "subset_metrics",
    "top_k",
]
