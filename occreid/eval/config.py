"""`EvalConfig`: how a test split is scored — the schema of params.yaml's ``evaluate`` section.

One dataclass carries every evaluation choice (metric, protocol, re-ranking, memory budget) so that a
stage builds it with ``stages.params.from_dict`` and DVC re-runs evaluation exactly when one of these
values changes. Values are checked here too, so that a config built in Python fails as early and as
clearly as one read from YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import OccreidError, did_you_mean

METRICS = ("cosine", "euclidean", "masked_cosine", "masked_euclidean")
PROTOCOLS = ("market", "cross_camera_free", "single_camera")
# Other names accepted for a protocol (the dataset a protocol was made for).
PROTOCOL_ALIASES = {"occluded_reid": "cross_camera_free"}
SUBSETS = ("all", "occluded", "whole_body")


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is a known distance, else raise an error listing the valid ones."""
    if metric not in METRICS:
        raise OccreidError(f"unknown distance metric '{metric}'", fix=did_you_mean(str(metric), METRICS))
    return metric


def canonical_protocol(protocol: str) -> str:
    """Resolve an alias (``occluded_reid``) to its protocol; raise on an unknown name."""
    protocol = PROTOCOL_ALIASES.get(protocol, protocol)
    if protocol not in PROTOCOLS:
        raise OccreidError(
            f"unknown evaluation protocol '{protocol}'",
            fix=did_you_mean(str(protocol), PROTOCOLS + tuple(PROTOCOL_ALIASES)),
        )
    return protocol


@dataclass
class EvalConfig:
    """Evaluation settings.

    metric: distance between query and gallery features (see ``occreid.eval.distance``); the masked
        metrics need query masks (DPM / DPM++).
    max_rank: length of the CMC curve.
    flip: average the features (and masks) of each image and its horizontal mirror.
    rerank, k1, k2, lambda_value: k-reciprocal re-ranking (Zhong et al. 2017) and its parameters.
    memory_budget_mb: working memory of one chunk (distance block + ranking temporaries). The features
        and the prepared gallery come on top; re-ranking also keeps an (nq+ng)·k1 neighbour table.
    protocol: which gallery items are removed per query (``market``, ``cross_camera_free`` alias
        ``occluded_reid``, ``single_camera``); see ``occreid.eval.metrics``.
    normalize: L2-normalise features before euclidean distances (cosine-type metrics are scale invariant).
    subsets: query groups to report: ``all``; ``occluded`` / ``whole_body`` = queries whose record says
        ``occluded`` True / False (computed with :func:`occreid.eval.subset_metrics`; skipped when the
        dataset has no occlusion labels).
    save_topk: gallery indices kept per query for ``ranks.npz`` (0 = none).
    """

    metric: Literal["cosine", "euclidean", "masked_cosine", "masked_euclidean"] = "cosine"
    max_rank: int = 50
    flip: bool = False
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    memory_budget_mb: int = 512
    protocol: Literal["market", "cross_camera_free", "occluded_reid", "single_camera"] = "market"
    normalize: bool = True
    subsets: tuple[str, ...] = ("all", "occluded", "whole_body")
    save_topk: int = 100

    def __post_init__(self) -> None:
        check_metric(self.metric)
        self.protocol = canonical_protocol(self.protocol)
        self.subsets = tuple(self.subsets)
        for name in self.subsets:
            if name not in SUBSETS:
                raise OccreidError(f"unknown query subset '{name}' in evaluate.subsets",
                                   fix=did_you_mean(name, SUBSETS))
        for name, low in (("max_rank", 1), ("k1", 1), ("k2", 1), ("memory_budget_mb", 1), ("save_topk", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise OccreidError(f"evaluate.{name} = {value!r} must be an integer >= {low}",
                                   fix=f"set evaluate.{name} to an integer >= {low}")
        if not 0.0 <= float(self.lambda_value) <= 1.0:
            raise OccreidError(
                f"evaluate.lambda_value = {self.lambda_value!r} is outside [0, 1]",
                fix="use a weight in [0, 1] (0.3 in Zhong et al. 2017)",
            )
