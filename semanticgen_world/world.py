"""A procedural video world: textured shapes moving over simple backgrounds, with captions.

Everything is a pure function of a seed: ``sample_clip(seed, ...)`` draws scene parameters with
``numpy.random.default_rng(seed)`` and renders them, and captions are written only from those
parameters, so a caption always describes what is on screen.

Units are chosen so a clip looks the same at any frame rate or resolution: positions are fractions
of the frame (0..1 on each axis, y down), sizes are fractions of ``min(height, width)``, speeds are
fractions of the frame per second and growth is size-fraction per second. Doubling ``fps`` and
``num_frames`` together gives the same clip sampled twice as densely.

Split convention: seeds ``>= HELDOUT_SEED_START`` are held out for evaluation; training uses
seeds below it.
"""

from __future__ import annotations

import colorsys
import math
import re
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from semanticgen_core.errors import SemanticGenError

HELDOUT_SEED_START = 1_000_000

# One table for rendering and for judging colours. Hues are >= 27 degrees apart so a hue-nearest
# classifier separates them; white and grey are told apart by brightness.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 45),
    "orange": (255, 128, 0),
    "yellow": (245, 235, 25),
    "green": (40, 200, 60),
    "cyan": (20, 200, 220),
    "blue": (40, 90, 240),
    "purple": (160, 60, 230),
    "white": (245, 245, 245),
    "grey": (150, 150, 150),
}
OBJECT_COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
BACKGROUND_COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "grey")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots", "checker", "noise")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "stripes", "noise")
STRIPE_ORIENTATIONS: tuple[str, ...] = ("horizontal", "vertical", "diagonal")
MOTIONS: tuple[str, ...] = (
    "static", "left_to_right", "right_to_left", "up", "down", "bouncing", "growing", "shrinking",
    "enter_left", "enter_right", "leave_left", "leave_right",
)
MOTION_PHRASES: dict[str, str] = {
    "static": "standing still",
    "left_to_right": "moving from left to right",
    "right_to_left": "moving from right to left",
    "up": "moving up",
    "down": "moving down",
    "bouncing": "bouncing",
    "growing": "growing",
    "shrinking": "shrinking",
    "enter_left": "entering from the left",
    "enter_right": "entering from the right",
    "leave_left": "leaving to the left",
    "leave_right": "leaving to the right",
}

# Brightness levels: textures only scale RGB, which keeps hue and saturation, so colour stays
# detectable. Backgrounds are darker than objects so objects stand out.
_TEXTURE_DARK = 0.62
_BG_LIGHT, _BG_DARK = 0.75, 0.4
_MIN_HUE_GAP = 45.0  # degrees between an object's colour and its background's
_SMALL, _LARGE = 0.2, 0.3  # size-word thresholds (fraction of the frame)
_EXIT_AT = 0.8  # leaving objects are fully out after this fraction of the shot


def _hue(color: str) -> float | None:
    """Hue in degrees, or None for the achromatic colours."""
    r, g, b = (c / 255.0 for c in PALETTE[color])
    h, s, _ = colorsys.rgb_to_hsv(r, g, b)
    return h * 360.0 if s > 0.3 else None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise SemanticGenError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class BackgroundSpec:
    """A static backdrop. ``period`` (stripes) is a fraction of the frame, ``angle`` (gradient)
    is in radians, ``seed`` feeds the smoothed noise."""

    kind: str = "plain"
    color: str = "grey"
    orientation: str = "horizontal"
    period: float = 0.2
    angle: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("background kind", self.kind, BACKGROUNDS)
        _check_choice("background colour", self.color, BACKGROUND_COLORS)
        _check_choice("stripe orientation", self.orientation, STRIPE_ORIENTATIONS)

    @property
    def caption(self) -> str:
        return {
            "plain": f"on a plain {self.color} background",
            "gradient": f"on {_article(self.color)} {self.color} gradient",
            "stripes": f"over {self.color} stripes",
            "noise": f"over {self.color} noise",
        }[self.kind]


