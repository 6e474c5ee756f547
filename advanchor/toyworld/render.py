"""Deterministic renderer of the toy world: one textured shape on a light background."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .vocab import COLORS, SHAPES, STYLES

SIZE = 32
_SUPERSAMPLE = 4  # anti-aliasing: render at 4x and average down

RGB = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 225),
    "yellow": (235, 205, 30),
    "purple": (150, 50, 190),
}


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    style: str


def _regular_polygon(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star(radius: float, phase: float) -> np.ndarray:
    outer = _regular_polygon(5, radius, phase)
    inner = _regular_polygon(5, 0.42 * radius, phase + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(10, 2)  # (5, 2, 2) -> alternate outer/inner


def _inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over the grid."""
    inside = np.zeros(x.shape, dtype=bool)
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1):
        if ay == by:
            continue
        crosses = (ay > y) != (by > y)
        x_at = ax + (y - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (x < x_at)
    return inside


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray, radius: float, rng: np.random.Generator):
    """Boolean mask of `shape` centred at the origin of (x, y); image y grows downwards."""
    jitter = rng.uniform(-0.17, 0.17)  # about +-10 degrees
    upright = rng.integers(2) == 1  # oval and rectangle lie or stand
    turn = jitter + (math.pi / 2 if upright else 0.0)
    if shape in ("circle", "oval"):
        a, b = (radius, radius) if shape == "circle" else (radius, 0.52 * radius)
        c, s = math.cos(turn), math.sin(turn)
        u, v = c * x + s * y, -s * x + c * y
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if shape == "square":
        poly = _regular_polygon(4, radius * 1.0, math.pi / 4 + jitter)
    elif shape == "rectangle":
        half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=float) * [radius, 0.5 * radius]
        c, s = math.cos(turn), math.sin(turn)
        poly = half @ np.array([[c, s], [-s, c]])
    elif shape == "triangle":
        poly = _regular_polygon(3, radius * 1.1, -math.pi / 2 + jitter)
        poly[:, 1] += 0.2 * radius  # centre the bounding box, not the centroid
    elif shape == "star":
        poly = _star(radius * 1.15, -math.pi / 2 + jitter)
    else:
        raise ValueError(f"unknown shape {shape!r}; use one of: {', '.join(SHAPES)}")
    return _inside_polygon(x, y, poly)


def _texture(style: str, x: np.ndarray, y: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """True where the texture shows the darker shade; image coordinates so patterns stay aligned."""
    px, py = x + offset[0], y + offset[1]
    if style == "solid":
        return np.zeros(x.shape, dtype=bool)
    if style == "striped":
        return np.floor((px + py) / 3.0) % 2 == 1
    if style == "dotted":
        return (np.mod(px, 6.0) - 3.0) ** 2 + (np.mod(py, 6.0) - 3.0) ** 2 <= 1.7**2
    if style == "checkered":
        return (np.floor(px / 4.0) + np.floor(py / 4.0)) % 2 == 1
    raise ValueError(f"unknown style {style!r}; use one of: {', '.join(STYLES)}")


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Render one scene as a (32, 32, 3) uint8 array; all randomness comes from `rng`."""
    if scene.color not in RGB:
        raise ValueError(f"unknown color {scene.color!r}; use one of: {', '.join(COLORS)}")
    radius = rng.uniform(7.0, 11.0)
    cx, cy = rng.uniform(radius + 1.0, SIZE - radius - 1.0, size=2)
    background = rng.uniform(222, 250) + rng.uniform(-6, 6, size=3)
    color = np.clip(np.array(RGB[scene.color], dtype=float) + rng.uniform(-15, 15, size=3), 0, 255)
    shade = 0.4 * color
    offset = rng.uniform(0, 12, size=2)

    n = SIZE * _SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / _SUPERSAMPLE
    gx, gy = np.meshgrid(coords, coords)  # (n, n) each; gy indexes rows
    mask = _shape_mask(scene.shape, gx - cx, gy - cy, radius, rng)
    dark = _texture(scene.style, gx, gy, offset)
    fill = np.where(dark[..., None], shade, color)  # (n, n, 3)
    hi = np.where(mask[..., None], fill, background)
    img = hi.reshape(SIZE, _SUPERSAMPLE, SIZE, _SUPERSAMPLE, 3).mean(axis=(1, 3))  # (32, 32, 3)
    return np.round(img).astype(np.uint8)


def sample_scenes(n: int, rng: np.random.Generator) -> list[Scene]:
    """Uniformly random scenes over every shape, colour and style."""
    s = rng.integers(len(SHAPES), size=n)
    c = rng.integers(len(COLORS), size=n)
    t = rng.integers(len(STYLES), size=n)
    return [Scene(SHAPES[i], COLORS[j], STYLES[k]) for i, j, k in zip(s, c, t)]


def render_dataset(n: int, seed: int) -> tuple[np.ndarray, list[Scene]]:
    """`n` random scenes and their (n, 32, 32, 3) uint8 images, fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    scenes = sample_scenes(n, rng)
    images = np.stack([render(scene, rng) for scene in scenes]) if n else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return images, scenes
