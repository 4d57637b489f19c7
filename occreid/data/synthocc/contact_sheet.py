"""A contact sheet for people: each test identity's queries beside its gallery images, labelled.

One row per identity: the id, then its query images (camera and hidden share), a divider, then its gallery
images from the other cameras. It is drawn from the written JPEG files, so it shows exactly what a model
will read, and lets a person check at a glance that the people look like people, that the same identity
is recognisable across cameras, and that the occlusions look like occlusions.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .config import SynthOccConfig
from .plan import ImageSpec

HEADER = 16  # title row
LABEL = 48  # identity column
CAPTION = 12  # text under each tile
PAD = 4  # space between tiles
DIVIDER = 12  # between queries and gallery
MAX_QUERY_TILES = 4
OCCLUDED_TEXT, WHOLE_TEXT = (170, 20, 20), (30, 30, 30)


def sheet_layout(cfg: SynthOccConfig) -> tuple[int, int, int]:
    """Rows (identities), query columns and gallery columns of the sheet."""
    return (min(cfg.contact_sheet_ids, cfg.num_test_ids), min(cfg.queries_per_id, MAX_QUERY_TILES),
            min(cfg.contact_sheet_gallery, cfg.gallery_per_id))


def contact_sheet_size(cfg: SynthOccConfig) -> tuple[int, int]:
    """(width, height) in pixels of the sheet that :func:`draw_contact_sheet` makes for ``cfg``."""
    rows, q_cols, g_cols = sheet_layout(cfg)
    tile_w, tile_h = cfg.width + PAD, cfg.height + CAPTION + PAD
    return LABEL + (q_cols + g_cols) * tile_w + DIVIDER, HEADER + rows * tile_h


def draw_contact_sheet(root: Path, plan: list[ImageSpec], shares: dict[ImageSpec, float],
                       cfg: SynthOccConfig) -> Image.Image:
    """The sheet for the dataset written under ``root`` (images read back from their files)."""
    rows, q_cols, g_cols = sheet_layout(cfg)
    sheet = Image.new("RGB", contact_sheet_size(cfg), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    q_x = LABEL
    g_x = LABEL + q_cols * (cfg.width + PAD) + DIVIDER
    draw.text((q_x, 2), "query", fill=WHOLE_TEXT, font=font)
    draw.text((g_x, 2), "gallery (other cameras)", fill=WHOLE_TEXT, font=font)
    test_ids = sorted({s.pid for s in plan if s.split == "query"})[:rows]
    for row, pid in enumerate(test_ids):
        y = HEADER + row * (cfg.height + CAPTION + PAD)
        draw.text((2, y + cfg.height // 2 - 6), f"id {pid:04d}", fill=WHOLE_TEXT, font=font)
        queries = sorted((s for s in plan if s.pid == pid and s.split == "query"), key=lambda s: s.index)
        gallery = sorted((s for s in plan if s.pid == pid and s.split == "gallery"), key=lambda s: s.index)
        for col, spec in enumerate(queries[:q_cols]):
            _tile(sheet, draw, font, root, spec, shares[spec], q_x + col * (cfg.width + PAD), y)
        for col, spec in enumerate(gallery[:g_cols]):
            _tile(sheet, draw, font, root, spec, shares[spec], g_x + col * (cfg.width + PAD), y)
        draw.line([(g_x - DIVIDER // 2 - 1, y), (g_x - DIVIDER // 2 - 1, y + cfg.height)], fill=(150, 150, 150))
    return sheet


def _tile(sheet: Image.Image, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
          root: Path, spec: ImageSpec, share: float, x: int, y: int) -> None:
    with Image.open(root / spec.folder / spec.file_name) as image:
        sheet.paste(image.convert("RGB"), (x, y))
        height = image.height
    caption = f"c{spec.cam + 1} {round(100 * share)}%" if spec.occluded else f"c{spec.cam + 1} whole"
    draw.text((x + 1, y + height), caption, fill=OCCLUDED_TEXT if spec.occluded else WHOLE_TEXT, font=font)