@dataclass(frozen=True)
class ObjectSpec:
    """One shape. At time t (s): centre = start + velocity * t (reflected off the walls when
    bouncing), size = size + growth * t."""

    shape: str
    color: str
    motion: str
    size: float
    start: tuple[float, float] = (0.5, 0.5)
    velocity: tuple[float, float] = (0.0, 0.0)
    growth: float = 0.0
    texture: str = "solid"
    texture_seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("object colour", self.color, OBJECT_COLORS)
        _check_choice("motion", self.motion, MOTIONS)
        _check_choice("texture", self.texture, TEXTURES)
        if not 0.02 <= self.size <= 1.0:
            raise SemanticGenError(f"object size {self.size} is outside 0.02..1.0 (fraction of frame)")

    @property
    def noun_phrase(self) -> str:
        words = [self.color, self.shape]
        if size_word(self.size) is not None:
            words.insert(0, size_word(self.size))
        return " ".join([_article(words[0]), *words])


def size_word(size: float) -> str | None:
    """"small" or "large" for an object of this size (fraction of the frame); None between the two."""
    return "small" if size < _SMALL else "large" if size > _LARGE else None


@dataclass(frozen=True)
class ShotSpec:
    """One continuous scene; ``start_frame`` places it inside its clip."""

    start_frame: int
    num_frames: int
    background: BackgroundSpec
    objects: list[ObjectSpec] = field(default_factory=list)
    fps: float = 8.0

    @property
    def caption(self) -> str:
        objs = self.objects
        if not objs:
            return f"an empty scene {self.background.caption}"
        if len({o.motion for o in objs}) == 1:
            subject = " and ".join(o.noun_phrase for o in objs) + " " + MOTION_PHRASES[objs[0].motion]
        else:
            subject = " and ".join(f"{o.noun_phrase} {MOTION_PHRASES[o.motion]}" for o in objs)
        return f"{subject} {self.background.caption}"


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


@dataclass
class Clip:
    frames: np.ndarray  # uint8 [T, H, W, 3], RGB
    fps: float
    shots: list[ShotSpec]

    @property
    def caption(self) -> str:
        return self.caption_of([s.caption for s in self.shots])

    def caption_of(self, shot_texts: list[str]) -> str:
        """The clip's caption from one text per shot: the text alone for one shot, else timed shots in the
        prompts' shot syntax ("0-2 s: ...; 2-4 s: ...")."""
        if len(shot_texts) != len(self.shots):
            raise SemanticGenError(f"got {len(shot_texts)} shot texts for a clip of {len(self.shots)} shots")
        if len(self.shots) == 1:
            return shot_texts[0]
        return "; ".join(
            f"{_fmt_time(s.start_frame / self.fps)}-{_fmt_time((s.start_frame + s.num_frames) / self.fps)} s: {text}"
            for s, text in zip(self.shots, shot_texts)
        )


# --------------------------------------------------------------------------- sampling


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi)) if hi > lo else (lo + hi) / 2


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _compatible(obj_color: str, bg_color: str) -> bool:
    """An object must not share its background's hue (or both be achromatic)."""
    ho, hb = _hue(obj_color), _hue(bg_color)
    if ho is None or hb is None:
        return (ho is None) != (hb is None)
    gap = abs(ho - hb) % 360.0
    return min(gap, 360.0 - gap) >= _MIN_HUE_GAP


def _sample_object(rng: np.random.Generator, color: str, duration: float, max_size: float) -> ObjectSpec:
    """Motion parameters are chosen so the described motion happens within ``duration`` seconds."""
    shape, motion, texture = _pick(rng, SHAPES), _pick(rng, MOTIONS), _pick(rng, TEXTURES)
    texture_seed = int(rng.integers(2**31))
    size = _uniform(rng, 0.15, max_size)
    r = size / 2
    pos = (_uniform(rng, r + 0.03, 1 - r - 0.03), _uniform(rng, r + 0.03, 1 - r - 0.03))
    velocity, growth = (0.0, 0.0), 0.0
    if motion in ("left_to_right", "right_to_left", "up", "down"):
        travel = _uniform(rng, 0.35, 0.6)
        speed = min(travel / duration, 1.0)
        along = _uniform(rng, r + 0.02, 1 - r - 0.02 - min(travel, speed * duration))
        across = pos[1] if motion in ("left_to_right", "right_to_left") else pos[0]
        head = {"left_to_right": (along, across, speed, 0.0),
                "right_to_left": (1 - along, across, -speed, 0.0),
                "down": (across, along, 0.0, speed),
                "up": (across, 1 - along, 0.0, -speed)}[motion]
        pos, velocity = head[:2], head[2:]
    elif motion == "bouncing":
        speed, angle = _uniform(rng, 0.5, 0.9), _uniform(rng, 0.35, 1.2) + int(rng.integers(4)) * math.pi / 2
        velocity = (speed * math.cos(angle), speed * math.sin(angle))
    elif motion in ("growing", "shrinking"):
        small, large = _uniform(rng, 0.12, 0.19), _uniform(rng, 0.38, 0.5)
        size, final = (small, large) if motion == "growing" else (large, small)
        growth = (final - size) / duration
        pos = (_uniform(rng, large / 2 + 0.02, 1 - large / 2 - 0.02), _uniform(rng, large / 2 + 0.02, 1 - large / 2 - 0.02))
    elif motion in ("enter_left", "enter_right"):
        outside, inside = -r - 0.02, _uniform(rng, 0.35, 0.65)
        x0, x1 = (outside, inside) if motion == "enter_left" else (1 - outside, 1 - inside)
        pos, velocity = (x0, pos[1]), ((x1 - x0) / duration, 0.0)
    elif motion in ("leave_left", "leave_right"):
        x0 = _uniform(rng, 0.35, 0.65)
        x1 = -r - 0.02 if motion == "leave_left" else 1 + r + 0.02
        pos, velocity = (x0, pos[1]), ((x1 - x0) / (_EXIT_AT * duration), 0.0)
    return ObjectSpec(shape, color, motion, size, pos, velocity, growth, texture, texture_seed)


