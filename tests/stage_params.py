"""Test helper: a complete, valid params.yaml for running one per-dataset stage (prompts, saliency, spt_sets).

Those stages validate the whole file and read only their declared section through stages.common, so a test
needs the project's params with the CLIP experiments on synthocc (which make the prompts / saliency /
spt_sets jobs exist) and one CLIP backbone shared by those experiments and the stages' sections.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from occreid.config import merge, read_yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_BACKBONE = {"name": "clip_tiny", "pretrained": None, "img_size": [64, 32], "stride": None, "sie": True,
                 "sie_coef": 1.0, "sie_mode": "cls", "drop_path": None, "taps": None}


def stage_params(backbone: dict | None = None, **sections) -> dict:
    """The project's params reduced to its clipreid and dpmpp rows on synthocc, all on ``backbone`` (default:
    the demo's clip_tiny), with ``sections`` deep-merged in (``saliency={"grid": [8, 4]}``)."""
    params = copy.deepcopy(read_yaml(ROOT / "params.yaml"))
    bb = merge(DEMO_BACKBONE, backbone or {})
    params["experiments"] = {
        name: {"dataset": "synthocc", "method": name, "overrides": {"methods": {name: {"backbone": bb}}}}
        for name in ("clipreid", "dpmpp")}
    params["tables"]["tables"] = []
    for section in ("prompts", "saliency"):
        params[section]["backbone"] = bb
    for name, value in sections.items():
        params[name] = merge(params.get(name) or {}, value)
    return params


def write_params(folder: Path, params: dict) -> Path:
    path = Path(folder) / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def exit_code(main, argv: list[str]) -> int:
    """Run a stage's ``main`` as its ``python -m`` entry point does: 0, or the exit status of a user error."""
    from stages.common import run

    try:
        run(main, argv)
    except SystemExit as e:
        return int(e.code)
    return 0
