"""Deterministic renderer of chest-radiograph-like images with learnable findings.

Everything here is numpy seeded by a caller's `numpy.random.Generator`, so one seed
gives one image, bit for bit. Images are float64 arrays of shape (height, width)
with values in [0, 1], **air dark and bone/soft tissue bright** (the convention of
`bench.data.io.read_image`).

Geometry convention. Lengths are in units of the image *height*; `y` runs from 0
(top) to 1 (bottom) and `x` is horizontal with 0 at the image centre. Radiographic
convention: the patient's right lung is on the image *left* (x < midline), the heart
bulges to the image right.

Severity varies: opacities are drawn with a random strength (e.g. an effusion
moves the basal lung 50-95 % of the way to fluid density), so some positives are
subtle and a classifier does not saturate.

Difficulty is controllable: `signal` (a `SiteStyle` field, times the `finding_signal`
context that `bench.data.synthetic.generate(..., signal=...)` sets) scales every
finding's trace. Each paint's change to the density map and each reshape's change
to the anatomy is multiplied by it: 0 renders positives exactly like negatives (the
labels then carry no image signal), 1 is the severities above, 2 doubles every
opacity and every geometric change (clipped to physical ranges). Lateral views keep
their coarse findings at full strength.

Rendering is two-phase so that a finding's opacity is painted on the final anatomy:

1. `sample_anatomy(rng)` draws a patient (`Anatomy`), then each positive finding's
   *reshape* function (if it has one) changes the geometry in place: cardiomegaly
   enlarges the heart (cardiothoracic ratio > 0.5), emphysema enlarges the lungs,
   atelectasis elevates one hemidiaphragm, pneumothorax collapses one lung.
2. A density map is built from the anatomy (`Canvas`) and each positive finding's
   *paint* function modifies it (opacities, lucencies, textures).

Each finding draws from its own child generator, spawned for every name in
`RENDERABLE` whether or not it is positive. Rendering the same seed with and without
a finding therefore yields the same patient, noise and other findings, and differs
only where that finding acts; the tests rely on this.

`SiteStyle` holds what differs between sites (intensity curve, noise, blur, framing,
sizes, label prevalences, images per patient, view mix); the writers in this package
use it.

Stable API (other writers build on it): `render`, `render_scene`, `sample_anatomy`,
`jitter_anatomy`, `SiteStyle` (new fields only ever get defaults), `apply_style`,
`smooth_noise`, `RENDERABLE`, `VIEWS`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass, field, fields, replace
from statistics import NormalDist
from typing import Callable, Iterator, Mapping

import numpy as np
from scipy import ndimage

from bench.data.labels import NIH14

# Label names the renderer understands beyond NIH-14 (CheXpert/MIMIC observations).
EXTRA_FINDINGS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Lung Opacity",
    "Lung Lesion",
    "Fracture",
    "Pleural Other",
    "Support Devices",
)
RENDERABLE: tuple[str, ...] = NIH14 + EXTRA_FINDINGS

VIEWS: tuple[str, ...] = ("PA", "AP", "LL")

# Density levels (brightness before the site's intensity curve), roughly 0 = air.
_AIR = 0.0
_LUNG = 0.16
_SOFT = 0.50
_FLUID = 0.60
_HEART = 0.66
_BONE = 0.85


@dataclass
class Anatomy:
    """One patient's chest geometry (lengths in image-height units, see module doc).

    `ctr` is the cardiothoracic ratio: heart width / inner thoracic width; normal
    adults are below 0.5. `collapse_r`/`collapse_l` are the fractions by which a
    pneumothorax has pulled the right/left lung away from the chest wall.
    """

    cx: float
    thorax_frac: float  # inner thoracic half-width as a fraction of the half frame
    apex_y: float
    dia_r: float  # y of the right hemidiaphragm at the costophrenic angle
    dia_l: float
    dome: float  # dome height of both hemidiaphragms
    mediast_hw: float
    heart_cy: float
    heart_h: float  # half-height of the heart ellipse
    ctr: float
    rib_y0: float
    rib_step: float
    tilt: float = 0.0  # small rotation-like left/right asymmetry of the thorax
    collapse_r: float = 0.0
    collapse_l: float = 0.0
    hyperinflation: float = 0.0  # emphysema: 0 normal, ~1 marked
    mediast_widen: float = 0.0  # enlarged cardiomediastinum: extra half-width


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a normal adult chest. Same generator state -> same anatomy."""
    dia_r = rng.uniform(0.70, 0.76)
    return Anatomy(
        cx=rng.normal(0.0, 0.012),
        thorax_frac=rng.uniform(0.78, 0.88),
        apex_y=rng.uniform(0.11, 0.16),
        dia_r=dia_r,
        dia_l=dia_r + rng.uniform(0.0, 0.03),
        dome=rng.uniform(0.05, 0.08),
        mediast_hw=rng.uniform(0.065, 0.085),
        heart_cy=rng.uniform(0.56, 0.60),
        heart_h=rng.uniform(0.11, 0.14),
        ctr=rng.uniform(0.38, 0.49),
        rib_y0=rng.uniform(0.12, 0.16),
        rib_step=rng.uniform(0.055, 0.065),
        tilt=rng.normal(0.0, 0.01),
    )


