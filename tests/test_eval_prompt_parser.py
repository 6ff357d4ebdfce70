"""The prompt parser reads every caption template of the shapes dataset back into its labels."""

import numpy as np
import pytest

from imagen_jax.data.shapes_scene import (
    ONE_OBJECT_TEMPLATES,
    TWO_OBJECT_TEMPLATES,
    ShapeObject,
    caption_for,
    sample_scene,
)
from imagen_jax.eval.prompt_parser import (
    RELATIONS,
    PromptRequest,
    RequestedObject,
    parse_prompt,
)

_FIRST = ShapeObject("triangle", "orange", "small", "top left", (1 / 6, 1 / 6), 0.2)
_SECOND = ShapeObject("circle", "gray", "medium", "bottom right", (5 / 6, 5 / 6), 0.28)


def _expected(template: str, background: str, objects) -> PromptRequest:
    """What a caption of `template` states, read from the template's own placeholders."""
    wanted = []
    for i, obj in enumerate(objects, start=1):
        suffix = "" if len(objects) == 1 else str(i)
        wanted.append(
            RequestedObject(
                obj.color,
                obj.shape,
                obj.size if f"{{a_size_obj{suffix}}}" in template else None,
                obj.position if f"{{pos{suffix}}}" in template else None,
            )
        )
    return PromptRequest(tuple(wanted), background if "{a_bg}" in template else None, None)


@pytest.mark.parametrize("index", range(len(ONE_OBJECT_TEMPLATES)))
def test_every_one_object_template(index):
    caption = caption_for("white", (_FIRST,), index, np.random.default_rng(0))
    assert parse_prompt(caption) == _expected(ONE_OBJECT_TEMPLATES[index], "white", (_FIRST,)), caption


@pytest.mark.parametrize("index", range(len(TWO_OBJECT_TEMPLATES)))
def test_every_two_object_template(index):
    template = TWO_OBJECT_TEMPLATES[index]
    caption = caption_for("black", (_FIRST, _SECOND), index, np.random.default_rng(0))
    request = parse_prompt(caption)
    expected = _expected(template, "black", (_FIRST, _SECOND))
    assert request.objects == expected.objects and request.background == expected.background, caption
    if "{relation}" in template:
        assert request.relation in RELATIONS and request.relation in caption
        axis, sign = RELATIONS[request.relation]  # the relation holds between the two scene objects
        assert sign * (_FIRST.center[axis] - _SECOND.center[axis]) > 0
    else:
        assert request.relation is None


def test_dataset_captions_parse_to_their_labels():
    """300 sampled scenes: every object's color and shape, in caption order, and every relation."""
    relations = set()
    for index in range(300):
        scene = sample_scene(0, index, "train")
        request = parse_prompt(scene.caption)
        assert [(o.color, o.shape) for o in request.objects] == [(o.color, o.shape) for o in scene.objects]
        assert request.background in (None, scene.background)
        assert all(r.position in (None, s.position) for r, s in zip(request.objects, scene.objects))
        relations.add(request.relation)
    assert relations == {None, *RELATIONS}  # every relation phrase the dataset writes is known


def test_free_form_prompts():
    request = parse_prompt("A Large RED circle, above two blue squares; on a gray background!")
    assert request.objects == (RequestedObject("red", "circle", "large"), RequestedObject("blue", "square"))
    assert (request.background, request.relation) == ("gray", "above")


def test_prompt_without_object_names_the_vocabulary():
    with pytest.raises(ValueError, match="names no '<color> <shape>' object.*colors: red"):
        parse_prompt("a photo of a cat")
