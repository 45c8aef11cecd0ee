"""Photos of a car's rear with its New York plate, rendered so the plate readers can be tested.

The cars API serves these and the tests read them back: the plate is always
`plate_for_vehicle(vehicle_id)`, and the same (vehicle, difficulty) always gives the same
bytes, so an OCR result can be checked against the truth. Everything that varies (car,
plate position and size, tilt, blur, light, noise, JPEG quality) comes from one seeded
`random.Random`; "hard" photos are smaller, more tilted, blurrier, darker and noisier.
"""

import hashlib
import io
import math
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from section_speed.domain.plate_formats import display_plate, plate_for_vehicle

WIDTH, HEIGHT = 640, 480
DIFFICULTIES = ("easy", "hard")
FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/truetype/liberation"),
)
# Plate characters use a condensed bold face, as real plates do; the rest plain bold.
PLATE_FONTS = ("DejaVuSansCondensed-Bold.ttf", "LiberationSansNarrow-Bold.ttf")
LABEL_FONTS = ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf")
ANY_FONTS = (*PLATE_FONTS, *LABEL_FONTS, "DejaVuSans.ttf", "LiberationSans-Regular.ttf")
FONT_HINT = "install fonts-dejavu-core (apt-get install fonts-dejavu-core)"

# The plate is drawn once at this size (NY plates are 12 x 6 inches), then scaled down.
PLATE_W, PLATE_H = 480, 240
PLATE_INK = (22, 38, 105)  # the dark blue of NY's characters
Color = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Look:
    """How hard a photo is: ranges the seeded draws are taken from."""

    plate_width: tuple[float, float]  # pixels, in the 640-wide photo
    tilt_deg: float  # in-plane rotation, either way
    skew: float  # perspective: how much one side of the plate is shorter
    blur: tuple[float, float]  # Gaussian radius
    noise: tuple[float, float]  # sensor noise sigma, 0..255 scale
    contrast: tuple[float, float]  # 1 = full contrast
    gain: tuple[float, float]  # overall brightness
    quality: tuple[int, int]  # JPEG quality


LOOKS = {
    "easy": Look((150, 215), 4.0, 0.04, (0.0, 0.8), (2, 6), (0.85, 1.0), (0.8, 1.1), (80, 92)),
    "hard": Look((95, 140), 12.0, 0.14, (0.8, 1.5), (6, 12), (0.5, 0.75), (0.5, 1.2), (50, 72)),
}


def render_car_photo(vehicle_id: str, difficulty: str = "easy") -> bytes:
    """JPEG photo of `vehicle_id`'s car from behind; the same inputs give the same bytes."""
    digest = hashlib.sha256(f"car-photo:{vehicle_id}:{difficulty}".encode()).digest()
    seed = int.from_bytes(digest[:8], "big")
    scene = render_scene(plate_for_vehicle(vehicle_id), seed, difficulty)
    quality = random.Random(seed ^ 0x5EED).randint(*LOOKS[difficulty].quality)
    buffer = io.BytesIO()
    scene.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def render_scene(plate: str, seed: int, difficulty: str = "easy") -> Image.Image:
    """An RGB photo of a car rear carrying `plate` (normalised, `ABC1234`); `seed` varies it."""
    if difficulty not in LOOKS:
        raise ValueError(f"unknown difficulty {difficulty!r}; choose one of {DIFFICULTIES}")
    look, rng = LOOKS[difficulty], random.Random(seed)
    scene = _background(rng)
    plate_centre = _draw_car(scene, rng)
    _paste_plate(scene, _plate_image(display_plate(plate), rng), plate_centre, look, rng)
    return _camera(scene, look, rng, seed)


@cache
def _font(names: tuple[str, ...], size: int) -> ImageFont.FreeTypeFont:
    """The first installed font among `names`, else any installed one; never a bitmap."""
    for name in (*names, *ANY_FONTS):
        for folder in FONT_DIRS:
            if (folder / name).is_file():
                return ImageFont.truetype(str(folder / name), size)
    raise RuntimeError(f"no TrueType font found in {', '.join(map(str, FONT_DIRS))}: {FONT_HINT}")


def _jitter(rng: random.Random, color: Color, spread: int) -> Color:
    r, g, b = (min(255, max(0, c + rng.randint(-spread, spread))) for c in color)
    return (r, g, b)