def jitter_anatomy(anat: Anatomy, rng: np.random.Generator) -> Anatomy:
    """A follow-up image of the same patient: small positioning/inspiration changes."""
    inspiration = rng.normal(0.0, 0.01)
    return replace(
        anat,
        cx=anat.cx + rng.normal(0.0, 0.006),
        dia_r=anat.dia_r + inspiration,
        dia_l=anat.dia_l + inspiration,
        apex_y=anat.apex_y + rng.normal(0.0, 0.004),
        tilt=anat.tilt + rng.normal(0.0, 0.004),
    )


def _soft(v: np.ndarray, width: float) -> np.ndarray:
    """Ramp 0 -> 1 as `v` crosses 0 over `2 * width` (anti-aliased masks; linear is cheap)."""
    return np.clip(0.5 + v * (0.5 / width), 0.0, 1.0)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Zero-mean, unit-ish variance noise smooth over `cell_px` pixels (shape (H, W))."""
    h, w = shape
    gh, gw = max(2, int(math.ceil(h / cell_px)) + 2), max(2, int(math.ceil(w / cell_px)) + 2)
    coarse = rng.standard_normal((gh, gw))
    out = ndimage.zoom(coarse, (h / (gh - 2), w / (gw - 2)), order=1, mode="nearest")
    out = out[:h, :w]
    if out.shape != (h, w):  # zoom can round one short
        out = np.pad(out, ((0, h - out.shape[0]), (0, w - out.shape[1])), mode="edge")
    return (out / max(float(out.std()), 1e-6)).astype(np.float32)


class Canvas:
    """Density map of one image plus the anatomy masks findings paint into.

    `density` (H, W) is brightness before the site curve (0 air, ~0.16 aerated lung,
    ~0.5 soft tissue, ~0.85 bone). `lung_r`/`lung_l` are soft masks of the pleural
    spaces (where lung would be without pneumothorax), `aerated_r`/`aerated_l` of the
    lung that actually contains air and vessels.
    """

    def __init__(
        self, anat: Anatomy, height: int, width: int, view: str, rng: np.random.Generator, zoom: float = 1.0
    ) -> None:
        self.anat = anat
        self.height, self.width = height, width
        self.view = view
        # zoom > 1 magnifies about the image centre (a tighter field of view).
        rows = (0.5 + ((np.arange(height) + 0.5) / height - 0.5) / zoom).astype(np.float32)
        cols = ((np.arange(width) + 0.5 - width / 2.0) / (height * zoom)).astype(np.float32)
        # float32 halves the memory traffic of the ~100 whole-image operations per render.
        self.y, self.x = np.meshgrid(rows, cols, indexing="ij")
        self.px = 1.0 / (height * zoom)  # one pixel in height units
        self.half_frame = width / (2.0 * height)
        self.thorax_hw = anat.thorax_frac * min(0.5, self.half_frame)
        self.density = np.zeros((height, width), dtype=np.float32)
        self._build(rng)

    # -- geometry ----------------------------------------------------------------
    def diaphragm(self, side: str, u: np.ndarray) -> np.ndarray:
        """y of the hemidiaphragm at lateral fraction `u` (0 medial, 1 chest wall)."""
        a = self.anat
        base = a.dia_r if side == "r" else a.dia_l
        dome = a.dome * (1.0 - 0.6 * a.hyperinflation)
        base = base + 0.05 * a.hyperinflation
        return base - dome * 4.0 * np.clip(u, 0, 1) * (1.0 - np.clip(u, 0, 1)) - 0.015 * (1 - np.clip(u, 0, 1))

    def lateral_u(self, side: str) -> np.ndarray:
        """Fraction from the mediastinum (0) to the inner chest wall (1) for one side."""
        a = self.anat
        hw = self.thorax_hw * (1.0 + 0.05 * a.hyperinflation)
        sign = -1.0 if side == "r" else 1.0
        d = sign * (self.x - a.cx) + (a.tilt if side == "r" else -a.tilt)
        med = a.mediast_hw
        return (d - med) / (hw - med)

    def _lung_mask(self, side: str, collapse: float) -> np.ndarray:
        a = self.anat
        u = self.lateral_u(side)
        # The apex is rounded: both borders converge on u = 0.45 at the top.
        apex_y = a.apex_y + collapse * 0.08
        widening = np.clip((self.y - apex_y) / 0.22, 0.0, 1.0) ** 0.5
        lateral_limit = 0.45 + ((1.0 - collapse) - 0.45) * widening
        medial_limit = 0.45 * (1.0 - widening)
        bottom = self.diaphragm(side, u) - collapse * 0.04 - self.y
        edge = 3.5 * self.px
        return (
            _soft(u - medial_limit, edge)
            * _soft(lateral_limit - u, edge)
            * _soft(self.y - apex_y, self.px)
            * _soft(bottom, 1.2 * self.px)
        )

    def heart_mask(self) -> np.ndarray:
        a = self.anat
        hw = a.ctr * self.thorax_hw * (1.08 if self.view == "AP" else 1.0)
        hcx = a.cx + 0.3 * hw
        r = ((self.x - hcx) / hw) ** 2 + ((self.y - a.heart_cy) / a.heart_h) ** 2
        return _soft(1.0 - r, 0.08)

    def hilum(self, side: str) -> tuple[float, float]:
        """(x, y) of the right or left hilum."""
        a = self.anat
        off = a.mediast_hw + 0.25 * (self.thorax_hw - a.mediast_hw)
        return (a.cx - off, 0.42) if side == "r" else (a.cx + off, 0.44)

    # -- composition helpers used by findings ------------------------------------
    def lungs(self) -> np.ndarray:
        return np.clip(self.lung_r + self.lung_l, 0.0, 1.0)

    def side_mask(self, side: str) -> np.ndarray:
        return self.lung_r if side == "r" else self.lung_l

    def toward(self, level: float, alpha: np.ndarray) -> None:
        """Move density toward `level` by weight `alpha` in [0, 1] (per pixel)."""
        alpha = np.clip(alpha, 0.0, 1.0)
        self.density += (level - self.density) * alpha

    def blob(self, cx: float, cy: float, rx: float, ry: float, rng: np.random.Generator, rough: float = 0.3) -> np.ndarray:
        """Soft irregular blob mask centred at (cx, cy) with radii (rx, ry)."""
        r = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
        wobble = rough * smooth_noise(rng, self.density.shape, max(2.0, rx * self.height * 0.7))
        return _soft(1.0 - r + 0.25 * wobble, 0.15)

    def random_lung_point(
        self, rng: np.random.Generator, side: str, y_lo: float = 0.25, y_hi: float = 0.65
    ) -> tuple[float, float]:
        """A point well inside one lung field (for nodules, masses, focal opacities)."""
        a = self.anat
        u = rng.uniform(0.25, 0.75)
        y = rng.uniform(y_lo, y_hi)
        d = a.mediast_hw + u * (self.thorax_hw - a.mediast_hw)
        return (a.cx - d if side == "r" else a.cx + d), y

    # -- base image --------------------------------------------------------------
    def _build(self, rng: np.random.Generator) -> None:
        a, x, y, px = self.anat, self.x, self.y, self.px
        shape = self.density.shape
        dx = np.abs(x - a.cx)
        # Body outline: neck widening to the shoulders, chest wall beyond the ribs.
        body_hw = (self.thorax_hw + 0.06) * np.clip(0.35 + 0.65 * np.sqrt(np.clip(y / 0.16, 0, 1)), 0, 1)
        body = _soft(body_hw - dx, 2 * px)
        d = _SOFT * body * (1.0 + 0.06 * smooth_noise(rng, shape, 12))
        # Lungs (pleural space) and the aerated part.
        self.lung_r = self._lung_mask("r", 0.0)
        self.lung_l = self._lung_mask("l", 0.0)
        self.aerated_r = self._lung_mask("r", a.collapse_r) if a.collapse_r else self.lung_r
        self.aerated_l = self._lung_mask("l", a.collapse_l) if a.collapse_l else self.lung_l
        pleural = np.clip(self.lung_r + self.lung_l, 0, 1)
        aerated = np.clip(self.aerated_r + self.aerated_l, 0, 1)
        # Vessels: tangled band-passed noise, denser near the hila, fading peripherally.
        vessels = np.zeros(shape)
        for side in ("r", "l"):
            hx, hy = self.hilum(side)
            dist = np.sqrt((x - hx) ** 2 + (y - hy) ** 2)
            vessels += np.exp(-dist / 0.16)
        streaks = np.abs(smooth_noise(rng, shape, 3.0))
        markings = 0.07 * vessels * np.clip(1.2 - streaks, 0, 1.2) * (1.0 - 0.6 * a.hyperinflation)
        lung_level = _LUNG - 0.05 * a.hyperinflation + markings
        d = d * (1 - pleural) + pleural * (_AIR + 0.04)  # pleural air: dark, no markings
        d = d * (1 - aerated) + aerated * lung_level
        # Ribs: posterior arcs across each hemithorax, plus clavicles.
        in_chest = body * _soft(self.thorax_hw + 0.03 - dx, 2 * px)
        u = np.clip(dx / self.thorax_hw, 0, 1.3)
        phase = (y - (a.rib_y0 + 0.09 * u**2 - 0.05 * u)) / a.rib_step  # rib k is centred at phase k
        nearest = np.clip(np.round(phase), 0, 9)  # ten posterior ribs
        ribs = _soft(0.008 - np.abs(phase - nearest) * a.rib_step, px)
        clav_y = a.apex_y + 0.01 - 0.05 * np.clip(dx / self.thorax_hw, 0, 1)
        if self.view == "AP":
            clav_y = clav_y - 0.03
        ribs += 1.3 * _soft(0.012 - np.abs(y - clav_y), px) * _soft(0.85 * self.thorax_hw - dx, 2 * px)
        if self.view == "AP":  # scapulae project over the upper lateral lung fields in AP
            scap = _soft(0.07 - np.abs(dx - 0.9 * self.thorax_hw), 3 * px)
            scap = scap * _soft(0.45 - y, 4 * px) * _soft(y - 0.15, 4 * px)
            d += 0.10 * scap * body
        d += 0.10 * np.clip(ribs, 0, 1.5) * in_chest
        # Mediastinum and spine, then the heart, then the abdomen below the diaphragm.
        med_hw = a.mediast_hw + a.mediast_widen * _soft(0.45 - y, 0.03)
        mediast = _soft(med_hw - dx, 1.5 * px) * _soft(a.dia_r - y, px) * _soft(y - 0.05, 2 * px)
        d = np.maximum(d, _HEART * mediast * body)
        vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * (y - a.rib_y0) / (a.rib_step * 0.95))
        spine = _soft(0.032 - dx, px) * body
        d = np.maximum(d, (_SOFT + 0.22 + 0.08 * vertebrae) * spine)
        heart = self.heart_mask()
        d = d * (1 - heart) + heart * np.maximum(d, _HEART)
        below = np.zeros(shape)
        for side, sign in (("r", -1.0), ("l", 1.0)):
            half = _soft(sign * (x - a.cx), px)
            below += half * _soft(y - self.diaphragm(side, np.clip(self.lateral_u(side), 0, 1)), px)
        abdomen = np.clip(below, 0, 1) * body
        d = d * (1 - abdomen) + abdomen * np.maximum(d, _FLUID)
        self.density = d


# -- findings ---------------------------------------------------------------------
Reshape = Callable[[Anatomy, np.random.Generator], None]
Paint = Callable[[Canvas, np.random.Generator], None]

RESHAPES: dict[str, Reshape] = {}
PAINTS: dict[str, Paint] = {}


def _reshape(name: str) -> Callable[[Reshape], Reshape]:
    def deco(fn: Reshape) -> Reshape:
        RESHAPES[name] = fn
        return fn

    return deco


def _paint(name: str) -> Callable[[Paint], Paint]:
    def deco(fn: Paint) -> Paint:
        PAINTS[name] = fn
        return fn

    return deco


def _side(rng: np.random.Generator) -> str:
    return "r" if rng.random() < 0.5 else "l"


@_reshape("Cardiomegaly")
def cardiomegaly(anat: Anatomy, rng: np.random.Generator) -> None:
    """Enlarged heart: cardiothoracic ratio 0.52-0.66 (normal 0.38-0.49), taller too."""
    anat.ctr = rng.uniform(0.52, 0.66)
    anat.heart_h *= rng.uniform(1.05, 1.15)


@_reshape("Enlarged Cardiomediastinum")
def enlarged_cardiomediastinum(anat: Anatomy, rng: np.random.Generator) -> None:
    """Widened upper mediastinum (above the heart)."""
    anat.mediast_widen = rng.uniform(0.025, 0.05)


@_reshape("Emphysema")
def emphysema_shape(anat: Anatomy, rng: np.random.Generator) -> None:
    """Hyperinflation: larger, lower, flatter lungs (painted hyperlucent below)."""
    anat.hyperinflation = rng.uniform(0.6, 1.0)


@_reshape("Atelectasis")
def atelectasis_shape(anat: Anatomy, rng: np.random.Generator) -> None:
    """Volume loss: one hemidiaphragm elevated, mediastinum pulled toward that side."""
    lift = rng.uniform(0.035, 0.07)
    if rng.random() < 0.5:
        anat.dia_r -= lift
        anat.cx -= 0.01
    else:
        anat.dia_l -= lift
        anat.cx += 0.01


@_reshape("Pneumothorax")
def pneumothorax_shape(anat: Anatomy, rng: np.random.Generator) -> None:
    """Collapse one lung 12-30 % away from the chest wall (the rim is painted dark)."""
    if rng.random() < 0.5:
        anat.collapse_r = rng.uniform(0.12, 0.3)
    else:
        anat.collapse_l = rng.uniform(0.12, 0.3)


@_paint("Atelectasis")
def atelectasis(c: Canvas, rng: np.random.Generator) -> None:
    """Plate-like/wedge opacity in a lower zone (the side with the elevated diaphragm)."""
    side = "r" if c.anat.dia_r < c.anat.dia_l else "l"
    hx, hy = c.hilum(side)
    sign = -1.0 if side == "r" else 1.0
    angle = rng.uniform(0.1, 0.5)  # radians below horizontal, pointing laterally
    dxw, dyw = c.x - hx, c.y - hy - 0.08
    along = sign * dxw * math.cos(angle) + dyw * math.sin(angle)
    across = -sign * dxw * math.sin(angle) + dyw * math.cos(angle)
    width = 0.012 + 0.06 * np.clip(along / 0.25, 0, 1)  # wedge: widens toward the periphery
    band = _soft(width - np.abs(across), 2 * c.px) * _soft(along, 0.01)
    c.toward(_FLUID, rng.uniform(0.4, 0.75) * band * c.side_mask(side))


@_paint("Pleural Effusion")
def pleural_effusion(c: Canvas, rng: np.random.Generator) -> None:
    """Basal meniscus: fluid fills the costophrenic angle, curving up the chest wall."""
    sides = ("r", "l") if rng.random() < 0.35 else (_side(rng),)
    for side in sides:
        u = np.clip(c.lateral_u(side), 0, 1.2)
        dia = c.anat.dia_r if side == "r" else c.anat.dia_l
        level = dia - rng.uniform(0.10, 0.22)
        meniscus = level - 0.06 * u**2
        fluid = _soft(c.y - meniscus, 0.012)
        c.toward(_FLUID, rng.uniform(0.5, 0.95) * fluid * c.side_mask(side))


@_paint("Consolidation")
def consolidation(c: Canvas, rng: np.random.Generator) -> None:
    """Dense, patchy lobar opacity (lower or upper zone of one lung)."""
    side = _side(rng)
    lower = rng.random() < 0.65
    cx, cy = c.random_lung_point(rng, side, *((0.50, 0.62) if lower else (0.25, 0.38)))
    m = c.blob(cx, cy, rng.uniform(0.08, 0.12), rng.uniform(0.07, 0.10), rng, rough=0.6)
    c.toward(_FLUID + 0.05, rng.uniform(0.45, 0.9) * m * c.side_mask(side))


@_paint("Edema")
def edema(c: Canvas, rng: np.random.Generator) -> None:
    """Bilateral perihilar haze (batwing), fading toward the periphery."""
    haze = np.zeros_like(c.density)
    spread = rng.uniform(0.12, 0.17)
    for side in ("r", "l"):
        hx, hy = c.hilum(side)
        dist = np.sqrt(((c.x - hx) / 1.2) ** 2 + (c.y - hy) ** 2)
        haze += np.exp(-((dist / spread) ** 2)) * c.side_mask(side)
    c.toward(_SOFT, rng.uniform(0.35, 0.75) * haze)


@_paint("Infiltration")
def infiltration(c: Canvas, rng: np.random.Generator) -> None:
    """Diffuse patchy texture in both lungs."""
    patches = _soft(smooth_noise(rng, c.density.shape, 0.07 * c.height) - 0.3, 0.4)
    c.toward(_SOFT, 0.45 * patches * c.lungs())


@_paint("Mass")
def mass(c: Canvas, rng: np.random.Generator) -> None:
    """Larger (r ~ 0.04-0.07) lobulated round opacity."""
    side = _side(rng)
    cx, cy = c.random_lung_point(rng, side)
    r = rng.uniform(0.04, 0.07)
    m = c.blob(cx, cy, r, r * rng.uniform(0.85, 1.15), rng, rough=0.25)
    c.toward(_FLUID + 0.08, 0.95 * m * c.side_mask(side))


@_paint("Nodule")
def nodule(c: Canvas, rng: np.random.Generator) -> None:
    """Small round opacity (r ~ 0.015-0.028), occasionally two."""
    for _ in range(1 + int(rng.random() < 0.25)):
        side = _side(rng)
        cx, cy = c.random_lung_point(rng, side)
        r = max(rng.uniform(0.015, 0.028), 1.5 * c.px)
        dist = np.sqrt((c.x - cx) ** 2 + (c.y - cy) ** 2)
        c.toward(_FLUID + 0.1, 0.9 * _soft(r - dist, c.px) * c.side_mask(side))


@_paint("Pneumonia")
def pneumonia(c: Canvas, rng: np.random.Generator) -> None:
    """Focal fluffy opacity with consolidation-like core (one lung, any zone)."""
    side = _side(rng)
    cx, cy = c.random_lung_point(rng, side, 0.3, 0.62)
    outer = c.blob(cx, cy, rng.uniform(0.07, 0.1), rng.uniform(0.06, 0.09), rng, rough=0.8)
    core = c.blob(cx, cy, 0.035, 0.035, rng, rough=0.4)
    c.toward(_SOFT, 0.6 * outer * c.side_mask(side))
    c.toward(_FLUID, 0.8 * core * c.side_mask(side))


@_paint("Pneumothorax")
def pneumothorax(c: Canvas, rng: np.random.Generator) -> None:
    """Visceral pleural line at the collapsed lung edge (the rim is dark by geometry)."""
    for side, collapse in (("r", c.anat.collapse_r), ("l", c.anat.collapse_l)):
        if collapse:
            aerated = c.aerated_r if side == "r" else c.aerated_l
            edge = aerated * (1 - aerated) * 4.0 * c.side_mask(side)
            c.density += 0.25 * edge


@_paint("Emphysema")
def emphysema(c: Canvas, rng: np.random.Generator) -> None:
    """Hyperlucent lungs with a few bullae (round lucencies)."""
    lungs = c.lungs()
    c.toward(_AIR + 0.05, 0.35 * lungs)
    for _ in range(rng.integers(2, 5)):
        side = _side(rng)
        bx, by = c.random_lung_point(rng, side, 0.2, 0.5)
        r = rng.uniform(0.02, 0.04)
        dist = np.sqrt((c.x - bx) ** 2 + (c.y - by) ** 2)
        c.toward(_AIR, 0.7 * _soft(r - dist, c.px) * c.side_mask(side))


@_paint("Fibrosis")
def fibrosis(c: Canvas, rng: np.random.Generator) -> None:
    """Reticular (net-like) texture, basal and peripheral predominant."""
    mesh = np.abs(smooth_noise(rng, c.density.shape, 2.5))
    net = _soft(0.35 - mesh, 0.1)
    basal = np.clip((c.y - 0.35) / 0.3, 0, 1)
    peripheral = np.clip(np.maximum(c.lateral_u("r"), c.lateral_u("l")) - 0.3, 0, 1) / 0.7
    c.toward(_SOFT + 0.1, 0.7 * net * basal * (0.4 + 0.6 * peripheral) * c.lungs())


@_paint("Pleural Thickening")
def pleural_thickening(c: Canvas, rng: np.random.Generator) -> None:
    """Smooth peripheral band along the lateral chest wall (or an apical cap)."""
    side = _side(rng)
    thick = rng.uniform(0.012, 0.025)
    mask = c.side_mask(side)
    # Distance to the lateral lung edge in u units -> height units.
    u = c.lateral_u(side)
    band = _soft(u - (1.0 - thick / c.thorax_hw) * 0.97, 0.02)
    apical = _soft(c.anat.apex_y + 0.04 - c.y, 0.01) if rng.random() < 0.4 else 0.0
    c.toward(_FLUID, 0.9 * np.clip(band + apical, 0, 1) * mask)


@_paint("Pleural Other")
def pleural_other(c: Canvas, rng: np.random.Generator) -> None:
    """CheXpert's 'Pleural Other' (thickening, plaques): rendered like thickening."""
    pleural_thickening(c, rng)


