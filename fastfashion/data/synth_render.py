"""Draw one synthetic garment image whose look encodes its labels (used by :mod:`fastfashion.data.synth`).

The renderer looks classes up by attribute and class name (``pattern`` / ``floral`` ...): pattern is a texture,
sleeve, length and fit are the garment's shape, neckline is the cut at the neck, fabric is a colour and texture
family. An attribute or class it does not know falls back to a neutral look, and every attribute the renderer has no
drawing for is shown as a badge whose hue encodes the class id, so any schema stays learnable.

All randomness comes from the ``rng`` passed in, so an image is a pure function of its labels and that generator.
"""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..schema import Schema

# The attributes drawn as part of the garment; any other schema attribute gets a badge.
DRAWN = ("pattern", "sleeve", "length", "neckline", "fabric", "fit")

# Fabric colour families: (hue range in turns, saturation range, value range). Hue None = any hue.
FABRIC_HSV = {
    "denim": ((0.57, 0.63), (0.45, 0.75), (0.35, 0.70)),     # blue
    "chiffon": (None, (0.12, 0.30), (0.88, 1.00)),           # light pastel (and translucent, below)
    "cotton": (None, (0.30, 0.75), (0.45, 0.85)),            # mid colours
    "leather": (None, (0.05, 0.35), (0.08, 0.25)),           # dark (and glossy, below)
    "faux": ((0.05, 0.12), (0.15, 0.55), (0.35, 0.90)),      # fur-ish beige/brown (and noisy, below)
    "knit": (None, (0.20, 0.55), (0.35, 0.75)),              # heathered (and ribbed, below)
}
FIT_HALF_WIDTH = {"tight": 0.115, "conventional": 0.160, "loose": 0.215}   # torso half width / garment height
LENGTH_HEM = {"no_dress": 0.40, "mini_length": 0.62, "maxi_length": 0.90}  # hem below the shoulders / height
SLEEVE_END = {"long_sleeve": 0.46, "short_sleeve": 0.15}                   # cuff below the shoulders / height


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard normal float32 noise (float32 draws are twice as fast as float64)."""
    return rng.standard_normal(shape, dtype=np.float32)


def _fabric_colour(rng: np.random.Generator, fabric: str) -> np.ndarray:
    hue, sat, val = FABRIC_HSV.get(fabric, FABRIC_HSV["cotton"])
    h = rng.uniform(*hue) if hue else rng.random()
    return _hsv(h, rng.uniform(*sat), rng.uniform(*val))


def _contrast(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A colour that stands out against ``base`` (light on dark, dark on light, hue shifted)."""
    h, s, v = colorsys.rgb_to_hsv(*base)
    v2 = rng.uniform(0.05, 0.3) if v > 0.55 else rng.uniform(0.75, 1.0)
    return _hsv(h + rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.9), v2)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A flat or gradient background (float32 HxWx3 in 0..1), mostly light like catalogue photos."""
    c0 = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.55, 1.0))
    c1 = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.55, 1.0))
    kind = rng.integers(3)  # flat, vertical or horizontal gradient
    t = np.zeros((1, 1, 1), np.float32)
    if kind == 1:
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    elif kind == 2:
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    out = np.empty((h, w, 3), np.float32)
    out[...] = c0 * (1 - t) + c1 * t
    return out


def _pattern_layer(rng, pattern: str, size, box, mask: Image.Image, u: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha of the second colour, brightness multiplier), both HxW float32, for a pattern class."""
    w, h = size
    x0, y0, x1, y1 = box
    alpha = Image.new("L", size, 0)
    d = ImageDraw.Draw(alpha)
    shade = np.ones((h, w), np.float32)
    if pattern == "floral":
        for _ in range(int(rng.integers(6, 15))):
            cx, cy, r = rng.uniform(x0, x1), rng.uniform(y0, y1), u * rng.uniform(0.022, 0.04)
            for k in range(5):
                a = 2 * np.pi * k / 5 + rng.random()
                px, py = cx + r * np.cos(a), cy + r * np.sin(a)
                d.ellipse((px - r * 0.7, py - r * 0.7, px + r * 0.7, py + r * 0.7), fill=255)
            d.ellipse((cx - r * 0.4, cy - r * 0.4, cx + r * 0.4, cy + r * 0.4), fill=140)
    elif pattern == "graphic":
        cx, cy = (x0 + x1) / 2 + rng.uniform(-0.02, 0.02) * u, y0 + rng.uniform(0.12, 0.2) * u
        r = u * rng.uniform(0.06, 0.09)
        shape = int(rng.integers(4))  # a logo: star, triangle, diamond or ring
        if shape == 3:
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
            d.ellipse((cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5), fill=0)
        else:
            n, inner = ((5, 0.45), (3, 1.0), (4, 1.0))[shape]
            pts = [(cx + r * (1 if k % 2 == 0 else inner) * np.sin(np.pi * k / n),
                    cy - r * (1 if k % 2 == 0 else inner) * np.cos(np.pi * k / n)) for k in range(2 * n)]
            d.polygon(pts, fill=255)
        d.rectangle((cx - r, cy + r * 1.2, cx + r, cy + r * 1.45), fill=255)  # a "word" under the logo
    elif pattern == "striped":
        period, phase = u * rng.uniform(0.035, 0.06), rng.uniform(0, 1)
        y = np.arange(h, dtype=np.float32)[:, None]
        band = ((y / period + phase) % 1.0 < 0.5).astype(np.float32) * np.ones((1, w), np.float32)
        return band, shade
    elif pattern == "lattice":
        period, lw = u * rng.uniform(0.05, 0.08), max(2, round(u * 0.009))
        gx, gy = rng.uniform(0, period), rng.uniform(0, period)
        for x in np.arange(x0 - period + gx, x1 + period, period):
            d.line((x, 0, x, h), fill=255, width=lw)
        for y in np.arange(y0 - period + gy, y1 + period, period):
            d.line((0, y, w, y), fill=255, width=lw)
    elif pattern == "embroidered":
        edge = np.asarray(mask.filter(ImageFilter.MaxFilter(3))).astype(np.int16) - np.asarray(
            mask.filter(ImageFilter.MinFilter(9)))
        ys, xs = np.nonzero(edge > 128)
        if len(xs):
            rd = max(1.5, u * 0.008)
            for k in rng.choice(len(xs), size=min(len(xs), int(rng.integers(60, 120))), replace=False):
                d.ellipse((xs[k] - rd, ys[k] - rd, xs[k] + rd, ys[k] + rd), fill=255)
    elif pattern == "pleated":
        period = u * rng.uniform(0.035, 0.05)
        x = np.arange(w, dtype=np.float32)[None, :]
        shade = shade * (1.0 + 0.35 * np.sin(2 * np.pi * x / period)).astype(np.float32)
    # solid (and unknown patterns): flat
    return np.asarray(alpha, np.float32) / 255.0, shade


