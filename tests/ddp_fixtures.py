"""Test helpers for data-parallel training: a toy dataset, deterministic tiny methods, and a driver script.

Run as a script (``torchrun --nproc-per-node 2 tests/ddp_fixtures.py --records R --out DIR``) it trains each
case of :data:`CASES` with :func:`occreid.engine.fit` under the process group torchrun set up and, on rank 0,
saves the parameters and the history of every case; the tests train the same cases in one process and
compare. Everything random is switched off (no augmentation, no drop-path): the ranks would otherwise draw
their own random numbers, and the runs could not be compared number by number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


NUM_IDS, PER_ID, H, W = 8, 4, 64, 32
WORLD = 2  # processes of the distributed runs
# name -> (method, batch scope): the exact mode for every method, the references' mode for vit
CASES = {"vit_global": ("vit", "global"), "dpm_global": ("dpm", "global"), "dpmpp_global": ("dpmpp", "global"),
         "vit_rank": ("vit", "rank")}
_VIT = {"name": "vit_tiny", "img_size": [H, W], "drop_path": 0.0}
_CLIP = {"name": "clip_tiny", "pretrained": None, "img_size": [H, W], "stride": None, "sie": True, "sie_coef": 1.0,
         "sie_mode": "cls", "drop_path": 0.0}
# DPM++ without its stage inputs (no anchoring, cut-and-paste views): occlusion pairs in every batch, a varying
# number of them per process (a view is occluded with p = 0.5), the masked triplet and the pair consistency
METHOD_CONFIGS = {
    "vit": {"backbone": _VIT},
    "dpm": {"backbone": _VIT},
    "dpmpp": {"backbone": _CLIP, "anchor_init": False, "anchor_mode": "none",
              "transfer": {"mode": "cut_paste", "p": 0.5, "pairs_per_id": 1}},
}


def write_toy_records(root: Path) -> list:
    """NUM_IDS identities × PER_ID images (2 cameras), each identity with its own colours and band."""
    from data_fixtures import toy_person_records

    return toy_person_records(root, NUM_IDS, PER_ID, H, W, band_step=6, band_height=6)


def save_records(records: list, path: Path) -> Path:
    path.write_text(json.dumps([[r.path, r.pid, r.camid] for r in records]))
    return path


def load_records(path: Path) -> list:
    from occreid.data.records import Record

    return [Record(p, pid, cam) for p, pid, cam in json.loads(Path(path).read_text())]


def train_config(gpus: int = 1, batch_scope: str = "global", epochs: int = 2):
    """P×K = 4×2 (one process: batch 8; two processes: 4 each), SGD with momentum, no random augmentation."""
    from occreid.engine import TrainConfig
    from stages.params import from_dict

    return from_dict(TrainConfig, {
        "epochs": epochs, "ids_per_batch": 4, "images_per_id": 2, "log_period": 100, "seed": 7,
        "optimizer": {"name": "sgd", "lr": 0.02}, "scheduler": {"warmup_epochs": 1, "warmup_factor": 0.5},
        "transforms": {"size": [H, W], "pad": 0, "flip_p": 0.0, "random_erasing_p": 0.0},
        "distributed": {"gpus": gpus, "batch_scope": batch_scope},
    })


def make_method(name: str, seed: int = 0):
    """A deterministic tiny method: vit_tiny without drop-path; DPM with its two-step update, mask generator
    (batch norm inside), summed head-enrich loss and ArcFace; DPM++ on clip_tiny (:data:`METHOD_CONFIGS`)."""
    from occreid.engine.seeding import seed_everything
    from occreid.methods import create_method

    seed_everything(seed)
    return create_method(name, METHOD_CONFIGS[name], NUM_IDS, 2)


def per_share_vit(world: int = WORLD):
    """vit trained as ``batch_scope: rank`` trains, in one process: each 1/world share of a batch gets its own
    forward, batch norm and losses, and the step follows the mean of the shares' gradients (an independent
    route to the references' data-parallel update)."""
    from occreid.methods.vit import VitMethod

    class PerShareVit(VitMethod):
        def train_step(self, batch, ctx):
            ctx.zero_grad("main")
            n = len(batch["pid"]) // world
            total = 0.0
            for r in range(world):
                share = {k: v[r * n : (r + 1) * n] for k, v in batch.items()}
                loss = sum(self.losses(share).values())
                (loss / world).backward()
                total += loss.item()
            ctx.step("main")
            return {"loss": total / world}

    reference = make_method("vit")
    method = PerShareVit(reference.cfg, NUM_IDS, 2)
    method.load_state_dict(reference.state_dict())
    return method


def run_case(name: str, records: list, out: Path, gpus: int = 1) -> tuple[dict, list]:
    """Train case ``name`` as ``gpus`` processes (this one among them); returns (parameters on the CPU,
    history)."""
    from occreid.engine import fit

    method_name, scope = CASES[name]
    method = make_method(method_name)
    history = fit(method, records, train_config(gpus, scope), out / name, resume=False)
    return {k: v.detach().cpu().clone() for k, v in method.named_parameters()}, history


def main(argv: list[str] | None = None) -> None:
    """Under torchrun: train ``--cases`` as :data:`WORLD` processes; rank 0 saves ``OUT/<case>.pt``."""
    import torch

    from occreid.engine.distributed import launched_rank

    parser = argparse.ArgumentParser()
    parser.add_argument("--records", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    records = load_records(Path(args.records))
    out = Path(args.out)
    for name in args.cases:
        params, history = run_case(name, records, out, gpus=WORLD)
        if launched_rank() == 0:
            torch.save({"params": params, "history": history}, out / f"{name}.pt")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