@_paint("Hernia")
def hernia(c: Canvas, rng: np.random.Generator) -> None:
    """Retrocardiac air bubble (hiatal hernia) with an air-fluid level."""
    a = c.anat
    bx = a.cx + rng.uniform(0.0, 0.03)
    by = a.heart_cy + 0.4 * a.heart_h
    r = rng.uniform(0.035, 0.05)
    dist = np.sqrt((c.x - bx) ** 2 + ((c.y - by) / 0.85) ** 2)
    bubble = _soft(r - dist, 1.5 * c.px)
    gas = bubble * _soft(by + 0.3 * r - c.y, c.px)
    c.toward(_AIR + 0.15, 0.85 * gas)
    rim = _soft(r + 2 * c.px - dist, c.px) - bubble
    c.density += 0.15 * np.clip(rim, 0, 1)


@_paint("Lung Opacity")
def lung_opacity(c: Canvas, rng: np.random.Generator) -> None:
    """Any parenchymal opacity: a hazy patch in one lung."""
    side = _side(rng)
    cx, cy = c.random_lung_point(rng, side)
    m = c.blob(cx, cy, rng.uniform(0.06, 0.1), rng.uniform(0.06, 0.1), rng, rough=0.7)
    c.toward(_SOFT, 0.6 * m * c.side_mask(side))