def _collide(a: ObjectSpec, b: ObjectSpec, duration: float) -> bool:
    """Whether two objects come close at any of a few times (checked on a square frame)."""
    for t in np.linspace(0.0, duration, 12):
        ax, ay, ar = _object_state(a, float(t), 100, 100)
        bx, by, br = _object_state(b, float(t), 100, 100)
        if math.hypot(ax - bx, ay - by) < 1.25 * (ar + br):
            return True
    return False


def sample_shot(rng: np.random.Generator, num_frames: int, fps: float = 8.0) -> ShotSpec:
    """Draw one scene: a background and usually one (sometimes two) objects of distinct colours."""
    if num_frames < 1:
        raise SemanticGenError(f"num_frames must be >= 1, got {num_frames}")
    if not fps > 0:
        raise SemanticGenError(f"fps must be > 0, got {fps}")
    duration = num_frames / fps
    background = BackgroundSpec(
        kind=_pick(rng, BACKGROUNDS),
        color=_pick(rng, BACKGROUND_COLORS),
        orientation=_pick(rng, STRIPE_ORIENTATIONS),
        period=_uniform(rng, 0.12, 0.25),
        angle=_uniform(rng, 0.0, 2 * math.pi),
        seed=int(rng.integers(2**31)),
    )
    num_objects = 2 if rng.random() < 0.25 else 1
    colors = [c for c in OBJECT_COLORS if _compatible(c, background.color)]
    objects: list[ObjectSpec] = []
    for _ in range(num_objects):
        color = _pick(rng, colors)
        colors.remove(color)
        obj = _sample_object(rng, color, duration, 0.36 if num_objects == 1 else 0.28)
        # Keep objects apart so each stays recognisable; give up after a few tries.
        for _ in range(20):
            if not any(_collide(obj, other, duration) for other in objects):
                break
            obj = _sample_object(rng, color, duration, 0.28)
        objects.append(obj)
    return ShotSpec(0, num_frames, background, objects, fps)


def _check_size(height: int, width: int) -> None:
    if height < 16 or width < 16:
        raise SemanticGenError(f"height and width must be >= 16 pixels, got {height}x{width}")


def sample_clip(
    seed: int, num_frames: int, height: int = 64, width: int = 64, fps: float = 8.0, num_shots: int = 1
) -> Clip:
    """Sample and render a clip; ``num_shots`` > 1 cuts it into near-equal shots with hard cuts."""
    if seed < 0:
        raise SemanticGenError(f"seed must be >= 0, got {seed}")
    if num_frames < 1:
        raise SemanticGenError(f"num_frames must be >= 1, got {num_frames}")
    _check_size(height, width)
    if not 1 <= num_shots <= num_frames:
        raise SemanticGenError(f"num_shots must be in 1..num_frames ({num_frames}), got {num_shots}")
    shots = sample_clip_shots(seed, num_frames, fps, num_shots)
    frames = np.concatenate([render_shot(s, height, width) for s in shots])
    return Clip(frames, float(fps), shots)