def _fabric_texture(rng, fabric: str, size, u: float) -> np.ndarray:
    """Brightness multiplier HxW for a fabric's texture."""
    w, h = size
    y, x = np.ogrid[0:h, 0:w]
    y, x = y.astype(np.float32), x.astype(np.float32)
    if fabric == "denim":  # diagonal twill
        return 1.0 + 0.12 * np.sin(2 * np.pi * (x + y) / 5.0)
    if fabric == "knit":  # vertical ribs and heathered noise
        return 1.0 + 0.18 * np.sin(2 * np.pi * x / rng.uniform(5.0, 7.0)) + 0.05 * _noise(rng, (h, w))
    if fabric == "faux":  # fur: coarse blotchy noise plus fine fibres
        small = rng.normal(0, 1, (max(2, h // 6), max(2, w // 6))).astype(np.float32)
        blotch = np.asarray(Image.fromarray(small).resize(size, Image.BILINEAR))
        return 1.0 + 0.18 * blotch + 0.12 * _noise(rng, (h, w))
    if fabric == "leather":  # glossy highlight streak
        x0, s = rng.uniform(0.35, 0.65) * w, u * rng.uniform(0.03, 0.06)
        return 1.0 + 2.5 * np.exp(-(((x - x0 - 0.2 * (y - h / 2)) / s) ** 2))
    return 1.0 + 0.03 * _noise(rng, (h, w))  # cotton, chiffon: nearly flat


def render_garment(schema: Schema, labels, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """An RGB image of ``size`` (width, height) showing a garment with the given class ids (one per attribute)."""
    look = schema.label_names(labels)
    w, h = size
    u = min(h * rng.uniform(0.82, 0.97), w * 1.35)  # garment height; narrow canvases get a smaller figure
    cx = w / 2 + rng.uniform(-0.07, 0.07) * w
    top = rng.uniform(0.01, 0.06) * h
    fig = _Figure(size, u, cx, top, ys=top + 0.17 * u,  # ys: the shoulder line
                  half=u * FIT_HALF_WIDTH.get(look.get("fit"), FIT_HALF_WIDTH["conventional"]), arm=u * 0.045)
    img = _background(rng, w, h)
    img = _draw_person(rng, fig, look, img)
    mask, box = _garment_mask(fig, look)
    img = _paint_garment(rng, fig, look, mask, box, img)
    _badges(rng, schema, labels, img, u)
    img += rng.uniform(0.004, 0.02) * _noise(rng, img.shape)  # sensor noise
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


class _Figure:
    """Where the figure stands: canvas ``size``, garment height ``u``, centre ``cx``, head ``top``, shoulder line
    ``ys``, torso half width ``half`` (from the fit), arm width ``arm``, shoulder half width ``sh``."""

    def __init__(self, size, u, cx, top, *, ys, half, arm):
        self.size, self.u, self.cx, self.top, self.ys, self.half, self.arm = size, u, cx, top, ys, half, arm
        self.sh = max(half, u * 0.13)  # shoulders do not shrink with a tight fit


def _draw_person(rng, f: _Figure, look: dict, img: np.ndarray) -> np.ndarray:
    """Head, neck, arms and legs in a skin tone (shows through necklines, under short sleeves ...), and trousers
    under a top."""
    u, cx, top, ys, sh, arm = f.u, f.cx, f.top, f.ys, f.sh, f.arm
    person = Image.new("L", f.size, 0)
    pd = ImageDraw.Draw(person)
    pd.ellipse((cx - 0.07 * u, top, cx + 0.07 * u, top + 0.15 * u), fill=255)
    pd.rectangle((cx - 0.035 * u, top + 0.1 * u, cx + 0.035 * u, ys + 0.05 * u), fill=255)
    for s in (-1, 1):
        pd.polygon([(cx + s * sh, ys), (cx + s * (sh + arm), ys + 0.02 * u), (cx + s * (sh + arm * 1.6), ys + 0.5 * u),
                    (cx + s * (sh + arm * 0.6), ys + 0.5 * u), (cx + s * (sh - arm * 0.3), ys + 0.1 * u)], fill=255)
        pd.rectangle((cx + min(s * 0.015, s * 0.09) * u, ys + 0.35 * u, cx + max(s * 0.015, s * 0.09) * u, top + u),
                     fill=255)  # a leg
    skin = _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    pm = np.asarray(person, np.float32)[..., None] / 255.0
    img = img * (1 - pm) + skin * pm
    if look.get("length") == "no_dress":  # trousers under a top
        pants = Image.new("L", f.size, 0)
        ImageDraw.Draw(pants).polygon([(cx - 0.11 * u, ys + 0.35 * u), (cx + 0.11 * u, ys + 0.35 * u),
                                       (cx + 0.1 * u, top + u), (cx - 0.1 * u, top + u)], fill=255)
        pm = np.asarray(pants, np.float32)[..., None] / 255.0
        img = img * (1 - pm) + _hsv(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.1, 0.5)) * pm
    return img


def _garment_mask(f: _Figure, look: dict) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The garment's outline (torso from the fit, skirt from the length, sleeves, then the neckline cut) and the
    box a pattern fills."""
    u, cx, top, ys, sh, arm, half = f.u, f.cx, f.top, f.ys, f.sh, f.arm, f.half
    mask = Image.new("L", f.size, 0)
    md = ImageDraw.Draw(mask)
    fit = look.get("fit")
    waist = half * (0.78 if fit == "tight" else 1.0)
    hem_y = ys + u * LENGTH_HEM.get(look.get("length"), LENGTH_HEM["no_dress"])
    hem = half * (1.15 if fit == "loose" else 1.0) + (hem_y - ys - 0.4 * u) * (0.45 if fit == "loose" else 0.3)
    strap = 0.7 if look.get("sleeve") == "sleeveless" else 1.0
    md.polygon([(cx - sh * strap, ys), (cx + sh * strap, ys), (cx + half, ys + 0.12 * u), (cx + waist, ys + 0.28 * u),
                (cx + hem, hem_y), (cx - hem, hem_y), (cx - waist, ys + 0.28 * u), (cx - half, ys + 0.12 * u)],
               fill=255)
    end = SLEEVE_END.get(look.get("sleeve"))
    if end is not None:
        k = end / 0.5
        for s in (-1, 1):
            md.polygon([(cx + s * (sh - arm * 0.5), ys), (cx + s * (sh + arm * 1.2), ys + 0.01 * u),
                        (cx + s * (sh + arm * (1.2 + 0.7 * k)), ys + end * u),
                        (cx + s * (sh + arm * (0.4 + 0.3 * k) - arm * 0.5), ys + end * u),
                        (cx + s * (sh - arm * 0.5), ys + 0.12 * u)], fill=255)
    neck, nw = look.get("neckline"), 0.065 * u
    if neck == "crew_neckline":
        md.ellipse((cx - nw, ys - nw * 0.8, cx + nw, ys + nw * 0.8), fill=0)
    elif neck == "v_neckline":
        md.polygon([(cx - nw, ys - 1), (cx + nw, ys - 1), (cx, ys + 0.17 * u)], fill=0)
    elif neck == "square_neckline":
        md.rectangle((cx - nw * 1.1, ys - 1, cx + nw * 1.1, ys + 0.09 * u), fill=0)
    elif neck == "no_neckline":  # a high collar covering the neck
        md.rectangle((cx - 0.045 * u, top + 0.12 * u, cx + 0.045 * u, ys + 1), fill=255)
    return mask, (cx - hem - arm * 2, ys, cx + hem + arm * 2, hem_y)


def _paint_garment(rng, f: _Figure, look: dict, mask: Image.Image, box, img: np.ndarray) -> np.ndarray:
    """Fabric colour and texture, the pattern, and the garment composited over ``img``."""
    fabric = look.get("fabric", "cotton")
    base = _fabric_colour(rng, fabric)
    alpha_p, shade = _pattern_layer(rng, look.get("pattern", "solid"), f.size, box, mask, f.u)
    tex = _fabric_texture(rng, fabric, f.size, f.u) * shade
    cloth = base * (1 - alpha_p[..., None]) + _contrast(rng, base) * alpha_p[..., None]
    cloth = cloth * tex[..., None].astype(np.float32)
    m = mask.filter(ImageFilter.GaussianBlur(1.2)) if fabric == "faux" else mask   # fuzzy fur edges
    a = np.asarray(m, np.float32)[..., None] / 255.0
    if fabric == "chiffon":
        a = a * rng.uniform(0.55, 0.72)  # translucent: person and background show through
    return img * (1 - a) + cloth * a


def _badges(rng, schema: Schema, labels, img: np.ndarray, u: float) -> None:
    """Attributes without a drawing: a square badge per attribute whose hue encodes the class id (in place)."""
    h, w, _ = img.shape
    r = max(4, int(u * 0.04))
    for k, (attr, v) in enumerate(zip(schema, labels)):
        if attr.name in DRAWN:
            continue
        x, y = int(rng.integers(0, max(1, w - 2 * r))), int(rng.integers(0, max(1, h - 2 * r)))
        img[y:y + 2 * r, x:x + 2 * r] = _hsv((int(v) + 0.5) / attr.num_classes, 0.9, 0.9 - 0.5 * (k % 2))