@_paint("Lung Lesion")
def lung_lesion(c: Canvas, rng: np.random.Generator) -> None:
    """Nodule or mass."""
    (nodule if rng.random() < 0.6 else mass)(c, rng)


@_paint("Fracture")
def fracture(c: Canvas, rng: np.random.Generator) -> None:
    """A rib with a dark fracture gap and a bright callus beside it."""
    a = c.anat
    k = int(rng.integers(2, 8))
    side = _side(rng)
    dx = np.abs(c.x - a.cx)
    u = np.clip(dx / c.thorax_hw, 0, 1.3)
    yc = a.rib_y0 + k * a.rib_step + 0.09 * u**2 - 0.05 * u
    rib = _soft(0.009 - np.abs(c.y - yc), c.px)
    fx = a.cx + (-1 if side == "r" else 1) * rng.uniform(0.6, 0.9) * c.thorax_hw
    gap = _soft(0.006 - np.abs(c.x - fx), c.px)
    callus = _soft(0.02 - np.sqrt((c.x - fx) ** 2 + (c.y - yc) ** 2), c.px)
    c.density -= 0.2 * rib * gap
    c.density += 0.2 * callus * (1 - gap)


@_paint("Support Devices")
def support_devices(c: Canvas, rng: np.random.Generator) -> None:
    """Radio-opaque lines: a central line or NG tube, sometimes ECG leads."""
    a = c.anat
    start_x = a.cx + rng.uniform(-0.2, 0.2)
    end_y = rng.uniform(0.45, 0.85)
    path_x = start_x + (a.cx + 0.01 - start_x) * np.clip(c.y / 0.3, 0, 1)
    line = _soft(0.004 + 0.5 * c.px - np.abs(c.x - path_x), 0.5 * c.px) * _soft(end_y - c.y, c.px)
    c.density = np.maximum(c.density, _BONE * line + c.density * (1 - line))
    for _ in range(int(rng.integers(0, 4))):
        ex, ey = rng.uniform(-0.3, 0.3), rng.uniform(0.25, 0.7)
        dot = _soft(0.012 - np.sqrt((c.x - ex) ** 2 + (c.y - ey) ** 2), c.px)
        c.density = np.maximum(c.density, 0.95 * dot + c.density * (1 - dot))


