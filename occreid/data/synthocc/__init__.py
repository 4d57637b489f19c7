"""synthocc: a seeded generator of an occluded person re-ID dataset in Market-1501 layout.

``generate(out_dir, SynthOccConfig(...))`` writes ``bounding_box_train/``, ``query/``, ``bounding_box_test/``
(files ``<pid:04d>_c<cam>s1_<frame:06d>_01.jpg``), ``occlusion.csv`` and ``contact_sheet.png``. Pedestrians are
drawn from per-identity appearance (clothes, patterns, accessories, build) over real-photo scenes of each
camera, and occluded by real-photo objects or other pedestrians; see the modules for each part.
"""

from __future__ import annotations

from .config import SynthOccConfig
from .contact_sheet import contact_sheet_size
from .writer import CONTACT_SHEET, OCCLUSION_CSV, generate

__all__ = ["CONTACT_SHEET", "OCCLUSION_CSV", "SynthOccConfig", "contact_sheet_size", "generate"]
