"""synthocc building blocks: occluder placement, drawing, identities, plan, cameras — without writing files."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from occreid.data.synthocc.cameras import capture, sample_cameras
from occreid.data.synthocc.compose import render_image
from occreid.data.synthocc.config import SynthOccConfig
from occreid.data.synthocc.identity import appearance_key, passerby, sample_identity
from occreid.data.synthocc.occluders import KINDS, Figure, exact_box, hidden_shares, make_sheet, occlude
from occreid.data.synthocc.plan import build_plan, split_ids
from occreid.data.synthocc.render import Pose, render_person

SIZE = (64, 32)


def test_hidden_shares_known_answer():
    person = np.zeros((4, 3), bool)
    person[1:4, 1] = True  # a 3-pixel vertical stick in column 1
    rows = np.zeros((8, 3), bool)
    rows[4:] = True  # a box whose top edge is at sheet row 4 (the image height)
    # window offset k shows sheet rows k..k+3: the box covers image rows 4-k.. -> hides rows >= 4-k of the stick
    assert np.allclose(hidden_shares(person, rows, axis=0), [0, 1 / 3, 2 / 3, 1, 1])
    cols = np.zeros((4, 9), bool)
    cols[:, 4] = True  # a one-pixel pole in the middle of a 3x-wide sheet
    # window offset k shows sheet columns k..k+2: the pole is at image column 4-k; it hides the stick at k=3
    assert np.allclose(hidden_shares(person, cols, axis=1), [0, 0, 0, 1, 0, 0, 0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), low=st.floats(0.05, 0.7), span=st.floats(0.05, 0.3))
def test_occlude_hides_the_share_it_reports(seed, low, span):
    high = min(low + span, 0.95)
    rng = np.random.default_rng(seed)
    figure = Figure(cx=16.0, top=4.0, height=56.0)
    person = render_person(sample_identity(seed, 1 + seed % 50), Pose("front"), SIZE, figure.cx, figure.top,
                           figure.height)
    layer, share, kind = occlude(rng, person.alpha, figure, low, high, seed)
    visible = person.alpha > 0.5
    recomputed = (visible & (layer.alpha > 0.5)).sum() / visible.sum()
    assert share == recomputed
    assert low <= share <= high
    assert kind in KINDS
    assert layer.rgb.shape == (*SIZE, 3) and layer.alpha.shape == SIZE


def test_every_occluder_kind_can_be_drawn():
    figure = Figure(cx=16.0, top=4.0, height=56.0)
    for kind in KINDS:
        sheet = make_sheet(kind, np.random.default_rng(0), SIZE, figure, seed=0)
        h, w = sheet.layer.alpha.shape
        assert (h, w) == ((2 * SIZE[0], SIZE[1]) if sheet.axis == 0 else (SIZE[0], 3 * SIZE[1]))
        assert 0 < sheet.layer.alpha.mean() < 1
        assert np.all(sheet.layer.rgb <= sheet.layer.alpha[..., None] + 1e-6)  # premultiplied


def test_person_spans_the_requested_rows_and_mirrors():
    person = sample_identity(0, 5)
    layer = render_person(person, Pose("side", stride=0.8), (128, 64), 32.0, 10.0, 110.0)
    rows = np.flatnonzero((layer.alpha > 0.5).any(axis=1))
    assert abs(rows[0] - 10) <= 2 and abs(rows[-1] - 119) <= 2
    cols = np.flatnonzero((layer.alpha > 0.5).any(axis=0))
    assert cols[0] > 10 and cols[-1] < 54 and abs((cols[0] + cols[-1]) / 2 - 32) < 8  # a narrow figure near cx
    mirrored = render_person(person, Pose("side", mirrored=True, stride=0.8), (128, 64), 32.0, 10.0, 110.0)
    a, b = layer.alpha > 0.5, mirrored.alpha[:, ::-1] > 0.5
    assert (a & b).sum() / (a | b).sum() > 0.9  # a mirrored side view is the flipped figure
    assert not np.array_equal(layer.alpha, mirrored.alpha)


def test_views_differ_and_backpack_shows_from_the_back():
    person = next(p for p in map(lambda pid: sample_identity(0, pid), range(1, 400))
                  if p.backpack is not None and p.backpack not in (p.top, p.top_second, p.legs, p.hair, p.skin, p.bag))
    front = render_person(person, Pose("front"), (128, 64), 32.0, 8.0, 116.0)
    back = render_person(person, Pose("back"), (128, 64), 32.0, 8.0, 116.0)
    colour = np.asarray(person.backpack, np.float32) / 255.0
    # pixels within a small distance of the backpack colour (before shading), torso rows only
    def near(layer):
        rgb = layer.rgb[40:70] / np.maximum(layer.alpha[40:70, :, None], 1e-6)
        return (np.abs(rgb - colour).max(axis=-1) < 0.12).sum()
    assert near(back) > 3 * near(front) + 20


def test_identities_are_deterministic_distinct_and_paired():
    people = [sample_identity(7, pid) for pid in range(1, 201)]
    assert people == [sample_identity(7, pid) for pid in range(1, 201)]
    assert len({appearance_key(p) for p in people}) == len(people)
    for a, b in zip(people[1::2], people[2::2]):  # pids 2j and 2j+1: same colours on swapped parts
        assert (a.top, a.legs) == (b.legs, b.top)
        assert a.top != a.legs
    assert passerby(7, 3).pid == -1 and passerby(7, 3) == passerby(7, 3 + 64)


def test_plan_is_consistent():
    cfg = SynthOccConfig(seed=2, num_train_ids=7, num_test_ids=9, images_per_id=5, queries_per_id=2, num_cameras=4)
    plan = build_plan(cfg)
    assert plan == build_plan(cfg)
    train, test = split_ids(cfg)
    assert sorted(train + test) == list(range(1, 17))
    assert len({(s.folder, s.file_name) for s in plan}) == len(plan)
    for pid in test:
        q = {s.cam for s in plan if s.pid == pid and s.split == "query"}
        g = {s.cam for s in plan if s.pid == pid and s.split == "gallery"}
        assert len(q) == 1 and g and not q & g
    for pid in train + test:
        frames = [s.frame for s in sorted((s for s in plan if s.pid == pid), key=lambda s: s.index)]
        assert frames == sorted(set(frames))


def test_an_image_does_not_depend_on_drawing_order():
    cfg = SynthOccConfig(seed=5, num_train_ids=3, num_test_ids=3, images_per_id=4, height=64, width=32,
                         train_occluded_share=1.0)
    plan = build_plan(cfg)
    cameras = sample_cameras(cfg.seed, cfg.num_cameras, (cfg.height, cfg.width))
    forward = [render_image(s, cfg, cameras[s.cam]) for s in plan[:6]]
    backward = [render_image(s, cfg, cameras[s.cam]) for s in reversed(plan[:6])][::-1]
    for (a, sa, ka), (b, sb, kb) in zip(forward, backward):
        assert np.array_equal(a, b) and sa == sb and ka == kb
        assert cfg.occlusion_min <= sa <= cfg.occlusion_max


def test_cameras_differ_and_capture_is_seeded():
    cams = sample_cameras(0, 6, (128, 64))
    assert len({c.scene.wall for c in cams}) == 6
    assert len({c.tint for c in cams}) == 6
    image = np.full((16, 8, 3), 0.5, np.float32)
    a = capture(image, cams[0], np.random.default_rng(1))
    b = capture(image, cams[0], np.random.default_rng(1))
    c = capture(image, cams[1], np.random.default_rng(1))
    assert a.dtype == np.uint8 and np.array_equal(a, b)
    assert abs(a.astype(float).mean(axis=(0, 1)) - c.astype(float).mean(axis=(0, 1))).max() > 2  # colour balance


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), low=st.floats(0.01, 0.85), span=st.floats(0.05, 0.1))
def test_exact_box_hides_exactly_k_pixels_in_range(seed, low, span):
    rng = np.random.default_rng(seed)
    person = np.zeros((32, 16), bool)
    y0, x0 = rng.integers(0, 6), rng.integers(0, 6)
    person[y0:y0 + 20 + rng.integers(0, 6), x0:x0 + 4 + rng.integers(0, 6)] = True  # a blob of 80..270 pixels
    person[rng.integers(0, 32, 10), rng.integers(0, 16, 10)] = True
    high = low + span
    layer, share = exact_box(rng, person, float(rng.uniform(low, high)), low, high)
    assert share == (person & (layer.alpha > 0.5)).sum() / person.sum()
    assert low <= share <= high
    # the box rises from the ground: a covered pixel's lower neighbour is covered too
    covered = layer.alpha > 0.5
    assert np.all(covered[:-1] <= covered[1:])