# -- site style and the public API ---------------------------------------------------
@dataclass(frozen=True)
class SiteStyle:
    """How one site's images and labels differ from another's.

    Intensity: ``out = clip(density, 0, 1) ** gamma * contrast + brightness``, then a
    Gaussian blur of `blur` pixels (sigma) and additive Gaussian noise of `noise`
    (std, in [0, 1] intensity units), clipped to [0, 1].
    Sizes: `base_size` is the nominal (height, width) in pixels; `aspect_range` the
    (min, max) width/height ratio drawn uniformly per image (height kept, width
    rounded); `size_jitter` the relative jitter of the height.
    Labels: `prevalence` maps canonical names to the per-image positive probability
    (a one-factor Gaussian copula with loading sqrt(`correlation`) couples findings
    while keeping each marginal); `images_per_patient` is (min, max) inclusive;
    `ap_fraction` is the probability of an AP (vs PA) frontal view.
    Framing: `zoom` magnifies the frontal anatomy about the image centre (1.1 = a 10 %
    tighter field of view), a geometric difference between sites.
    """

    name: str
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    noise: float = 0.02
    blur: float = 0.0
    base_size: tuple[int, int] = (128, 128)
    aspect_range: tuple[float, float] = (1.0, 1.0)
    size_jitter: float = 0.0
    prevalence: Mapping[str, float] = field(default_factory=dict)
    correlation: float = 0.25
    images_per_patient: tuple[int, int] = (1, 4)
    ap_fraction: float = 0.4
    zoom: float = 1.0
    signal: float = 1.0  # strength of every finding's trace (see the module doc); 0 = invisible

    def image_size(self, rng: np.random.Generator) -> tuple[int, int]:
        """Draw one image's (height, width) in pixels."""
        h0, w0 = self.base_size
        h = int(round(h0 * (1.0 + rng.uniform(-self.size_jitter, self.size_jitter)))) if self.size_jitter else h0
        lo, hi = self.aspect_range
        return h, int(round(h * rng.uniform(lo, hi)))

    def sample_labels(self, rng: np.random.Generator, floor: float = 0.0) -> dict[str, bool]:
        """Draw one label vector from `prevalence` (each prevalence at least `floor`).

        Deterministic given the generator state; always consumes the same number of
        draws regardless of the outcome.
        """
        names = sorted(self.prevalence)
        common = rng.standard_normal()
        own = rng.standard_normal(len(names))
        rho = self.correlation
        z = math.sqrt(rho) * common + math.sqrt(1.0 - rho) * own
        out: dict[str, bool] = {}
        for name, zi in zip(names, z):
            p = min(max(float(self.prevalence[name]), floor), 0.999)
            out[name] = bool(p > 0 and zi < NormalDist().inv_cdf(p))
        return out


