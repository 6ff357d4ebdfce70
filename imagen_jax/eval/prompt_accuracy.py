"""Prompt accuracy: does each image show what its shapes-vocabulary prompt asks for?

Every image is read by the deterministic analyzer (shape_analyzer.analyze_image) and
every prompt by the parser (prompt_parser.parse_prompt). The requested objects are
matched one-to-one to detected objects by the assignment that gets the most
(color, shape) pairs right, then the most single attributes, then the most stated
sizes and positions. Definitions of the reported rates:

  correct         fraction of images in which EVERY requested object is matched to a
                  detected object of the requested color AND shape (extra objects are
                  allowed; see `count`). This is "prompt accuracy" (color+shape).
  strict          fraction of images in which EVERY stated attribute is right: each
                  object's color and shape, and its size and position where stated, the
                  background where stated, and the relation where stated.
  color, shape    fraction of requested objects whose matched object has the right
                  color / shape; `object` = both right (same as `correct` per object).
  one_object, two_object
                  `correct` over the one-object / two-object prompts only.
  first_object, second_object
                  on two-object prompts, `object` for the first / second one written.
  background      over prompts that state a background: detected background right.
  size, position  over objects whose prompt states them: matched object's size /
                  grid cell right.
  relation        over two-object prompts with a relation ("above", ...): both
                  objects found with color and shape, and their centers in that order.
  count           detected number of objects == requested number.
Rates over an empty subset are None. Chance level for `correct` on a one-object
prompt, guessing one of the 9 non-background colors and one of 3 shapes: 1/27.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from imagen_jax.eval.prompt_parser import (
    RELATIONS,
    PromptRequest,
    RequestedObject,
    parse_prompt,
)
from imagen_jax.eval.shape_analyzer import DetectedObject, ImageAnalysis, analyze_image

_RATES = (
    "correct",
    "strict",
    "color",
    "shape",
    "object",
    "one_object",
    "two_object",
    "first_object",
    "second_object",
    "background",
    "size",
    "position",
    "relation",
    "count",
)


def _pair_score(want: RequestedObject, got: DetectedObject) -> tuple[int, int, int]:
    color, shape = want.color == got.color, want.shape == got.shape
    stated = (want.size is None or want.size == got.size) + (want.position is None or want.position == got.position)
    return (int(color and shape), int(color) + int(shape), stated)


def _relation_holds(relation: str, first: DetectedObject | None, second: DetectedObject | None) -> bool:
    if first is None or second is None:
        return False
    axis, sign = RELATIONS[relation]
    return sign * (first.center[axis] - second.center[axis]) > 0


def match_objects(request: PromptRequest, detected: Sequence[DetectedObject]) -> list[DetectedObject | None]:
    """For each requested object, its detected object under the best one-to-one
    assignment (see module docstring; the stated relation breaks the last ties), or
    None when there are fewer detections."""
    requested = request.objects
    slots = list(detected) + [None] * len(requested)
    best, best_score = None, None
    for choice in itertools.permutations(range(len(slots)), len(requested)):
        pairs = [(want, slots[j]) for want, j in zip(requested, choice)]
        score = tuple(map(sum, zip(*[(_pair_score(w, g) if g is not None else (0, 0, 0)) for w, g in pairs])))
        if request.relation is not None:
            score += (int(_relation_holds(request.relation, *[g for _, g in pairs])),)
        if best_score is None or score > best_score:
            best, best_score = [g for _, g in pairs], score
    return best


def score_prompt(request: PromptRequest, analysis: ImageAnalysis) -> dict:
    """One image's outcomes: per requested object (color, shape, size, position ok),
    background, relation and count; None where the prompt does not state it."""
    matched = match_objects(request, analysis.objects)
    objects = []
    for want, got in zip(request.objects, matched):
        objects.append(
            {
                "color": got is not None and got.color == want.color,
                "shape": got is not None and got.shape == want.shape,
                "size": None if want.size is None else (got is not None and got.size == want.size),
                "position": None if want.position is None else (got is not None and got.position == want.position),
            }
        )
    relation = None
    if request.relation is not None:
        relation = all(o["color"] and o["shape"] for o in objects) and _relation_holds(request.relation, *matched)
    background = None if request.background is None else analysis.background == request.background
    stated = [v for o in objects for v in o.values()] + [background, relation]
    return {
        "correct": all(o["color"] and o["shape"] for o in objects),
        "strict": all(v for v in stated if v is not None),
        "objects": objects,
        "background": background,
        "relation": relation,
        "count": len(analysis.objects) == len(request.objects),
    }


def _rate(values) -> float | None:
    values = [bool(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(scores: Sequence[dict]) -> dict:
    """Per-image outcomes (score_prompt) -> the rates of the module docstring, plus counts."""
    objects = [o for s in scores for o in s["objects"]]
    singles = [s for s in scores if len(s["objects"]) == 1]
    pairs = [s for s in scores if len(s["objects"]) == 2]
    both = lambda o: o["color"] and o["shape"]  # noqa: E731
    rates = {
        "correct": _rate(s["correct"] for s in scores),
        "strict": _rate(s["strict"] for s in scores),
        "color": _rate(o["color"] for o in objects),
        "shape": _rate(o["shape"] for o in objects),
        "object": _rate(both(o) for o in objects),
        "one_object": _rate(s["correct"] for s in singles),
        "two_object": _rate(s["correct"] for s in pairs),
        "first_object": _rate(both(s["objects"][0]) for s in pairs),
        "second_object": _rate(both(s["objects"][1]) for s in pairs),
        "background": _rate(s["background"] for s in scores),
        "size": _rate(o["size"] for o in objects),
        "position": _rate(o["position"] for o in objects),
        "relation": _rate(s["relation"] for s in scores),
        "count": _rate(s["count"] for s in scores),
    }
    assert tuple(rates) == _RATES
    return {**rates, "num_images": len(scores), "num_objects": len(objects), "num_two_object": len(pairs)}


def prompt_accuracy(
    images: Sequence[np.ndarray] | np.ndarray, prompts: Sequence[str], *, per_image: bool = False
) -> dict:
    """Prompt accuracy of `images` (uint8 [N, H, W, 3] or a list of uint8 [H, W, 3] of any
    sizes in 16..1024) against `prompts` (N strings, image i <-> prompt i).

    Returns the rates of the module docstring (floats in [0, 1] or None), "num_images",
    "num_objects", "num_two_object"; with per_image=True also "images": for each image its
    prompt, score_prompt outcomes, and what the analyzer saw (background, objects).
    """
    if len(images) != len(prompts):
        raise ValueError(f"Got {len(images)} images but {len(prompts)} prompts; pass one prompt per image.")
    if len(prompts) == 0:
        raise ValueError("No images to evaluate; pass at least one image and its prompt.")
    requests = [parse_prompt(p) for p in prompts]  # parse all first: a bad prompt fails fast
    scores, details = [], []
    for image, prompt, request in zip(images, prompts, requests):
        analysis = analyze_image(image)
        score = score_prompt(request, analysis)
        scores.append(score)
        if per_image:
            seen = [f"{o.size} {o.color} {o.shape} ({o.position})" for o in analysis.objects]
            details.append({"prompt": prompt, **score, "seen_background": analysis.background, "seen_objects": seen})
    result = summarize(scores)
    if per_image:
        result["images"] = details
    return result