def _background(rng: random.Random) -> Image.Image:
    """Sky, a row of buildings or trees, and the road, in muted random tones."""
    sky = _jitter(rng, (170, 185, 200), 25)
    scene = Image.new("RGB", (WIDTH, HEIGHT), sky)
    draw = ImageDraw.Draw(scene)
    horizon = rng.randint(150, 200)
    x = 0
    while x < WIDTH:
        width, height = rng.randint(40, 120), rng.randint(40, 140)
        block = _jitter(rng, (120, 118, 110), 40)
        draw.rectangle((x, horizon - height, x + width, horizon), fill=block)
        x += width
    draw.rectangle((0, horizon, WIDTH, HEIGHT), fill=_jitter(rng, (92, 92, 96), 15))
    for y in range(horizon + 20, HEIGHT, 60):  # lane marks receding
        draw.rectangle((WIDTH // 2 - 4, y, WIDTH // 2 + 4, y + 25), fill=(200, 200, 190))
    return scene


def _draw_car(scene: Image.Image, rng: random.Random) -> tuple[float, float]:
    """A car seen from behind; returns where its plate's centre goes."""
    draw = ImageDraw.Draw(scene)
    body = _jitter(rng, rng.choice([(160, 20, 25), (30, 40, 70), (200, 200, 205),
                                    (40, 40, 42), (20, 80, 50), (120, 120, 125)]), 20)  # fmt: skip
    cx = WIDTH / 2 + rng.uniform(-80, 80)
    half, top, bottom = rng.uniform(190, 250), rng.uniform(110, 160), rng.uniform(400, 445)
    shadow = (35, 35, 38)
    draw.ellipse((cx - half - 10, bottom - 25, cx + half + 10, bottom + 30), fill=shadow)
    for side in (-1, 1):  # tyres
        x = cx + side * (half - 45)
        draw.rounded_rectangle((x - 32, bottom - 40, x + 32, bottom + 20), 10, fill=(18, 18, 18))
    roof = top - rng.uniform(40, 70)
    draw.polygon(
        [(cx - half * 0.72, top), (cx - half * 0.55, roof), (cx + half * 0.55, roof),
         (cx + half * 0.72, top)], fill=body)  # fmt: skip
    glass = _jitter(rng, (45, 55, 65), 12)
    draw.polygon(
        [(cx - half * 0.64, top - 4), (cx - half * 0.5, roof + 8), (cx + half * 0.5, roof + 8),
         (cx + half * 0.64, top - 4)], fill=glass)  # fmt: skip
    draw.rounded_rectangle((cx - half, top, cx + half, bottom), 30, fill=body)
    light = _jitter(rng, (190, 25, 30), 20)
    light_y = top + rng.uniform(25, 45)
    for side in (-1, 1):
        x0, x1 = sorted((cx + side * (half - 10), cx + side * (half - 85)))
        draw.rounded_rectangle((x0, light_y, x1, light_y + 38), 8, fill=light)
    bumper = tuple(max(0, c - 45) for c in body)
    draw.rounded_rectangle((cx - half - 6, bottom - 55, cx + half + 6, bottom), 18, fill=bumper)
    plate_y = (light_y + 38 + bottom - 55) / 2 + rng.uniform(-10, 10)
    recess = tuple(max(0, c - 25) for c in body)
    draw.rounded_rectangle((cx - 120, plate_y - 62, cx + 120, plate_y + 62), 12, fill=recess)
    return cx + rng.uniform(-6, 6), plate_y


def _plate_image(text: str, rng: random.Random) -> Image.Image:
    """The plate itself at full resolution: NY's gold-to-white field, blue ink, state name."""
    field = _jitter(rng, rng.choice([(242, 206, 100), (240, 226, 168), (238, 236, 226)]), 8)
    ink = _jitter(rng, PLATE_INK, 10)
    plate = Image.new("RGBA", (PLATE_W, PLATE_H), (0, 0, 0, 0))
    draw = ImageDraw.Draw(plate)
    draw.rounded_rectangle((0, 0, PLATE_W - 1, PLATE_H - 1), 22, fill=field)
    draw.rounded_rectangle((7, 7, PLATE_W - 8, PLATE_H - 8), 18, outline=ink, width=6)
    for x in (PLATE_W * 0.26, PLATE_W * 0.74):  # bolt holes
        draw.ellipse((x - 8, 28, x + 8, 44), fill=(70, 70, 70))
    draw.text((PLATE_W / 2, 38), "NEW YORK", font=_font(LABEL_FONTS, 36), fill=ink, anchor="mm")
    slogan = rng.choice(["EMPIRE STATE", "THE EMPIRE STATE"])
    draw.text((PLATE_W / 2, 206), slogan, font=_font(LABEL_FONTS, 24), fill=ink, anchor="mm")
    _draw_fitted(draw, text, ink, box=(40, 66, PLATE_W - 40, 180))
    return plate


def _draw_fitted(draw: ImageDraw.ImageDraw, text: str, ink: Color, box: tuple[int, ...]) -> None:
    """Draw `text` as large as fits in `box`, centred, in the plate face."""
    left, top, right, bottom = box
    size = bottom - top
    font = _font(PLATE_FONTS, size)
    while size > 20:
        font = _font(PLATE_FONTS, size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, anchor="mm")
        if x1 - x0 <= right - left and y1 - y0 <= bottom - top:
            break
        size -= 4
    draw.text(((left + right) / 2, (top + bottom) / 2), text, font=font, fill=ink, anchor="mm")


def _paste_plate(
    scene: Image.Image,
    plate: Image.Image,
    centre: tuple[float, float],
    look: Look,
    rng: random.Random,
) -> None:
    """Scale, tilt and skew the plate as a camera would see it, and put it on the car."""
    width = rng.uniform(*look.plate_width)
    height = width / 2 * rng.uniform(0.92, 1.05)
    angle = math.radians(rng.uniform(-look.tilt_deg, look.tilt_deg))
    skew = rng.uniform(-look.skew, look.skew)  # one vertical edge shorter than the other
    left, right = height / 2 * (1 - skew), height / 2 * (1 + skew)
    corners = [(-width / 2, -left), (width / 2, -right), (width / 2, right), (-width / 2, left)]
    cos, sin = math.cos(angle), math.sin(angle)
    placed = [(centre[0] + x * cos - y * sin, centre[1] + x * sin + y * cos) for x, y in corners]
    source = [(0, 0), (PLATE_W, 0), (PLATE_W, PLATE_H), (0, PLATE_H)]
    coefficients = _perspective(placed, source)
    big = plate.filter(ImageFilter.GaussianBlur(PLATE_W / width * 0.5))  # anti-alias the shrink
    warped = big.transform(scene.size, Image.Transform.PERSPECTIVE, coefficients, Image.BICUBIC)
    box = _grow(warped.getbbox() or (0, 0, 1, 1), 6, scene.size)
    warped = warped.crop(box)
    shadow = Image.new("RGBA", warped.size, (0, 0, 0, 0))
    shadow.paste((0, 0, 0, 90), (0, 0), warped.getchannel("A"))
    scene.paste(shadow, (box[0] + 2, box[1] + 3), shadow.filter(ImageFilter.GaussianBlur(2)))
    scene.paste(warped, box[:2], warped)


def _grow(
    box: tuple[int, int, int, int], margin: int, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """`box` widened by `margin` on every side, kept inside an image of `size`."""
    left, top, right, bottom = box
    return (
        max(0, left - margin), max(0, top - margin),
        min(size[0], right + margin), min(size[1], bottom + margin),
    )  # fmt: skip


def _perspective(
    target: list[tuple[float, float]], source: list[tuple[float, float]]
) -> tuple[float, ...]:
    """Pillow's 8 perspective coefficients mapping output `target` points to `source` ones."""
    rows, values = [], []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values.extend((u, v))
    return tuple(np.linalg.solve(np.array(rows), np.array(values)).tolist())


def _camera(scene: Image.Image, look: Look, rng: random.Random, seed: int) -> Image.Image:
    """Lens blur, uneven light, reduced contrast and sensor noise."""
    scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(*look.blur)))
    pixels = np.asarray(scene, dtype=np.float32)
    contrast, gain = rng.uniform(*look.contrast), rng.uniform(*look.gain)
    pixels = (pixels - 128.0) * contrast + 128.0
    ramp = np.linspace(1 - rng.uniform(0, 0.25), 1 + rng.uniform(0, 0.15), WIDTH, dtype=np.float32)
    if rng.random() < 0.5:
        ramp = ramp[::-1]  # light from the other side
    pixels *= gain * ramp[np.newaxis, :, np.newaxis]
    sigma = rng.uniform(*look.noise)
    pixels += np.random.default_rng(seed).standard_normal(pixels.shape, np.float32) * sigma
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