def apply_style(density: np.ndarray, style: SiteStyle, rng: np.random.Generator) -> np.ndarray:
    """Site intensity curve, blur and noise (see `SiteStyle`); returns values in [0, 1]."""
    img = np.clip(density.astype(np.float64), 0.0, 1.0) ** style.gamma * style.contrast + style.brightness
    if style.blur > 0:
        img = ndimage.gaussian_filter(img, style.blur, mode="nearest")
    img = img + rng.normal(0.0, style.noise, img.shape) if style.noise > 0 else img
    return np.clip(img, 0.0, 1.0)


_SIGNAL: contextvars.ContextVar[float] = contextvars.ContextVar("finding_signal", default=1.0)


@contextlib.contextmanager
def finding_signal(value: float) -> Iterator[None]:
    """Scale the trace of every finding rendered inside the block (multiplies `SiteStyle.signal`).

    This is how `generate(..., signal=...)` reaches every site writer without each
    writer threading a parameter through its own styles.
    """
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"signal must be a finite number >= 0, got {value}")
    token = _SIGNAL.set(float(value))
    try:
        yield
    finally:
        _SIGNAL.reset(token)


def effective_signal(style: SiteStyle) -> float:
    """The finding strength a render with `style` uses now (style times context)."""
    return style.signal * _SIGNAL.get()


