"""Paper-size smoke run of every preset: the preset's own model (ViT-B/16 or CLIP ViT-B/16 at 256×128, its stride,
random weights — hub weights cannot be fetched here), 2 training iterations with its batch composition (P cut to
2, K kept) and one evaluation, through the real DAG (``dvc repro evaluate@<experiment>`` in a throw-away copy of
the project on a tiny synthocc rendered at 256×128). Proves each preset runs end to end; prints seconds per
training iteration and the peak memory of the largest stage process per preset.

    python benchmarks/paper_smoke.py                      # every preset (first experiment of each)
    python benchmarks/paper_smoke.py --presets dpm_occluded_duke clipreid_market1501

Generic over ``workflow/presets/*.yaml``: a new preset is smoke-run as it is added. Presets run one after another
(each builds its models in the stages' own processes); the time and memory columns are of this machine, noisy when
it is shared.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dag_fixtures import project_copy, tool_env  # noqa: E402

P = 2  # identities per batch on CPU (the presets' K is kept)
SMOKE_DATA = dict(num_train_ids=2, num_test_ids=3, images_per_id=10, queries_per_id=1, num_cameras=3, height=256,
                  width=128, contact_sheet_ids=1, contact_sheet_gallery=1)


def _no_weights(tree):
    """Every ``pretrained: default`` of the preset → random init (nothing can be downloaded here)."""
    if isinstance(tree, dict):
        return {k: (None if k == "pretrained" else _no_weights(v)) for k, v in tree.items()}
    return tree


def smoke_preset(doc: dict, experiment: str | None = None) -> tuple[dict, str]:
    """The preset rewritten for the smoke run: one experiment (the first), trained and tested on synthocc for one
    epoch of P = 2 identities, its dataset's per-dataset stage settings (``dataset_stages``) moved to synthocc with
    their trainings cut to one epoch (stage-1 prompts, the sps saliency head) and the occluder library cut by the
    weight-free classical backend (SAM ViT-H cannot be downloaded) — every model kept at paper size."""
    doc = _no_weights(copy.deepcopy(doc))
    names = list(doc["experiments"])
    name = experiment or names[0]
    entry = doc["experiments"][name]
    real = entry["dataset"]
    doc["experiments"] = {name: entry}
    entry["dataset"] = "synthocc"
    entry.pop("test_dataset", None)
    train = entry.setdefault("overrides", {}).setdefault("train", {})
    train.update(epochs=1, ids_per_batch=P, num_workers=0, log_period=1)
    doc.pop("datasets", None)
    stages = (doc.pop("dataset_stages", None) or {}).get(real)
    if stages:
        if "prompts" in stages:
            stages["prompts"].update(epochs=1, warmup_epochs=0, num_workers=0, batch_size=8)
        if "saliency" in stages:
            stages["saliency"].update(num_workers=0, batch_size=8)
            stages["saliency"].setdefault("sps", {}).update(epochs=1, warmup_epochs=0, ids_per_batch=P)
        if "occluders" in stages:  # no SAM checkpoint can be downloaded here: the weight-free backend cuts the objects
            stages["occluders"].update(backend="classical", image_max_side=256)
        doc["dataset_stages"] = {"synthocc": stages}
    return doc, name


def demo_params(params: dict) -> dict:
    """The demo params cut to what the smoke run needs: a 256×128 synthocc and no demo experiments."""
    params["datasets"]["synthocc"]["generator"].update(SMOKE_DATA)
    params["experiments"] = {}
    params["tables"]["tables"] = []
    params["evaluate"]["max_rank"] = 5
    return params


def run_preset(path: Path, workdir: Path) -> dict:
    """Smoke-run one preset file in ``workdir``; returns its row of the table."""
    doc, name = smoke_preset(yaml.safe_load(path.read_text()))
    from occreid.config import merge

    project = project_copy(workdir, change=lambda params: merge(demo_params(params), doc))
    env = tool_env(project)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=project, env=env, check=True)
    start = time.perf_counter()
    # The peak RSS of the largest stage process: the children's maximum, read by a wrapper process of its own
    # (so presets run one after another do not share one running maximum).
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    proc = subprocess.run([sys.executable, "-c", wrapper, "dvc", "repro", f"evaluate@{name}"], cwd=project, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{path.stem}: dvc repro evaluate@{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
    last = list(csv.DictReader((project / "data" / "train" / name / "history.csv").open()))[-1]
    metrics = json.loads((project / "reports" / "eval" / name / "metrics.json").read_text())
    from occreid.config import read_yaml
    from stages.common import resolve_sections

    resolved = resolve_sections(read_yaml(project / "params.yaml"), name, ("methods", "train"))
    backbone, train = resolved["methods"].backbone, resolved["train"]
    views = getattr(getattr(resolved["methods"], "transfer", None), "pairs_per_id", 0)
    pairing = getattr(resolved["methods"], "pairing", False) and resolved["methods"].transfer.mode != "none"
    batch = f"{train.ids_per_batch}x{train.images_per_id}" + (f"+{views}" if pairing and views else "")
    return {"preset": path.stem, "experiment": name, "backbone": f"{backbone.name} s{backbone.stride}", "batch": batch,
            "iterations": int(float(last["iterations"])), "s_per_iter": float(last["seconds"]) / float(last["iterations"]),
            "R1": metrics["subsets"]["all"]["R1"], "wall_s": wall, "peak_mb": peak_kb / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", help="preset names (default: every workflow/presets/*.yaml)")
    args = parser.parse_args(argv)
    paths = sorted((ROOT / "workflow" / "presets").glob("*.yaml"))
    if args.presets:
        paths = [p for p in paths if p.stem in args.presets]
    print("| preset | experiment | backbone | batch P×K(+views) | iterations | s / iteration | peak RSS (MB) "
          "| DAG wall (s) |")
    print("|---|---|---|---|--:|--:|--:|--:|", flush=True)
    failed = []
    for path in paths:  # one at a time: each row is printed when its run is done
        with tempfile.TemporaryDirectory() as tmp:
            try:
                r = run_preset(path, Path(tmp) / "p")
            except RuntimeError as e:
                failed.append(path.stem)
                print(f"| {path.stem} | FAILED | | | | | | |", flush=True)
                print(e, file=sys.stderr)
                continue
        print(f"| {r['preset']} | {r['experiment']} | {r['backbone']} | {r['batch']} | {r['iterations']} "
              f"| {r['s_per_iter']:.1f} | {r['peak_mb']:.0f} | {r['wall_s']:.0f} |", flush=True)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")

if __name__ == "__main__":
    main()
