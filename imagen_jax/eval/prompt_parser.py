"""Caption text -> the objects it asks for, in the shapes dataset's vocabulary.

The words come from `imagen_jax.data.shapes_scene` (COLOR_NAMES, SHAPES, SIZE_NAMES,
POSITION_PHRASES), so the parser follows any change to the dataset's tables. The
relation phrases are the four that `shapes_scene.relation` writes.

Grammar (case and punctuation ignored, articles optional):
  object      = [size] color shape [position phrase]
  background  = color "background"
  relation    = object relation-phrase object
so "a small blue square in the top left on a white background" and "red circle above
a green triangle" both parse. Objects are returned in the order they are written.
"""

from __future__ import annotations

import dataclasses
import re

from imagen_jax.data.shapes_scene import (
    COLOR_NAMES,
    POSITION_PHRASES,
    SHAPES,
    SIZE_NAMES,
)

# Relation phrase -> (axis, sign): "A <phrase> B" holds when sign * (A[axis] - B[axis]) > 0,
# with axis 0 = x (right) and 1 = y (down).
RELATIONS: dict[str, tuple[int, int]] = {
    "to the left of": (0, -1),
    "to the right of": (0, +1),
    "above": (1, -1),
    "below": (1, +1),
}


@dataclasses.dataclass(frozen=True)
class RequestedObject:
    """One object a prompt asks for; size and position are None when not stated."""

    color: str
    shape: str
    size: str | None = None
    position: str | None = None  # a key of shapes_scene.POSITIONS


@dataclasses.dataclass(frozen=True)
class PromptRequest:
    """Everything a prompt states: objects in written order, background, relation."""

    objects: tuple[RequestedObject, ...]
    background: str | None = None
    relation: str | None = None  # a key of RELATIONS, relating objects[0] to objects[1]


def _alternation(words) -> str:
    """Regex alternation, longest first so 'top left' wins over 'top'."""
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_COLOR = _alternation(COLOR_NAMES)
_OBJECT_RE = re.compile(
    rf"\b(?:(?:a|an|the|one)\s+)?(?:(?P<size>{_alternation(SIZE_NAMES)})\s+)?"
    rf"(?P<color>{_COLOR})\s+(?P<shape>{_alternation(SHAPES)})s?\b"
)
_BACKGROUND_RE = re.compile(rf"\b(?P<color>{_COLOR})\s+background\b")
_PHRASE_TO_POSITION = {phrase: name for name, phrase in POSITION_PHRASES.items()}
_POSITION_RE = re.compile(rf"\b(?P<phrase>{_alternation(_PHRASE_TO_POSITION)})\b")
_RELATION_RE = re.compile(rf"\b(?P<relation>{_alternation(RELATIONS)})\b")


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())


def parse_prompt(text: str) -> PromptRequest:
    """The objects, background and relation that `text` asks for.

    Raises ValueError naming the vocabulary when the prompt names no '<color> <shape>'.
    """
    normalized = _normalize(text)
    background = _BACKGROUND_RE.search(normalized)
    matches = list(_OBJECT_RE.finditer(normalized))
    if not matches:
        raise ValueError(
            f"Prompt {text!r} names no '<color> <shape>' object; write prompts in the shapes "
            f"vocabulary, e.g. 'a red circle' (colors: {', '.join(COLOR_NAMES)}; shapes: {', '.join(SHAPES)})."
        )
    objects = []
    relation = None
    for i, match in enumerate(matches):
        # Words between this object and the next (or the end) hold its position phrase,
        # and, after the first object, the relation to the second.
        end = matches[i + 1].start() if i + 1 < len(matches) else len(normalized)
        between = normalized[match.end() : end]
        position = _POSITION_RE.search(between)
        if i == 0 and len(matches) == 2:
            found = _RELATION_RE.search(between)
            relation = found["relation"] if found else None
        objects.append(
            RequestedObject(
                color=match["color"],
                shape=match["shape"],
                size=match["size"],
                position=_PHRASE_TO_POSITION[position["phrase"]] if position else None,
            )
        )
    return PromptRequest(
        objects=tuple(objects), background=background["color"] if background else None, relation=relation
    )
