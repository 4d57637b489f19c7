"""Who a synthetic person is: clothes, colours, patterns, accessories and body shape.

Identity lives in appearance only, so the appearance is sampled once per person id from a seed and never
changes between images (cameras and poses change the look, not the identity). Colours come from small
palettes shared by all identities, and identities come in *pairs* whose members wear the same colours on
swapped body parts (red top + blue trousers vs. blue top + red trousers): a global colour histogram cannot
tell the two apart, only the part layout, patterns and accessories can.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

RGB = tuple[int, int, int]

CLOTHES: tuple[RGB, ...] = (
    (28, 28, 32), (228, 228, 222), (128, 128, 132), (32, 42, 92), (46, 92, 178), (124, 168, 216),
    (178, 34, 38), (108, 28, 44), (44, 118, 64), (102, 110, 52), (202, 182, 140), (112, 72, 42),
    (218, 188, 48), (216, 112, 36), (216, 132, 162), (98, 52, 128),
)  # black white grey navy blue light-blue red maroon green olive beige brown yellow orange pink purple
LEGS: tuple[int, ...] = (0, 3, 4, 5, 2, 10, 11, 1, 9, 7)  # indices into CLOTHES that trousers often have
SKIN: tuple[RGB, ...] = ((238, 200, 170), (222, 178, 140), (190, 140, 100), (150, 102, 70), (104, 70, 48))
HAIR: tuple[RGB, ...] = ((22, 18, 16), (60, 38, 24), (104, 68, 40), (196, 160, 96), (150, 146, 140), (130, 52, 26))
SHOES: tuple[RGB, ...] = ((24, 24, 24), (232, 232, 232), (96, 60, 34), (110, 110, 114), (170, 30, 30), (40, 60, 130))

TOP_PATTERNS = ("solid", "stripes", "checks", "logo")
LEG_STYLES = ("trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "long", "bald")
LOGO_SHAPES = ("circle", "square", "triangle")
PASSERBY_BASE = 20000  # pids of the passer-by pool (occluding pedestrians): never in a split


@dataclass(frozen=True)
class Identity:
    """Everything that makes one person recognisable across cameras."""

    pid: int
    skin: RGB
    hair: RGB
    hair_style: str
    hat: RGB | None
    top: RGB
    top_second: RGB  # stripes / checks / logo colour
    top_pattern: str
    stripe_period: float  # in units of body height
    long_sleeves: bool
    logo_shape: str
    legs: RGB
    leg_style: str
    shoes: RGB
    bag: RGB | None  # shoulder bag, hangs on the ``bag_side`` hip
    bag_side: int  # -1 left, +1 right (in the person's front view)
    backpack: RGB | None
    height: float  # share of the frame height the person spans at camera scale 1
    build: float  # width factor: slim < 1 < broad
    head: float  # head size factor
    leg_ratio: float  # share of body height below the hip


def sample_identity(seed: int, pid: int) -> Identity:
    """The appearance of person ``pid`` under dataset ``seed``.

    Pids ``2j`` and ``2j+1`` are a pair: they share the colour set drawn from the pair's seed, with top and
    trouser colours swapped, while patterns, hair, accessories and build are each member's own.
    """
    pair = np.random.default_rng([seed, 1, pid // 2])
    colours = _pair_colours(pair)
    rng = np.random.default_rng([seed, 2, pid])
    top, legs = (colours[0], colours[1]) if pid % 2 == 0 else (colours[1], colours[0])
    pattern = TOP_PATTERNS[_choice(rng, [0.4, 0.25, 0.15, 0.2])]
    second = colours[2] if pattern != "solid" else top
    if second == top:
        second = CLOTHES[(CLOTHES.index(top) + 1 + int(rng.integers(len(CLOTHES) - 1))) % len(CLOTHES)]
    leg_style = LEG_STYLES[_choice(rng, [0.7, 0.15, 0.15])]
    hair_style = HAIR_STYLES[_choice(rng, [0.55, 0.35, 0.1])]
    return Identity(
        pid=pid,
        skin=SKIN[int(rng.integers(len(SKIN)))],
        hair=HAIR[int(rng.integers(len(HAIR)))],
        hair_style=hair_style,
        hat=_maybe(rng, 0.2, CLOTHES),
        top=top,
        top_second=second,
        top_pattern=pattern,
        stripe_period=float(rng.uniform(0.035, 0.07)),
        long_sleeves=bool(rng.random() < 0.6),
        logo_shape=LOGO_SHAPES[int(rng.integers(len(LOGO_SHAPES)))],
        legs=legs,
        leg_style=leg_style,
        shoes=SHOES[int(rng.integers(len(SHOES)))],
        bag=_maybe(rng, 0.3, CLOTHES),
        bag_side=int(rng.choice([-1, 1])),
        backpack=_maybe(rng, 0.35, CLOTHES),
        height=float(rng.uniform(0.86, 0.96)),
        build=float(rng.uniform(0.85, 1.18)),
        head=float(rng.uniform(0.9, 1.1)),
        leg_ratio=float(rng.uniform(0.47, 0.53)),
    )


def passerby(seed: int, index: int) -> Identity:
    """A pedestrian who only ever appears as an occluder (never labelled), from a pool of 64 per seed."""
    return replace(sample_identity(seed, PASSERBY_BASE + index % 64), pid=-1)


def appearance_key(identity: Identity) -> tuple:
    """The appearance without the pid, for checking that two identities differ."""
    return tuple(v for k, v in vars(identity).items() if k != "pid")


def _pair_colours(rng: np.random.Generator) -> tuple[RGB, RGB, RGB]:
    """Top/trouser colours of a pair (two different colours, trousers-like), plus a pattern colour."""
    a = LEGS[int(rng.integers(len(LEGS)))]
    b = int(rng.integers(len(CLOTHES) - 1))
    b = b + 1 if b >= a else b  # any other colour
    c = int(rng.integers(len(CLOTHES)))
    return CLOTHES[b], CLOTHES[a], CLOTHES[c]


def _choice(rng: np.random.Generator, probs: list[float]) -> int:
    return int(rng.choice(len(probs), p=np.asarray(probs) / sum(probs)))


def _maybe(rng: np.random.Generator, p: float, palette: tuple[RGB, ...]) -> RGB | None:
    colour = palette[int(rng.integers(len(palette)))]  # drawn always, so later draws do not shift
    return colour if rng.random() < p else None
