"""Loading Hugging Face CLIP checkpoints as our ClipModel (clip_model.py), with CLIP's tokenization
and image preprocessing, for CLIP score evaluation.

A checkpoint is a directory (local or gs://) written by transformers' `CLIPModel.save_pretrained`
plus its tokenizer (and usually `CLIPProcessor.save_pretrained`): config.json, weights
(model.safetensors, a sharded index, or pytorch_model.bin, read by text.hf_checkpoint), the
tokenizer files, and optionally preprocessor_config.json. CLIP: Radford et al. 2021, "Learning
Transferable Visual Models From Natural Language Supervision".
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax import storage
from imagen_jax.eval.clip_model import ClipConfig, param_shapes
from imagen_jax.text.hf_checkpoint import StoredTensor, iter_hf_tensors
from imagen_jax.text.tokenizer import load_tokenizer

# OpenAI CLIP's normalization (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PIL_BICUBIC = 3

# CLIPModel tensors that CLIP score does not use: the contrastive temperature and position-id buffers.
IGNORED_WEIGHTS = (
    "logit_scale",
    "text_model.embeddings.position_ids",
    "vision_model.embeddings.position_ids",
)

_Rule = tuple[tuple[str, ...], str]


def hf_to_params_rules(config: ClipConfig) -> dict[str, _Rule]:
    """HF CLIPModel tensor name -> (our parameter path, layout) for every weight we use.

    Layouts: "same" (as stored), "transpose" (torch Linear [out, in] -> Dense kernel [in, out]),
    "conv" (torch Conv2d [out, in, kh, kw] -> flax Conv [kh, kw, in, out])."""
    rules: dict[str, _Rule] = {
        "visual_projection.weight": (("visual_projection", "kernel"), "transpose"),
        "text_projection.weight": (("text_projection", "kernel"), "transpose"),
        "text_model.embeddings.token_embedding.weight": (("text_model", "token_embedding", "embedding"), "same"),
        "text_model.embeddings.position_embedding.weight": (("text_model", "position_embedding", "embedding"), "same"),
        "vision_model.embeddings.class_embedding": (("vision_model", "class_embedding"), "same"),
        "vision_model.embeddings.patch_embedding.weight": (("vision_model", "patch_embedding", "kernel"), "conv"),
        "vision_model.embeddings.position_embedding.weight": (
            ("vision_model", "position_embedding", "embedding"),
            "same",
        ),
    }

    def layer_norm(hf: str, ours: tuple[str, ...]):
        rules[f"{hf}.weight"] = ((*ours, "scale"), "same")
        rules[f"{hf}.bias"] = ((*ours, "bias"), "same")

    def dense(hf: str, ours: tuple[str, ...]):
        rules[f"{hf}.weight"] = ((*ours, "kernel"), "transpose")
        rules[f"{hf}.bias"] = ((*ours, "bias"), "same")

    layer_norm("text_model.final_layer_norm", ("text_model", "final_layer_norm"))
    layer_norm("vision_model.pre_layrnorm", ("vision_model", "pre_layernorm"))
    layer_norm("vision_model.post_layernorm", ("vision_model", "post_layernorm"))
    for tower, num_layers in (
        ("text_model", config.text.num_hidden_layers),
        ("vision_model", config.vision.num_hidden_layers),
    ):
        for i in range(num_layers):
            hf, ours = f"{tower}.encoder.layers.{i}", (tower, f"layers_{i}")
            for hf_name, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out")):
                dense(f"{hf}.self_attn.{hf_name}", (*ours, "attention", name))
            dense(f"{hf}.mlp.fc1", (*ours, "mlp", "fc1"))
            dense(f"{hf}.mlp.fc2", (*ours, "mlp", "fc2"))
            layer_norm(f"{hf}.layer_norm1", (*ours, "layer_norm1"))
            layer_norm(f"{hf}.layer_norm2", (*ours, "layer_norm2"))
    return rules


def _to_ours(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "transpose":
        return array.T
    if layout == "conv":
        return array.transpose(2, 3, 1, 0)
    return array


def params_from_hf_tensors(tensors, config: ClipConfig, dtype: Any = np.float32) -> dict[str, Any]:
    """Our ClipModel params (nested dict of numpy arrays in `dtype`) from (HF name, StoredTensor or
    array) pairs or a {name: array} dict. Raises one ValueError listing every missing and
    unexpected weight and every shape mismatch."""
    rules, expected = hf_to_params_rules(config), param_shapes(config)
    if isinstance(tensors, dict):
        tensors = iter(tensors.items())
    params: dict[str, Any] = {}
    found, unexpected, bad_shapes = set(), [], []
    for name, stored in tensors:
        if name in IGNORED_WEIGHTS:
            continue
        if name not in rules:
            unexpected.append(name)
            continue
        found.add(name)
        path, layout = rules[name]
        if not isinstance(stored, StoredTensor):
            stored = StoredTensor.in_memory(np.asarray(stored))
        shape = stored.shape[::-1] if layout == "transpose" else stored.shape
        if layout == "conv" and len(shape) == 4:
            shape = tuple(shape[i] for i in (2, 3, 1, 0))
        if tuple(shape) != expected[path]:
            bad_shapes.append(f"{name}: {stored.shape} does not give {expected[path]}")
            continue
        value = _to_ours(np.asarray(stored.rows(0, stored.shape[0])), layout)
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.ascontiguousarray(value.astype(dtype))
    missing = sorted(set(rules) - found, key=_natural_key)
    if missing or unexpected or bad_shapes:
        lines = ["The checkpoint does not match its config.json as a CLIPModel:"]
        if missing:
            lines.append(f"  missing weights ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected weights ({len(unexpected)}): {', '.join(sorted(unexpected, key=_natural_key))}")
        if bad_shapes:
            lines.append(f"  wrong shapes ({len(bad_shapes)}): {'; '.join(bad_shapes)}")
        lines.append(
            "Check that config.json belongs to these weights and that the checkpoint is a full CLIPModel "
            "(both towers and both projections), e.g. openai/clip-vit-large-patch14."
        )
        raise ValueError("\n".join(lines))
    return params


@dataclasses.dataclass(frozen=True, eq=False)
class Clip:
    """A loaded CLIP: config, params (ClipModel's, on the default device), tokenizer (transformers'),
    and image preprocessing: resize so the shortest side is `resize_size` (or to (height, width) when
    a pair) with PIL `resample`, center crop `image_size`, /255, normalize with `image_mean` / `image_std`."""

    config: ClipConfig
    params: Any
    tokenizer: Any
    image_size: int
    resize_size: int | tuple[int, int]
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: int = PIL_BICUBIC


def read_clip_config(checkpoint_dir: str) -> ClipConfig:
    """ClipConfig from `checkpoint_dir`/config.json."""
    path = storage.path(checkpoint_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"No config.json in {checkpoint_dir!r}. Pass a Hugging Face CLIPModel checkpoint directory "
            "(config.json, model.safetensors, tokenizer files), e.g. one written by `save_pretrained`."
        )
    return ClipConfig.from_hf_dict(json.loads(storage.read_text(storage.join(checkpoint_dir, "config.json"))))


def _size(value, name: str):
    """A preprocessor size entry: an int, {"shortest_edge": s}, or {"height": h, "width": w}."""
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, dict) and value.get("shortest_edge") is not None:
        return int(value["shortest_edge"])
    if isinstance(value, dict) and value.get("height") is not None and value.get("width") is not None:
        return int(value["height"]), int(value["width"])
    raise ValueError(f"preprocessor_config.json: {name} {value!r} is not an int, shortest_edge or height/width.")


def read_preprocessing(checkpoint_dir: str, image_size: int) -> dict[str, Any]:
    """Clip's preprocessing fields from preprocessor_config.json (CLIPImageProcessor's), or OpenAI's
    defaults (resize and crop to `image_size`, OpenAI mean/std, bicubic) when there is none."""
    fields = dict(image_size=image_size, resize_size=image_size)
    if not (storage.path(checkpoint_dir) / "preprocessor_config.json").exists():
        return fields
    pre = json.loads(storage.read_text(storage.join(checkpoint_dir, "preprocessor_config.json")))
    if "crop_size" in pre:
        crop = _size(pre["crop_size"], "crop_size")
        crop = crop if isinstance(crop, int) else _square(crop)
        if crop != image_size:
            raise ValueError(
                f"preprocessor_config.json crops {crop}x{crop} images but the vision tower takes {image_size}."
            )
    if "size" in pre:
        fields["resize_size"] = _size(pre["size"], "size")
    if "image_mean" in pre:
        fields["image_mean"] = tuple(float(v) for v in pre["image_mean"])
    if "image_std" in pre:
        fields["image_std"] = tuple(float(v) for v in pre["image_std"])
    if "resample" in pre:
        fields["resample"] = int(pre["resample"])
    return fields


def _square(size: tuple[int, int]) -> int:
    if size[0] != size[1]:
        raise ValueError(f"preprocessor_config.json: crop_size {size} is not square.")
    return size[0]


def load_clip(checkpoint_dir: str, dtype: Any = jnp.float32) -> Clip:
    """A Hugging Face CLIPModel checkpoint directory (local or gs://) as a Clip, params in `dtype`."""
    config = read_clip_config(checkpoint_dir)
    params = params_from_hf_tensors(iter_hf_tensors(checkpoint_dir), config, np.dtype(dtype))
    return Clip(
        config=config,
        params=jax.device_put(params),
        tokenizer=load_tokenizer(checkpoint_dir),
        **read_preprocessing(checkpoint_dir, config.vision.image_size),
    )


def tokenize_clip(clip: Clip, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids int32 [N, L] and mask bool [N, L], L = the text tower's max_position_embeddings (77):
    <|startoftext|> tokens <|endoftext|>, right-padded with the tokenizer's pad id (its EOS id when it
    has none); longer texts are truncated keeping <|endoftext|> last, as transformers' truncation does."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("tokenize_clip expects a list of texts, not a single string; wrap it: [text].")
    tokenizer, length = clip.tokenizer, clip.config.text.max_position_embeddings
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = np.full((len(texts), length), pad, np.int32)
    mask = np.zeros((len(texts), length), bool)
    for i, tokens in enumerate(tokenizer([str(t) for t in texts], add_special_tokens=True)["input_ids"]):
        if len(tokens) > length:
            tokens = tokens[: length - 1] + [tokens[-1]]  # the last token is <|endoftext|>
        ids[i, : len(tokens)] = tokens
        mask[i, : len(tokens)] = True
    return ids, mask


def _resize_and_crop(image: np.ndarray, resize_size, crop: int, resample: int) -> np.ndarray:
    """One uint8 [H, W, 3] image -> uint8 [crop, crop, 3], as CLIPImageProcessor: PIL resize (shortest
    side to resize_size, the other int(resize_size * long / short)), then a center crop (zero-padded
    when the resized image is smaller)."""
    from PIL import Image

    h, w = image.shape[:2]
    if isinstance(resize_size, int):
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(resize_size * long / short)
        new_h, new_w = (new_long, resize_size) if w <= h else (resize_size, new_long)
    else:
        new_h, new_w = resize_size
    image = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=resample))
    if new_h < crop or new_w < crop:
        extra = [max(crop - n, 0) for n in (new_h, new_w)]
        image = np.pad(image, [(math.ceil(e / 2), e - math.ceil(e / 2)) for e in extra] + [(0, 0)])
    top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
    return image[top : top + crop, left : left + crop]


def clip_preprocess(images, clip: Clip) -> np.ndarray:
    """CLIP's image preprocessing (transformers' CLIPImageProcessor, PIL backend): uint8 images
    [N, H, W, 3] (or a list of [H_i, W_i, 3]) -> float32 [N, S, S, 3] (NHWC), S = clip.image_size:
    resize (PIL bicubic, shortest side to clip.resize_size), center crop, /255, (x - mean) / std."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError(f"clip_preprocess expects a batch [N, H, W, 3], got one image {images.shape}; wrap it.")
    out = []
    for image in images:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"clip_preprocess expects uint8 RGB images [H, W, 3], got {image.dtype} {image.shape}.")
        out.append(_resize_and_crop(image, clip.resize_size, clip.image_size, clip.resample))
    if not out:
        return np.zeros((0, clip.image_size, clip.image_size, 3), np.float32)
    # As transformers: rescale in float64 then float32, normalize in float32.
    pixels = (np.stack(out).astype(np.float64) * (1 / 255)).astype(np.float32)
    mean, std = np.asarray(clip.image_mean, np.float32), np.asarray(clip.image_std, np.float32)
    return (pixels - mean) / std


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
