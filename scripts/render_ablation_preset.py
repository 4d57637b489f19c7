"""Write workflow/presets/dpmpp_occluded_duke_ablations.yaml from dpmpp_occluded_duke.yaml and the method's rows.

    python scripts/render_ablation_preset.py            # (re)write it
    python scripts/render_ablation_preset.py --check    # exit 1 when the file is stale

Why generated: each of its 27 experiments is self-contained (every setting stated), so the file is long and
repeats the full model's settings; writing it from ``occreid.methods.dpmpp``'s ABLATIONS / VARIANTS / SWEEPS and
the main preset keeps every row in step with both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from occreid.io import write_text  # noqa: E402
from occreid.presets import DPMPP_ABLATIONS, render_ablation_preset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args(argv)
    presets = ROOT / "workflow" / "presets"
    target = presets / f"{DPMPP_ABLATIONS[1]}.yaml"
    text = render_ablation_preset(presets)
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        print(f"{target} is {'up to date' if current == text else 'stale: run python scripts/render_ablation_preset.py'}")
        return 0 if current == text else 1
    write_text(target, text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