def sample_clip_shots(seed: int, num_frames: int, fps: float = 8.0, num_shots: int = 1) -> list[ShotSpec]:
    """The shots ``sample_clip(seed, ...)`` renders, without rendering them (same seed, same scenes)."""
    if seed < 0:
        raise SemanticGenError(f"seed must be >= 0, got {seed}")
    if num_frames < 1:
        raise SemanticGenError(f"num_frames must be >= 1, got {num_frames}")
    if not 1 <= num_shots <= num_frames:
        raise SemanticGenError(f"num_shots must be in 1..num_frames ({num_frames}), got {num_shots}")
    rng = np.random.default_rng(seed)
    bounds = [round(i * num_frames / num_shots) for i in range(num_shots + 1)]
    shots: list[ShotSpec] = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        shot = sample_shot(rng, end - start, fps)
        # A cut must be visible: change the backdrop colour from one shot to the next.
        while shots and shot.background.color == shots[-1].background.color:
            shot = sample_shot(rng, end - start, fps)
        shots.append(replace(shot, start_frame=start))
    return shots


# --------------------------------------------------------------------------- rendering


def _smooth_noise(seed: int, height: int, width: int, grids: tuple[int, ...]) -> np.ndarray:
    """Cloud-like noise in [0, 1]: coarse random grids upsampled and summed (resolution-free)."""
    rng = np.random.default_rng(seed)
    total = np.zeros((height, width), np.float32)
    for octave, n in enumerate(grids):
        grid = rng.random((n, n), dtype=np.float32)
        total += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC) * 0.5**octave
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def _render_background(bg: BackgroundSpec, height: int, width: int) -> np.ndarray:
    ys = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
    xs = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
    if bg.kind == "plain":
        level = np.ones((height, width), np.float32)
    elif bg.kind == "gradient":
        ramp = (xs - 0.5) * math.cos(bg.angle) + (ys - 0.5) * math.sin(bg.angle)
        level = np.broadcast_to(ramp / math.sqrt(0.5) + 0.5, (height, width))
    elif bg.kind == "stripes":
        coord = {"horizontal": ys, "vertical": xs, "diagonal": (xs + ys) / math.sqrt(2)}[bg.orientation]
        level = np.broadcast_to(np.floor(coord / (bg.period / 2)) % 2 == 0, (height, width)).astype(np.float32)
    else:
        level = _smooth_noise(bg.seed, height, width, (5, 11))
    shade = _BG_DARK + (_BG_LIGHT - _BG_DARK) * np.clip(level, 0.0, 1.0)
    rgb = np.array(PALETTE[bg.color], np.float32)
    return (shade[..., None] * rgb + 0.5).astype(np.uint8)


def _object_state(obj: ObjectSpec, t: float, height: int, width: int) -> tuple[float, float, float]:
    """Centre (pixel-index coordinates) and radius in pixels at time t."""
    radius = max(obj.size + obj.growth * t, 0.02) * min(height, width) / 2
    x = obj.start[0] + obj.velocity[0] * t
    y = obj.start[1] + obj.velocity[1] * t
    if obj.motion == "bouncing":
        x = _reflect(x, radius / width, 1 - radius / width)
        y = _reflect(y, radius / height, 1 - radius / height)
    return x * width - 0.5, y * height - 0.5, radius


