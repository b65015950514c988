"""Line charts drawn with OpenCV, for the benches' figures (matplotlib is not a dependency of the pack)."""

from __future__ import annotations

import math

import cv2
import numpy as np

COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))  # RGB
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK, _GRID = (30, 30, 30), (225, 225, 225)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``lo..hi``."""
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / count
    base = 10 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, 10) for i in range(first, last + 1)]


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-9 else "0"


def _text(img, text: str, org, scale: float = 0.4, color=_INK) -> None:
    cv2.putText(img, text, (int(org[0]), int(org[1])), _FONT, scale, color, 1, cv2.LINE_AA)


def line_chart(series: list[tuple[str, list[float], list[float]]], title: str, xlabel: str, ylabel: str,
               size: tuple[int, int] = (440, 320)) -> np.ndarray:
    """One panel: each series ``(label, xs, ys)`` as a line with markers (None values skipped), a legend
    and round ticks. RGB uint8 ``[height, width, 3]``."""
    width, height = size
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 52, 12, 28, 42
    points = [[(x, y) for x, y in zip(xs, ys) if x is not None and y is not None] for _, xs, ys in series]
    xs_all = [x for pts in points for x, _ in pts] or [0.0, 1.0]
    ys_all = [y for pts in points for _, y in pts] or [0.0, 1.0]
    xt, yt = nice_ticks(min(xs_all), max(xs_all)), nice_ticks(min(ys_all), max(ys_all))

    def at(x: float, y: float) -> tuple[int, int]:
        px = left + (x - xt[0]) / (xt[-1] - xt[0]) * (width - left - right)
        py = height - bottom - (y - yt[0]) / (yt[-1] - yt[0]) * (height - top - bottom)
        return int(round(px)), int(round(py))

    for x in xt:
        cv2.line(img, at(x, yt[0]), at(x, yt[-1]), _GRID, 1)
        w = cv2.getTextSize(_label(x), _FONT, 0.35, 1)[0][0]
        _text(img, _label(x), (at(x, yt[0])[0] - w / 2, height - bottom + 14), 0.35)
    for y in yt:
        cv2.line(img, at(xt[0], y), at(xt[-1], y), _GRID, 1)
        w = cv2.getTextSize(_label(y), _FONT, 0.35, 1)[0][0]
        _text(img, _label(y), (left - w - 5, at(xt[0], y)[1] + 4), 0.35)
    cv2.rectangle(img, at(xt[0], yt[-1]), at(xt[-1], yt[0]), _INK, 1)
    for text, y, scale in ((title, 18, 0.45), (xlabel, height - 8, 0.4)):  # centred over the plot area
        w = cv2.getTextSize(text, _FONT, scale, 1)[0][0]
        _text(img, text, (max(left, (left + width - right - w) / 2), y), scale)
    _text(img, ylabel, (4, top - 8), 0.35)
    for k, ((label, _, _), pts) in enumerate(zip(series, points)):
        color = COLORS[k % len(COLORS)]
        pixels = [at(x, y) for x, y in pts]
        if len(pixels) > 1:
            cv2.polylines(img, [np.array(pixels, np.int32)], False, color, 2, cv2.LINE_AA)
        for p in pixels:
            cv2.circle(img, p, 3, color, -1, cv2.LINE_AA)
        y = top + 14 + 15 * k
        cv2.line(img, (left + 8, y - 4), (left + 26, y - 4), color, 2)
        _text(img, label, (left + 31, y), 0.38)
    return img


def tile(panels: list[np.ndarray], columns: int) -> np.ndarray:
    """Panels of one size in rows of ``columns`` (the last row padded white)."""
    blank = np.full_like(panels[0], 255)
    rows = [panels[i:i + columns] for i in range(0, len(panels), columns)]
    return np.concatenate([np.concatenate(r + [blank] * (columns - len(r)), axis=1) for r in rows])
