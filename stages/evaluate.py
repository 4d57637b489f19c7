"""Stage ``evaluate``: ``python -m stages.evaluate --experiment NAME [--params params.yaml]``.

Loads ``data/train/NAME/model.pt`` (the method is rebuilt from the config saved in it, so evaluation
declares no model params), extracts query and gallery features (with the query masks a masked method gives),
on the experiment's ``test_dataset`` (default: its training dataset; Occluded-REID is tested with a
Market-1501 model), scores them with the experiment's ``evaluate`` section (overrides merged) for all queries and, when the
records say which queries are occluded, the occluded and whole-body subsets, then writes
``reports/eval/NAME/metrics.json`` (the contract of :mod:`occreid.reports.collect`) and ``ranks.npz`` and
logs the metrics to MLflow. A user error prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from occreid.errors import OccreidError
from stages import common
from stages.params import PARAMS_FILE, from_dict, to_dict

log = logging.getLogger("occreid.stages.evaluate")
PREPARED = Path(common.PREPARED_DIR)
MODELS = Path("data/train")
OUT = Path("reports/eval")
BATCH_SIZE = 128  # images per forward pass while extracting features (no effect on the results)


def query_subsets(occluded: list[bool | None], wanted) -> dict[str, np.ndarray]:
    """Boolean query masks of the subsets to report: ``all`` always; ``occluded`` / ``whole_body`` when
    requested and every query's occlusion is known (a dataset that does not record it has no subsets)."""
    masks = {"all": np.ones(len(occluded), dtype=bool)}
    if occluded and all(o is not None for o in occluded):
        known = {"occluded": np.array([bool(o) for o in occluded]),
                 "whole_body": np.array([not o for o in occluded])}
        masks.update({name: mask for name, mask in known.items() if name in wanted})
    return masks


def metrics_document(experiment: str, dataset: str, method: str, result, masks: dict[str, np.ndarray],
                     **extra) -> dict:
    """metrics.json from the ranking of all queries: one entry per subset with at least one valid query."""
    from occreid.eval.metrics import subset_metrics as select
    from occreid.reports import make_metrics, subset_metrics

    subsets, cmc = {}, {}
    for name, mask in masks.items():
        part = result if name == "all" else select(result, mask)
        if part.num_valid == 0:
            log.warning("subset %s of %s has no query with a valid match: left out", name, experiment)
            continue
        subsets[name] = subset_metrics(part.cmc, part.mAP, part.mINP, int(mask.sum()), part.num_skipped)
        cmc[name] = [float(x) for x in part.cmc]
    return make_metrics(experiment, dataset, method, subsets, cmc, **extra)


def evaluate(experiment: str, params_path: str | Path = PARAMS_FILE) -> Path:
    """Evaluate experiment ``experiment``; returns its report folder."""
    import torch

    from occreid.data.datasets import create_dataset
    from occreid.data.loader import build_test_loader
    from occreid.data.transforms import TransformConfig, build_test_transform
    from occreid.engine import load_model
    from occreid.engine.context import resolve_device
    from occreid.eval import evaluate_features, extract_features, save_ranks
    from occreid.io import write_json
    from occreid.tracking import TrackingConfig, start_run, tracking_enabled, tracking_uri

    params = common.load("evaluate", experiment, params_path)
    spec = params.get(f"experiments.{experiment}")
    dataset, method_name = spec["dataset"], spec["method"]
    test_dataset = spec.get("test_dataset") or dataset
    cfg = params.experiment(experiment, ("evaluate",))["evaluate"]
    tracking = params.section(TrackingConfig, "tracking")

    method, trained = load_model(MODELS / experiment / "model.pt")
    if trained.get("method") != method_name or trained.get("dataset") != dataset:
        raise OccreidError(
            f"model.pt was trained for {trained.get('method')} on {trained.get('dataset')}, but experiment "
            f"'{experiment}' is {method_name} on {dataset}", path=MODELS / experiment / "model.pt",
            fix=f"re-run the train stage: dvc repro train@{experiment}")
    train_cfg = trained.get("train") or {}
    transforms = from_dict(TransformConfig, train_cfg.get("transforms"), key="train.transforms",
                           source=MODELS / experiment / "model.pt")
    device = resolve_device(train_cfg.get("device", "auto"))
    method.to(device).eval()
    splits = create_dataset(test_dataset, PREPARED / test_dataset, check_counts=False)  # prepare_data checked them

    def embed(images, camids):
        with torch.no_grad():
            return method.embed(images.to(device), camids.to(device))

    start = time.perf_counter()
    features = {}
    for split in ("query", "gallery"):
        loader = build_test_loader(getattr(splits, split), build_test_transform(transforms), batch_size=BATCH_SIZE,
                                   num_workers=int(train_cfg.get("num_workers", 0)))
        features[split] = extract_features(embed, loader, cfg.flip)
    (qf, q_mask), (gf, _) = features["query"], features["gallery"]
    ids = {f"{s}_{k}": np.array([getattr(r, k) for r in getattr(splits, s)]) for s in ("query", "gallery")
           for k in ("pid", "camid")}
    result = evaluate_features(qf, gf, ids["query_pid"], ids["gallery_pid"], ids["query_camid"],
                               ids["gallery_camid"], cfg, q_mask=q_mask)
    masks = query_subsets([r.occluded for r in splits.query], cfg.subsets)
    doc = metrics_document(experiment, test_dataset, method_name, result, masks, protocol=cfg.protocol,
                           metric=cfg.metric, rerank=cfg.rerank, seconds=round(time.perf_counter() - start, 1))
    out = OUT / experiment
    with start_run(experiment, "evaluate", uri=tracking_uri(tracking.uri), enabled=tracking_enabled(tracking.enabled),
                   config={"evaluate": to_dict(cfg)}, stage="evaluate", dataset=test_dataset,
                   method=method_name) as run:
        write_json(out / "metrics.json", doc)
        save_ranks(out / "ranks.npz", result)  # rows: queries, gallery indices in the sorted split order
        run.log_metrics({f"{s}/{k}": v for s, entry in doc["subsets"].items() for k, v in entry.items()})
        run.log_artifact(out / "metrics.json")
    all_ = doc["subsets"]["all"]
    log.info("evaluate %s: mAP %.1f%%, R1 %.1f%% over %d queries; metrics in %s", experiment, 100 * all_["mAP"],
             100 * all_["R1"], all_["num_queries"], out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="a key of params.yaml 'experiments'")
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    evaluate(args.experiment, args.params)


if __name__ == "__main__":
    common.run(main)