def _reflect(p: float, lo: float, hi: float) -> float:
    """Fold p into [lo, hi] like a ball between two walls (a triangle wave)."""
    span = hi - lo
    if span <= 0:
        return 0.5
    u = (p - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


def _shape_points(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Polygon vertices, scaled so all shapes look about as big as a circle of radius r."""
    if shape == "square":
        angles, radii = np.arange(4) * math.pi / 2 + math.pi / 4, np.full(4, 0.82 * math.sqrt(2) * r)
    elif shape == "triangle":
        angles, radii = np.arange(3) * 2 * math.pi / 3 - math.pi / 2, np.full(3, 1.1 * r)
    else:  # star: alternate outer and inner vertices, one point straight up
        angles = np.arange(10) * math.pi / 5 - math.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, 1.15 * r, 0.5 * r)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


_SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions make slow motion smooth


def _draw_mask(shape: str, cx: float, cy: float, r: float, size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    scale = 1 << _SHIFT
    if shape == "circle":
        centre = (round(cx * scale), round(cy * scale))
        cv2.circle(mask, centre, round(r * scale), 255, -1, cv2.LINE_AA, _SHIFT)
    else:
        pts = np.round(_shape_points(shape, cx, cy, r) * scale).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, _SHIFT)
    return mask


def _texture(obj: ObjectSpec, u: np.ndarray, v: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
    """Brightness in [_TEXTURE_DARK, 1] over object-local coordinates (u, v in radii)."""
    if obj.texture == "solid":
        return np.ones(np.broadcast_shapes(u.shape, v.shape), np.float32)
    if obj.texture == "stripes":
        dark = np.floor((u + v) / 0.55) % 2 == 1
    elif obj.texture == "checker":
        dark = (np.floor(u / 0.6) + np.floor(v / 0.6)) % 2 == 1
    elif obj.texture == "dots":
        cu, cv_ = (u / 0.7) % 1.0 - 0.5, (v / 0.7) % 1.0 - 0.5
        dark = cu**2 + cv_**2 < 0.32**2
    else:  # noise: look the local coordinates up in a fixed random texture
        n = noise.shape[0]
        iu = np.clip(((u + 1.2) / 2.4 * n).astype(np.int32), 0, n - 1)
        iv = np.clip(((v + 1.2) / 2.4 * n).astype(np.int32), 0, n - 1)
        return _TEXTURE_DARK + (1 - _TEXTURE_DARK) * noise[iv, iu]
    return np.where(dark, _TEXTURE_DARK, 1.0).astype(np.float32)


def _object_box(obj: ObjectSpec, t: float, height: int, width: int):
    """``(cx, cy, r, x0, x1, y0, y1, mask)``: the object's uint8 anti-aliased mask over its clipped box,
    or None when the box is outside the frame."""
    cx, cy, r = _object_state(obj, t, height, width)
    reach = 1.2 * r + 2  # bounding box of every shape, plus anti-aliasing margin
    x0, x1 = max(int(cx - reach), 0), min(int(math.ceil(cx + reach)) + 1, width)
    y0, y1 = max(int(cy - reach), 0), min(int(math.ceil(cy + reach)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return cx, cy, r, x0, x1, y0, y1, _draw_mask(obj.shape, cx - x0, cy - y0, r, (y1 - y0, x1 - x0))


def _paint_object(frame: np.ndarray, obj: ObjectSpec, t: float, noise: np.ndarray | None) -> None:
    height, width = frame.shape[:2]
    box = _object_box(obj, t, height, width)
    if box is None:
        return
    cx, cy, r, x0, x1, y0, y1, mask = box
    alpha = mask.astype(np.float32) / 255.0
    u = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / r
    v = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / r
    colour = _texture(obj, u, v, noise)[..., None] * np.array(PALETTE[obj.color], np.float32)
    roi = frame[y0:y1, x0:x1]
    a = alpha[..., None]
    roi[:] = (roi * (1.0 - a) + colour * a + 0.5).astype(np.uint8)


def render_shot(shot: ShotSpec, height: int, width: int) -> np.ndarray:
    """Render a shot to uint8 RGB frames [num_frames, height, width, 3]."""
    _check_size(height, width)
    background = _render_background(shot.background, height, width)
    noises = [
        _smooth_noise(o.texture_seed, 24, 24, (4,)) if o.texture == "noise" else None for o in shot.objects
    ]
    frames = np.empty((shot.num_frames, height, width, 3), np.uint8)
    for f in range(shot.num_frames):
        frames[f] = background
        for obj, noise in zip(shot.objects, noises):
            _paint_object(frames[f], obj, f / shot.fps, noise)
    return frames


def render_clip(shots: list[ShotSpec], height: int, width: int, frame_indices=None) -> np.ndarray:
    """Frames of a clip made of consecutive ``shots`` (as ``sample_clip`` cuts them), uint8 [N, H, W, 3].

    ``frame_indices`` (clip frame numbers) renders only those frames, byte-identical to the same frames
    of the full render; the default renders every frame.
    """
    _check_size(height, width)
    index = _clip_frame_index(shots, frame_indices)
    frames = np.empty((len(index), height, width, 3), np.uint8)
    cache: dict[int, tuple[np.ndarray, list]] = {}
    for n, (s, f) in enumerate(index):
        shot = shots[s]
        if s not in cache:
            noises = [_smooth_noise(o.texture_seed, 24, 24, (4,)) if o.texture == "noise" else None
                      for o in shot.objects]
            cache[s] = (_render_background(shot.background, height, width), noises)
        background, noises = cache[s]
        frames[n] = background
        for obj, noise in zip(shot.objects, noises):
            _paint_object(frames[n], obj, f / shot.fps, noise)
    return frames


def _clip_frame_index(shots: list[ShotSpec], frame_indices) -> list[tuple[int, int]]:
    """(shot index, frame within the shot) for each requested clip frame."""
    if not shots:
        raise SemanticGenError("a clip needs at least one shot")
    owner: list[tuple[int, int]] = []
    for s, shot in enumerate(shots):
        if shot.start_frame != len(owner):
            raise SemanticGenError(f"shot {s} starts at frame {shot.start_frame}, expected {len(owner)}: shots "
                                   "must follow each other without gaps, as sample_clip cuts them")
        owner.extend((s, f) for f in range(shot.num_frames))
    if frame_indices is None:
        return owner
    out = []
    for f in frame_indices:
        if not 0 <= int(f) < len(owner):
            raise SemanticGenError(f"frame {f} is outside the clip's 0..{len(owner) - 1}")
        out.append(owner[int(f)])
    return out


def label_maps(shots: list[ShotSpec], height: int, width: int, frame_indices=None) -> dict[str, np.ndarray]:
    """Per-pixel ground truth of the frames ``render_clip`` draws (same ``frame_indices``).

    A pixel belongs to the object drawn on top of it where that object's anti-aliased coverage is at
    least one half (objects are painted in order, later ones over earlier ones). Returns int16 arrays:
    ``object`` [N, H, W] (index into the frame's shot's objects, -1 for background), ``color`` [N, H, W]
    (index into ``OBJECT_COLORS``, -1 for background), ``shape`` [N, H, W] (index into ``SHAPES``, -1),
    ``background`` [N, H, W] (index into ``BACKGROUND_COLORS`` of the backdrop, everywhere) and
    ``shot`` [N] (which shot each frame comes from).
    """
    _check_size(height, width)
    index = _clip_frame_index(shots, frame_indices)
    obj_map = np.full((len(index), height, width), -1, np.int16)
    color = np.full_like(obj_map, -1)
    shape = np.full_like(obj_map, -1)
    background = np.empty_like(obj_map)
    for n, (s, f) in enumerate(index):
        shot = shots[s]
        background[n] = BACKGROUND_COLORS.index(shot.background.color)
        for k, obj in enumerate(shot.objects):
            box = _object_box(obj, f / shot.fps, height, width)
            if box is None:
                continue
            _, _, _, x0, x1, y0, y1, mask = box
            inside = mask >= 128
            obj_map[n, y0:y1, x0:x1][inside] = k
            color[n, y0:y1, x0:x1][inside] = OBJECT_COLORS.index(obj.color)
            shape[n, y0:y1, x0:x1][inside] = SHAPES.index(obj.shape)
    shot_of = np.array([s for s, _ in index], np.int16)
    return {"object": obj_map, "color": color, "shape": shape, "background": background, "shot": shot_of}


def retexture_shot(shot: ShotSpec, rng: np.random.Generator) -> ShotSpec:
    """The same scene with new surface detail: every object gets a random texture and texture seed and
    the backdrop a new pattern seed. Colours, shapes, sizes, positions, motion and the backdrop's kind
    (everything a caption names) stay, so the two renders differ only in what stage 2 adds."""
    objects = [replace(o, texture=_pick(rng, TEXTURES), texture_seed=int(rng.integers(2**31))) for o in shot.objects]
    return replace(shot, objects=objects, background=replace(shot.background, seed=int(rng.integers(2**31))))


def object_track(shot: ShotSpec, obj_index: int, height: int, width: int) -> np.ndarray:
    """Ground truth per frame: [x, y, size, visible] with x, y the centre in pixel-index
    coordinates, size the diameter in pixels, visible 1.0 when the centre is inside the frame."""
    _check_size(height, width)
    if not 0 <= obj_index < len(shot.objects):
        raise SemanticGenError(f"obj_index {obj_index} is outside 0..{len(shot.objects) - 1}")
    obj = shot.objects[obj_index]
    track = np.zeros((shot.num_frames, 4), np.float64)
    for f in range(shot.num_frames):
        cx, cy, r = _object_state(obj, f / shot.fps, height, width)
        visible = -0.5 <= cx < width - 0.5 and -0.5 <= cy < height - 0.5
        track[f] = (cx, cy, 2 * r, float(visible))
    return track


# --------------------------------------------------------------------------- colour judging

_CHROMATIC = [c for c in PALETTE if _hue(c) is not None]
_MIN_SATURATION, _MIN_VALUE, _WHITE_VALUE = 0.3 * 255, 50, 135


def _hue_lut() -> np.ndarray:
    """For each OpenCV full-range hue (0..255), the index into PALETTE of the nearest chromatic colour."""
    names = list(PALETTE)
    degrees = np.arange(256) * 360.0 / 256.0
    gaps = np.stack([np.abs((degrees - _hue(c) + 180.0) % 360.0 - 180.0) for c in _CHROMATIC])
    return np.array([names.index(_CHROMATIC[i]) for i in gaps.argmin(0)], np.int16)


_HUE_LUT = _hue_lut()


def classify_pixels(rgb: np.ndarray) -> np.ndarray:
    """Index into ``list(PALETTE)`` for each RGB pixel of a uint8 [..., 3] array; -1 when too dark."""
    flat = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 1, 3)
    hsv = cv2.cvtColor(flat, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.int32)
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    names = list(PALETTE)
    grey_or_white = np.where(v >= _WHITE_VALUE, names.index("white"), names.index("grey"))
    out = np.where(s >= _MIN_SATURATION, _HUE_LUT[h], grey_or_white)
    return np.where(v >= _MIN_VALUE, out, -1).reshape(rgb.shape[:-1])


def color_mask(frames: np.ndarray, color: str) -> np.ndarray:
    """Boolean mask [...] of the pixels whose nearest palette colour is ``color``."""
    _check_choice("colour", color, tuple(PALETTE))
    return classify_pixels(frames) == list(PALETTE).index(color)


def classify_rgb(rgb: tuple[float, float, float] | np.ndarray) -> str | None:
    """Nearest palette colour name of one RGB triple (e.g. a mean over an object), None if too dark."""
    index = int(classify_pixels(np.clip(np.round(np.asarray(rgb, np.float64)), 0, 255).reshape(1, 3))[0])
    return list(PALETTE)[index] if index >= 0 else None


# --------------------------------------------------------------------------- caption parsing

# Synonyms, the training phrasings' and the held-out paraphrases' among them (``wording.py``), so that the
# evaluation reads either wording back to the scene.
_COLOR_WORDS = {c: c for c in PALETTE} | {
    "gray": "grey", "silver": "grey", "slate": "grey", "pewter": "grey",
    "violet": "purple", "magenta": "purple", "lilac": "purple", "amethyst": "purple",
    "turquoise": "cyan", "teal": "cyan", "aqua": "cyan", "aquamarine": "cyan",
    "scarlet": "red", "crimson": "red", "ruby": "red", "cherry": "red",
    "tangerine": "orange", "amber": "orange", "pumpkin": "orange", "golden": "yellow", "lemon": "yellow",
    "canary": "yellow", "emerald": "green", "jade": "green", "cobalt": "blue", "sapphire": "blue",
    "ultramarine": "blue", "ivory": "white", "pearl": "white",
}
_SHAPE_WORDS = {s: s for s in SHAPES} | {
    "ball": "circle", "disc": "circle", "disk": "circle", "orb": "circle", "sphere": "circle",
    "box": "square", "block": "square", "rectangle": "square", "cube": "square", "tile": "square",
    "wedge": "triangle", "pyramid": "triangle", "arrowhead": "triangle", "starburst": "star", "pentagram": "star",
}
_SIZE_WORDS = {"small": "small", "tiny": "small", "little": "small", "miniature": "small", "petite": "small",
               "large": "large", "big": "large", "huge": "large", "giant": "large", "enormous": "large"}
_BG_WORDS = {
    "stripes": "stripes", "stripe": "stripes", "striped": "stripes", "pinstriped": "stripes", "bands": "stripes",
    "banded": "stripes", "gradient": "gradient", "fade": "gradient", "ramp": "gradient",
    "noise": "noise", "noisy": "noise", "clouds": "noise", "cloudy": "noise", "mottled": "noise", "speckled": "noise",
    "haze": "noise", "hazy": "noise", "background": "plain", "backdrop": "plain", "canvas": "plain", "field": "plain",
}
# Matched in this order; a later pattern may not overlap an earlier match, so "leaving to the
# left" is not also read as "to the left". The earliest match in a segment wins. "going right" is rightward
# unless "to left" follows ("going right to left").
_MOTION_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (m, re.compile(p)) for m, p in [
        ("enter_left", r"\b(?:enter\w*|com\w* in|appear\w*|slid\w* in|arriv\w*)(?: from)?(?: the)? left\b"),
        ("enter_right", r"\b(?:enter\w*|com\w* in|appear\w*|slid\w* in|arriv\w*)(?: from)?(?: the)? right\b"),
        ("leave_left", r"\b(?:leav\w*|exit\w*|go\w* out|head\w* out|depart\w*)(?: to| towards| through)?(?: the)? left\b"),
        ("leave_right", r"\b(?:leav\w*|exit\w*|go\w* out|head\w* out|depart\w*)(?: to| towards| through)?(?: the)? right\b"),
        ("bouncing", r"\b(?:bounc|ricochet|rebound)\w*"),
        ("growing", r"\b(?:grow\w*|expand\w*|enlarg\w*|swell\w*|inflat\w*|increas\w* in size|get\w* (?:bigger|larger))"),
        ("shrinking", r"\b(?:shrink\w*|contract\w*|deflat\w*|dwindl\w*|decreas\w* in size|get\w* smaller)"),
        ("left_to_right", r"\bleft to right\b|\b(?:to|towards) the right\b|\brightwards?\b"
                          r"|\b(?:mov|go|slid|head|travel)\w* right\b(?! to)"),
        ("right_to_left", r"\bright to left\b|\b(?:to|towards) the left\b|\bleftwards?\b"
                          r"|\b(?:mov|go|slid|head|travel)\w* left\b(?! to)"),
        ("up", r"\bup(?:wards?)?\b|\b(?:rising|rises|ascending|ascends|climbing|climbs)\b"),
        ("down", r"\bdown(?:wards?)?\b|\b(?:falling|falls|descending|descends|sinking|sinks|dropping|drops)\b"),
        ("static", r"\b(?:still|static|stationary|motionless|not moving|resting|rests|stay\w* put|frozen)\b"),
    ]
]


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and word[:-1] in _SHAPE_WORDS else word


def _find_motion(words: list[str]) -> str | None:
    text = " ".join(words)
    taken: list[tuple[int, int, str]] = []
    for motion, pattern in _MOTION_PATTERNS:
        for m in pattern.finditer(text):
            if all(m.end() <= a or m.start() >= b for a, b, _ in taken):
                taken.append((m.start(), m.end(), motion))
    return min(taken)[2] if taken else None


def _find_background(words: list[str]) -> tuple[dict | None, set[int]]:
    """The last background phrase (e.g. "blue stripes", "a grey gradient") and its word indices."""
    for i in range(len(words) - 1, -1, -1):
        kind = _BG_WORDS.get(words[i])
        if kind is None or (i + 1 < len(words) and _singular(words[i + 1]) in _SHAPE_WORDS):
            continue  # "a striped ball" describes the ball, not the backdrop
        used, color = {i}, None
        for j in range(i - 1, max(i - 4, -1), -1):
            if _singular(words[j]) in _SHAPE_WORDS:
                break
            if kind == "plain" and words[j] in _BG_WORDS:  # "a striped background"
                kind = _BG_WORDS[words[j]]
                used.add(j)
            elif words[j] in _COLOR_WORDS and color is None:
                color = _COLOR_WORDS[words[j]]
                used.add(j)
        return {"kind": kind, "color": color}, used
    return None, set()


def parse_caption(caption: str) -> list[dict]:
    """Read objects back from a one-shot caption or free text.

    Returns one dict per shape word, in order: {"color", "shape", "motion", "size", "background"}
    where size is "small"/"large"/None and background is {"kind", "color"} (shared by all objects)
    or None. Unrecognised parts are None; text without a shape word gives [].
    """
    words = re.findall(r"[a-z]+", caption.lower())
    background, bg_used = _find_background(words)
    # Background words become separators so phrases never run across them.
    words = ["|" if i in bg_used else w for i, w in enumerate(words)]
    shape_at = [i for i, w in enumerate(words) if _singular(w) in _SHAPE_WORDS]
    results = []
    for k, i in enumerate(shape_at):
        before = words[(shape_at[k - 1] + 1 if k else 0):i]
        after = words[i + 1:(shape_at[k + 1] if k + 1 < len(shape_at) else len(words))]
        colors = [_COLOR_WORDS[w] for w in before if w in _COLOR_WORDS]
        sizes = [_SIZE_WORDS[w] for w in before if w in _SIZE_WORDS]
        results.append({
            "color": colors[-1] if colors else None,
            "shape": _SHAPE_WORDS[_singular(words[i])],
            "motion": _find_motion(after) or _find_motion(before),
            "size": sizes[-1] if sizes else None,
            "background": background,
        })
    # "a red circle and a blue star bouncing": a trailing motion is shared by motionless mentions.
    if results and results[-1]["motion"] is not None:
        for r in results:
            r["motion"] = r["motion"] or results[-1]["motion"]
    return results