# Physical limits of anatomy fields that a scaled reshape could push too far.
_ANATOMY_LIMITS: dict[str, tuple[float, float]] = {
    "collapse_r": (0.0, 0.6),
    "collapse_l": (0.0, 0.6),
    "hyperinflation": (0.0, 1.5),
    "ctr": (0.3, 0.8),
    "mediast_widen": (0.0, 0.12),
}


def _scaled_reshape(anat: Anatomy, before: Anatomy, strength: float) -> None:
    """Move every changed anatomy field to `before + strength * (after - before)`, in place."""
    for f in fields(Anatomy):
        a, b = getattr(anat, f.name), getattr(before, f.name)
        if a != b:
            v = b + strength * (a - b)
            lo, hi = _ANATOMY_LIMITS.get(f.name, (-math.inf, math.inf))
            setattr(anat, f.name, min(max(v, lo), hi))


def _check_labels(labels: Mapping[str, bool]) -> None:
    unknown = sorted(set(labels) - set(RENDERABLE))
    if unknown:
        raise ValueError(f"cannot render findings {unknown}; known: {', '.join(RENDERABLE)}")


def render_scene(
    labels: Mapping[str, bool],
    rng: np.random.Generator,
    style: SiteStyle,
    height: int,
    width: int,
    *,
    anatomy: Anatomy | None = None,
    view: str = "PA",
) -> tuple[np.ndarray, Anatomy]:
    """Like `render`, also returning the final anatomy (after findings reshaped it)."""
    _check_labels(labels)
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; known: {VIEWS}")
    seeds = rng.integers(0, 2**63, size=len(RENDERABLE) + 3)
    anat_rng, base_rng, noise_rng = (np.random.default_rng(int(s)) for s in seeds[:3])
    anat = replace(anatomy) if anatomy is not None else sample_anatomy(anat_rng)
    finding_rngs = {n: np.random.default_rng(int(s)) for n, s in zip(RENDERABLE, seeds[3:])}
    positive = [n for n in RENDERABLE if labels.get(n, False)]
    if view == "LL":
        density = _lateral_density(anat, positive, height, width, base_rng, finding_rngs)
        return apply_style(density, style, noise_rng), anat
    strength = effective_signal(style)
    for n in positive:
        if n in RESHAPES:
            before = replace(anat)
            RESHAPES[n](anat, finding_rngs[n])
            if strength != 1.0:
                _scaled_reshape(anat, before, strength)
    canvas = Canvas(anat, height, width, view, base_rng, zoom=style.zoom)
    for n in positive:
        if n in PAINTS:  # some findings are pure geometry (cardiomegaly)
            before_d = canvas.density.copy() if strength != 1.0 else None
            PAINTS[n](canvas, finding_rngs[n])
            if before_d is not None:
                canvas.density = before_d + strength * (canvas.density - before_d)
    return apply_style(canvas.density, style, noise_rng), anat


