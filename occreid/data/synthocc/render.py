"""Drawing one pedestrian: a part-label map drawn with PIL, coloured and shaded with numpy.

The body is drawn at twice the target resolution as a map of part labels (skin, hair, top, legs, shoes,
bag, backpack, hat, logo), in painter's order for the viewpoint: from the back the backpack covers the top
and the logo is hidden; from the side the body is narrow, one arm and leg are behind (darker) and the
backpack sticks out at the back. Labels become colours by a table lookup, patterns (stripes, checks) are
masks over the top, a soft cylinder shading gives volume, and a 2×2 box filter gives anti-aliased edges.
Everything is array work; there is no per-pixel Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .identity import Identity

SS = 2  # supersampling factor (the 2×2 box filter in _down assumes 2)
(BG, SKIN, HAIR, TOP, TOP_FAR, LEGS, LEGS_FAR, SHOES, BAG, BACKPACK, HAT, LOGO, SKIN_FAR) = range(13)
FAR_SHADE = 0.7
VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class Pose:
    """How the person stands in one image. ``mirrored`` turns a side view to face left."""

    view: str
    mirrored: bool = False
    stride: float = 0.5  # 0 feet together .. 1 long step
    swing: float = 0.0  # -1 .. 1 arm swing


@dataclass
class Layer:
    """Premultiplied colour ``rgb`` (H, W, 3) and coverage ``alpha`` (H, W), floats in [0, 1]."""

    rgb: np.ndarray
    alpha: np.ndarray

    def over(self, below: np.ndarray) -> np.ndarray:
        """This layer composited over the (H, W, 3) image ``below``."""
        return self.rgb + below * (1.0 - self.alpha[..., None])


def render_person(person: Identity, pose: Pose, size: tuple[int, int], cx: float, top: float,
                  height: float) -> Layer:
    """``person`` in ``pose`` on a transparent (H, W) canvas, head top at row ``top``, spanning ``height`` rows
    (both may exceed the canvas: the figure is clipped), centred on column ``cx``."""
    h, w = size
    labels = Image.new("L", (w * SS, h * SS), BG)
    draw = ImageDraw.Draw(labels)
    x = (w - cx) * SS if pose.mirrored else cx * SS
    body = _Body(draw, person, x, top * SS, height * SS)
    {"front": body.front, "back": body.back, "side": body.side}[pose.view](pose)
    lab = np.asarray(labels)
    if pose.mirrored:
        lab = lab[:, ::-1]
    rgb = _colour(lab, person, pose, cx * SS, top * SS, height * SS)
    alpha = (lab != BG).astype(np.float32)
    rgb *= alpha[..., None]
    return Layer(_down(rgb), _down(alpha))


def _down(a: np.ndarray) -> np.ndarray:
    """2×2 box filter: the mean of each supersampled block (slice sums: faster than a reshaped mean)."""
    return ((a[0::SS, 0::SS] + a[1::SS, 0::SS]) + (a[0::SS, 1::SS] + a[1::SS, 1::SS])) * np.float32(0.25)


def _colour(lab: np.ndarray, p: Identity, pose: Pose, cx: float, top: float, u: float) -> np.ndarray:
    table = np.zeros((13, 3), np.float32)
    for label, colour in ((SKIN, p.skin), (HAIR, p.hair), (TOP, p.top), (LEGS, p.legs), (SHOES, p.shoes),
                          (BAG, p.bag), (BACKPACK, p.backpack), (HAT, p.hat), (LOGO, p.top_second)):
        if colour is not None:
            table[label] = colour
    table[TOP_FAR], table[LEGS_FAR], table[SKIN_FAR] = (table[TOP] * FAR_SHADE, table[LEGS] * FAR_SHADE,
                                                         table[SKIN] * FAR_SHADE)
    rgb = table[lab] / 255.0
    if p.top_pattern in ("stripes", "checks"):
        period = p.stripe_period * u
        ys = np.arange(lab.shape[0], dtype=np.float32)[:, None]
        xs = np.arange(lab.shape[1], dtype=np.float32)[None, :]
        mask = ((ys - top) / period) % 1.0 < 0.5
        if p.top_pattern == "checks":
            mask = mask ^ (((xs - cx) / period) % 1.0 < 0.5)
        is_top = (lab == TOP) | (lab == TOP_FAR)
        shade = np.where(lab == TOP_FAR, FAR_SHADE, 1.0)[..., None]
        second = np.asarray(p.top_second, np.float32) / 255.0
        rgb = np.where((mask & is_top)[..., None], second * shade, rgb)
    half = 0.16 * u * (0.6 if pose.view == "side" else 1.0) * p.build
    xs = (np.arange(lab.shape[1], dtype=np.float32) - cx) / half
    ys = (np.arange(lab.shape[0], dtype=np.float32) - top) / u
    shade_x = 1.0 - 0.32 * np.clip(xs * xs, 0.0, 1.0)
    shade_y = 1.06 - 0.14 * np.clip(ys, 0.0, 1.0)
    return np.clip(rgb * shade_y[:, None, None] * shade_x[None, :, None], 0.0, 1.0).astype(np.float32)


class _Body:
    """Body geometry in supersampled pixels for one figure; each view method draws the part labels."""

    def __init__(self, draw: ImageDraw.ImageDraw, p: Identity, cx: float, top: float, u: float):
        self.d, self.p, self.cx, self.top, self.u = draw, p, cx, top, u
        self.ry, self.rx = 0.062 * u * p.head, 0.048 * u * p.head
        self.head_y = top + self.ry
        self.sy = top + 2 * self.ry + 0.02 * u  # shoulder line
        self.hip = top + (1.0 - p.leg_ratio) * u
        self.ankle = top + 0.955 * u

    # -- primitives -------------------------------------------------------------------------------------
    def quad(self, a: tuple[float, float], b: tuple[float, float], wa: float, wb: float, label: int) -> None:
        """A limb from point a (half-width wa) to point b (half-width wb), with rounded ends."""
        dx, dy = b[0] - a[0], b[1] - a[1]
        n = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / n, dx / n
        self.d.polygon([(a[0] + nx * wa, a[1] + ny * wa), (b[0] + nx * wb, b[1] + ny * wb),
                        (b[0] - nx * wb, b[1] - ny * wb), (a[0] - nx * wa, a[1] - ny * wa)], fill=label)
        self.ellipse(a, wa, wa, label)
        self.ellipse(b, wb, wb, label)

    def ellipse(self, c: tuple[float, float], rx: float, ry: float, label: int) -> None:
        self.d.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], fill=label)

    def rect(self, x0: float, y0: float, x1: float, y1: float, label: int, radius: float = 0.0) -> None:
        self.d.rounded_rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], radius=radius, fill=label)

    def point(self, dx: float, y: float) -> tuple[float, float]:
        return (self.cx + dx * self.u, y)

    # -- shared parts -----------------------------------------------------------------------------------
    def torso(self, half_shoulder: float, half_waist: float) -> None:
        u, cx, sy, r = self.u, self.cx, self.sy, 0.03 * self.u
        bottom = self.hip + 0.025 * u
        self.d.polygon([(cx - half_shoulder, sy + r), (cx - half_shoulder + r, sy), (cx + half_shoulder - r, sy),
                        (cx + half_shoulder, sy + r), (cx + half_waist, bottom), (cx - half_waist, bottom)], fill=TOP)
        self.rect(cx - 0.022 * u, self.head_y, cx + 0.022 * u, sy + 0.01 * u, SKIN)  # neck

    def arm(self, shoulder: tuple[float, float], hand: tuple[float, float], far: bool) -> None:
        u, build = self.u, self.p.build
        top, skin = (TOP_FAR, SKIN_FAR) if far else (TOP, SKIN)
        w0, w1 = 0.03 * u * build, 0.022 * u * build
        if self.p.long_sleeves:
            self.quad(shoulder, hand, w0, w1, top)
        else:
            elbow = (shoulder[0] + 0.42 * (hand[0] - shoulder[0]), shoulder[1] + 0.42 * (hand[1] - shoulder[1]))
            self.quad(elbow, hand, w1, w1 * 0.9, skin)
            self.quad(shoulder, elbow, w0, w0 * 0.95, top)
        self.ellipse(hand, 0.024 * u, 0.028 * u, skin)

    def leg(self, hip: tuple[float, float], foot: tuple[float, float], far: bool, toe: float) -> None:
        u, p = self.u, self.p
        legs, skin = (LEGS_FAR, SKIN_FAR) if far else (LEGS, SKIN)
        w0, w1 = 0.05 * u * p.build, 0.028 * u * p.build
        if p.leg_style == "trousers":
            self.quad(hip, foot, w0, w1, legs)
        else:
            self.quad(hip, foot, w0, w1, skin)
            if p.leg_style == "shorts":
                knee = (hip[0] + 0.45 * (foot[0] - hip[0]), hip[1] + 0.45 * (foot[1] - hip[1]))
                self.quad(hip, knee, w0 * 1.1, w0 * 0.95, legs)
        self.ellipse((foot[0] + toe * u, foot[1] + 0.022 * u), (0.03 + abs(toe)) * u, 0.024 * u, SHOES)

    def skirt(self, half: float) -> None:
        if self.p.leg_style == "skirt":
            cx, u = self.cx, self.u
            knee = self.hip + 0.23 * u
            self.d.polygon([(cx - half, self.hip - 0.02 * u), (cx + half, self.hip - 0.02 * u),
                            (cx + half * 1.45, knee), (cx - half * 1.45, knee)], fill=LEGS)

    def long_hair(self) -> None:
        if self.p.hair_style == "long":
            self.rect(self.cx - 1.12 * self.rx, self.head_y, self.cx + 1.12 * self.rx, self.sy + 0.1 * self.u,
                      HAIR, radius=0.02 * self.u)

    def hat(self, brim: float) -> None:
        if self.p.hat is not None:
            cx, cy, rx, ry = self.cx, self.head_y, self.rx * 1.08, self.ry * 1.05
            self.d.chord([cx - rx, cy - ry - 0.01 * self.u, cx + rx, cy + ry], 180, 360, fill=HAT)
            self.rect(cx - rx + min(brim, 0), cy - 0.012 * self.u, cx + rx + max(brim, 0), cy + 0.004 * self.u, HAT)

    def bag(self, side: float, strap: bool) -> None:
        if self.p.bag is None:
            return
        u, cx, half = self.u, self.cx, 0.1 * self.u * self.p.build
        x0 = cx + side * (half - 0.01 * u)
        self.rect(x0, self.hip - 0.07 * u, x0 + side * 0.085 * u, self.hip + 0.05 * u, BAG, radius=0.01 * u)
        if strap:
            self.quad((cx - side * 0.1 * u, self.sy + 0.01 * u), (x0 + side * 0.03 * u, self.hip - 0.06 * u),
                      0.008 * u, 0.008 * u, BAG)

    # -- views ------------------------------------------------------------------------------------------
    def front(self, pose: Pose) -> None:
        u, p, cx = self.u, self.p, self.cx
        sw, ww = 0.125 * u * p.build, 0.098 * u * p.build
        self.long_hair()
        spread = 0.045 + 0.015 * pose.stride
        for side in (-1, 1):
            self.leg(self.point(side * 0.045 * p.build, self.hip), self.point(side * spread * p.build, self.ankle),
                     False, 0.0)
        self.skirt(ww)
        self.torso(sw, ww)
        if p.top_pattern == "logo":
            c, r = (cx, self.sy + 0.11 * u), 0.035 * u
            if p.logo_shape == "circle":
                self.ellipse(c, r, r, LOGO)
            elif p.logo_shape == "square":
                self.rect(c[0] - r, c[1] - r, c[0] + r, c[1] + r, LOGO)
            else:
                self.d.polygon([(c[0], c[1] - r), (c[0] + r, c[1] + r), (c[0] - r, c[1] + r)], fill=LOGO)
        if p.backpack is not None:  # straps over the shoulders
            for side in (-1, 1):
                self.quad((cx + side * 0.07 * u, self.sy), (cx + side * 0.065 * u, self.sy + 0.15 * u),
                          0.012 * u, 0.012 * u, BACKPACK)
        for side in (-1, 1):
            out = 0.01 + 0.012 * abs(pose.swing)
            self.arm((cx + side * (sw - 0.02 * u), self.sy + 0.03 * u),
                     (cx + side * (sw + out * u), self.sy + 0.32 * u), False)
        self.bag(-p.bag_side, strap=True)
        self.head(face=True)
        self.hat(0.0)

    def back(self, pose: Pose) -> None:
        u, p, cx = self.u, self.p, self.cx
        sw, ww = 0.125 * u * p.build, 0.098 * u * p.build
        spread = 0.045 + 0.015 * pose.stride
        for side in (-1, 1):
            self.leg(self.point(side * 0.045 * p.build, self.hip), self.point(side * spread * p.build, self.ankle),
                     False, 0.0)
        self.skirt(ww)
        self.torso(sw, ww)
        for side in (-1, 1):
            out = 0.01 + 0.012 * abs(pose.swing)
            self.arm((cx + side * (sw - 0.02 * u), self.sy + 0.03 * u),
                     (cx + side * (sw + out * u), self.sy + 0.32 * u), False)
        self.bag(p.bag_side, strap=True)
        self.head(face=False)
        self.long_hair()
        if p.backpack is not None:
            half = 0.095 * u * p.build
            self.rect(cx - half, self.sy + 0.015 * u, cx + half, self.sy + 0.27 * u, BACKPACK, radius=0.03 * u)
        self.hat(0.0)

    def side(self, pose: Pose) -> None:
        """Facing right (mirrored afterwards for facing left)."""
        u, p, cx = self.u, self.p, self.cx
        sw, ww = 0.075 * u * p.build, 0.07 * u * p.build
        step, angle = 0.13 * pose.stride, 0.45 * pose.swing
        shoulder = (cx + 0.005 * u, self.sy + 0.03 * u)

        def hand(a: float) -> tuple[float, float]:
            return (shoulder[0] + 0.3 * u * math.sin(a), shoulder[1] + 0.3 * u * math.cos(a))

        self.arm(shoulder, hand(-angle), True)
        self.leg(self.point(-0.01, self.hip), self.point(-step, self.ankle), True, 0.02)
        if p.backpack is not None:
            self.rect(cx - sw - 0.075 * u, self.sy + 0.02 * u, cx - sw + 0.02 * u, self.sy + 0.26 * u, BACKPACK,
                      radius=0.025 * u)
        self.leg(self.point(0.01, self.hip), self.point(step, self.ankle), False, 0.02)
        self.skirt(ww)
        self.torso(sw, ww)
        if p.bag is not None:
            self.quad((cx + 0.02 * u, self.sy + 0.005 * u), (cx - 0.01 * u, self.hip - 0.06 * u), 0.008 * u, 0.008 * u, BAG)
            self.rect(cx - 0.055 * u, self.hip - 0.07 * u, cx + 0.035 * u, self.hip + 0.05 * u, BAG, radius=0.01 * u)
        self.head(face=None)
        self.arm(shoulder, hand(angle), False)
        self.hat(0.05 * u)

    def head(self, face: bool | None) -> None:
        """face True: front (hairline on top); False: back of the head; None: profile facing right."""
        cx, cy, rx, ry, p = self.cx, self.head_y, self.rx, self.ry, self.p
        bald = p.hair_style == "bald"
        if face is None:
            self.ellipse((cx + 0.1 * rx, cy), rx, ry, SKIN)
            if not bald:
                self.d.chord([cx - 1.08 * rx, cy - 1.08 * ry, cx + 1.0 * rx, cy + 1.0 * ry], 100, 345, fill=HAIR)
                if p.hair_style == "long":
                    self.rect(cx - 1.05 * rx, cy, cx - 0.1 * rx, self.sy + 0.08 * self.u, HAIR, radius=0.015 * self.u)
            return
        self.ellipse((cx, cy), rx, ry, SKIN if bald else HAIR)
        if face:
            self.ellipse((cx, cy + 0.22 * ry), 0.9 * rx, 0.8 * ry, SKIN)
