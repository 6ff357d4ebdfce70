"""Scenes of the built-in shapes dataset: vocabulary, sampling and captions (no pixels).

A scene is one or two colored shapes on a plain background. Everything is drawn from
`np.random.default_rng([seed, split_id, index])`, so record `index` of a split is the
same whatever the resolution or the order in which records are generated. Geometry is
in relative coordinates ([0, 1], x to the right, y down), so the same scene rendered at
64 and at 256 px is the same picture at two sizes.

The tables below are the vocabulary an evaluator imports to check generated images
against their prompts: `COLORS` maps every color word to the RGB value drawn.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Color words and the exact RGB drawn for them; well separated in RGB so the nearest
# table entry recovers the word from a pixel.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "purple": (135, 55, 190),
    "pink": (245, 130, 200),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "black": (0, 0, 0),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

# Size word -> extent (side of the shape's bounding square) as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.2, "medium": 0.28, "large": 0.42}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
# Scenes with two objects use only these sizes, so two shapes in neighbouring cells never touch.
TWO_OBJECT_SIZES: tuple[str, ...] = ("small", "medium")

# 3x3 grid of positions: name -> (x, y) of the cell center, and the phrase used in captions.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (1 / 6, 1 / 6),
    "top": (1 / 2, 1 / 6),
    "top right": (5 / 6, 1 / 6),
    "left": (1 / 6, 1 / 2),
    "center": (1 / 2, 1 / 2),
    "right": (5 / 6, 1 / 2),
    "bottom left": (1 / 6, 5 / 6),
    "bottom": (1 / 2, 5 / 6),
    "bottom right": (5 / 6, 5 / 6),
}
POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)
POSITION_PHRASES: dict[str, str] = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}

MAX_OBJECTS = 2
SPLIT_IDS: dict[str, int] = {"train": 0, "test": 1}

_JITTER = 0.015  # max shift of a shape's center from its cell center (relative units)
_MARGIN = 0.02  # min distance between a shape and the image border

ONE_OBJECT_TEMPLATES: tuple[str, ...] = (
    "{a_obj}",
    "{a_size_obj}",
    "{a_obj} on {a_bg} background",
    "{a_size_obj} {pos}",
    "{a_obj} {pos} on {a_bg} background",
    "{a_size_obj} {pos} on {a_bg} background",
    "{a_bg} background with {a_obj}",
    "{a_bg} background with {a_size_obj} {pos}",
    "there is {a_obj} {pos}",
    "a picture of {a_size_obj} on {a_bg} background",
)
TWO_OBJECT_TEMPLATES: tuple[str, ...] = (
    "{a_obj1} and {a_obj2}",
    "{a_obj1} and {a_obj2} on {a_bg} background",
    "{a_obj1} {pos1} and {a_obj2} {pos2}",
    "{a_size_obj1} {pos1} and {a_size_obj2} {pos2} on {a_bg} background",
    "{a_obj1} {relation} {a_obj2}",
    "{a_size_obj1} {relation} {a_size_obj2} on {a_bg} background",
)


@dataclasses.dataclass(frozen=True)
class ShapeObject:
    """One shape: words from the tables above, plus its exact geometry (relative units)."""

    shape: str
    color: str
    size: str
    position: str
    center: tuple[float, float]  # (x, y) in [0, 1], y down
    extent: float  # side of the bounding square, fraction of the image side


@dataclasses.dataclass(frozen=True)
class Scene:
    """A full record's labels: background color, objects in caption order, the caption."""

    background: str
    objects: tuple[ShapeObject, ...]
    caption: str
    template: int  # index into ONE_OBJECT_TEMPLATES or TWO_OBJECT_TEMPLATES


def with_article(phrase: str) -> str:
    """'a red circle', 'an orange square'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def relation(first: ShapeObject, second: ShapeObject, rng: np.random.Generator) -> str:
    """A spatial relation that holds between two objects in different grid cells."""
    (x1, y1), (x2, y2) = POSITIONS[first.position], POSITIONS[second.position]
    options = []
    if x1 != x2:
        options.append("to the left of" if x1 < x2 else "to the right of")
    if y1 != y2:
        options.append("above" if y1 < y2 else "below")
    return options[int(rng.integers(len(options)))]


def caption_for(background: str, objects: tuple[ShapeObject, ...], template: int, rng: np.random.Generator) -> str:
    """Fills caption template `template` for the scene (see the *_TEMPLATES tables)."""
    words = {"a_bg": with_article(background)}
    for i, obj in enumerate(objects, start=1):
        suffix = "" if len(objects) == 1 else str(i)
        words[f"a_obj{suffix}"] = with_article(f"{obj.color} {obj.shape}")
        words[f"a_size_obj{suffix}"] = with_article(f"{obj.size} {obj.color} {obj.shape}")
        words[f"pos{suffix}"] = POSITION_PHRASES[obj.position]
    templates = ONE_OBJECT_TEMPLATES if len(objects) == 1 else TWO_OBJECT_TEMPLATES
    if "{relation}" in templates[template]:
        words["relation"] = relation(objects[0], objects[1], rng)
    return templates[template].format(**words)


def _place(position: str, extent: float, rng: np.random.Generator) -> tuple[float, float]:
    low, high = extent / 2 + _MARGIN, 1 - extent / 2 - _MARGIN
    cx, cy = POSITIONS[position]
    jitter = rng.uniform(-_JITTER, _JITTER, size=2)
    return (float(np.clip(cx + jitter[0], low, high)), float(np.clip(cy + jitter[1], low, high)))


def _overlap(a: ShapeObject, b: ShapeObject) -> bool:
    reach = (a.extent + b.extent) / 2 + _MARGIN
    return abs(a.center[0] - b.center[0]) < reach and abs(a.center[1] - b.center[1]) < reach


def sample_scene(seed: int, index: int, split: str = "train") -> Scene:
    """The scene of record `index` of `split` for dataset seed `seed` (deterministic).

    One or two objects (equally likely); object colors differ from the background;
    two objects sit in different grid cells and never overlap.
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"Unknown shapes split {split!r}; use one of {sorted(SPLIT_IDS)}.")
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    background = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    object_colors = [c for c in COLOR_NAMES if c != background]
    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    size_names = SIZE_NAMES if num_objects == 1 else TWO_OBJECT_SIZES
    cells = rng.permutation(len(POSITION_NAMES))[:num_objects]
    objects: list[ShapeObject] = []
    for cell in cells:
        size = size_names[int(rng.integers(len(size_names)))]
        position = POSITION_NAMES[int(cell)]
        obj = ShapeObject(
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            color=object_colors[int(rng.integers(len(object_colors)))],
            size=size,
            position=position,
            center=_place(position, SIZES[size], rng),
            extent=SIZES[size],
        )
        objects.append(obj)
    if num_objects == 2 and _overlap(*objects):  # cannot happen with the tables above; guard edits
        raise AssertionError(f"shapes tables let two objects overlap: {objects}")
    templates = ONE_OBJECT_TEMPLATES if num_objects == 1 else TWO_OBJECT_TEMPLATES
    template = int(rng.integers(len(templates)))
    caption = caption_for(background, tuple(objects), template, rng)
    return Scene(background=background, objects=tuple(objects), caption=caption, template=template)