def render(
    labels: Mapping[str, bool],
    rng: np.random.Generator,
    style: SiteStyle,
    height: int,
    width: int,
    *,
    anatomy: Anatomy | None = None,
    view: str = "PA",
) -> np.ndarray:
    """Render one radiograph, shape (height, width), float64 in [0, 1], air dark.

    `labels` maps names in `RENDERABLE` (canonical NIH-14 plus CheXpert extras) to
    booleans; absent names are negative. `anatomy` fixes the patient (follow-ups);
    otherwise one is drawn. `view` is `PA`, `AP` (heart magnified, scapulae over the
    lungs, clavicles higher) or `LL` (a lateral view, coarser findings).
    """
    return render_scene(labels, rng, style, height, width, anatomy=anatomy, view=view)[0]


def _lateral_density(
    anat: Anatomy,
    positive: list[str],
    height: int,
    width: int,
    rng: np.random.Generator,
    finding_rngs: Mapping[str, np.random.Generator],
) -> np.ndarray:
    """A lateral chest: spine posterior (image right), heart anterior-inferior.

    Only findings visible on a lateral view at this level of detail are drawn:
    cardiomegaly (larger heart), effusion (posterior basal meniscus), and
    consolidation/pneumonia/mass/edema as lung opacities.
    """
    rows = (np.arange(height) + 0.5) / height
    cols = (np.arange(width) + 0.5) / width - 0.5
    y, x = np.meshgrid(rows, cols, indexing="ij")
    px = 1.0 / height
    shape = (height, width)
    body = _soft(0.40 - np.abs(x - 0.02), 2 * px) * _soft(y - 0.05, 2 * px)
    d = _SOFT * body * (1 + 0.05 * smooth_noise(rng, shape, 12))
    lung = _soft(0.30 - np.sqrt(((x + 0.02) / 1.0) ** 2 + ((y - 0.45) / 1.35) ** 2), 2 * px)
    lung = lung * _soft(anat.dia_r - y, px)
    d = d * (1 - lung) + lung * (_LUNG + 0.06 * np.abs(smooth_noise(rng, shape, 4)))
    spine = _soft(0.05 - np.abs(x - 0.30), px) * body
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * y / anat.rib_step)
    d = np.maximum(d, (_SOFT + 0.2 + 0.1 * vert) * spine)
    scale = 1.0 + 1.2 * max(anat.ctr - 0.42, 0.0)
    if "Cardiomegaly" in positive:
        scale = 1.0 + 1.2 * (finding_rngs["Cardiomegaly"].uniform(0.52, 0.66) - 0.42)
    heart = _soft(1 - (((x + 0.12) / (0.15 * scale)) ** 2 + ((y - 0.58) / (0.13 * scale)) ** 2), 0.08)
    d = d * (1 - heart) + heart * np.maximum(d, _HEART)
    if "Pleural Effusion" in positive:
        level = anat.dia_r - finding_rngs["Pleural Effusion"].uniform(0.08, 0.16)
        fluid = _soft(y - (level - 0.08 * np.clip((x - 0.05) / 0.25, 0, 1)), 0.01) * lung
        d += (_FLUID - d) * 0.9 * fluid
    for name in ("Consolidation", "Pneumonia", "Mass", "Edema", "Atelectasis"):
        if name in positive:
            r = finding_rngs[name]
            bx, by = r.uniform(-0.15, 0.15), r.uniform(0.3, 0.6)
            blob = _soft(0.07 - np.sqrt((x - bx) ** 2 + (y - by) ** 2), 0.01) * lung
            d += (_FLUID - d) * 0.7 * blob
    below = _soft(y - anat.dia_r, px) * body
    return d * (1 - below) + below * np.maximum(d, _FLUID)
