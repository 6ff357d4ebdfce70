"""Writing a cascade's images: PNG files with safe names, a grid, and a manifest that
`imagen-jax eval --manifest` reads. Prompt text never becomes a path by itself."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from imagen_jax import storage
from imagen_jax.images import make_grid, save_png

MAX_SLUG_LENGTH = 60


def prompt_slug(prompt: str, max_length: int = MAX_SLUG_LENGTH) -> str:
    """A file-name fragment from a prompt: ASCII [a-z0-9-] only, at most `max_length` long,
    never empty ('prompt'), never '.', '..', a separator or a hidden-file name."""
    text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:max_length].rstrip("-")
    return slug or "prompt"


def image_file_names(prompts: Sequence[str]) -> list[str]:
    """'000_a-red-circle.png', ...: the index makes every name unique (same prompt twice,
    prompts that differ only in punctuation) and keeps the prompts' order when sorted."""
    width = max(3, len(str(len(prompts) - 1)))
    return [f"{i:0{width}d}_{prompt_slug(p)}.png" for i, p in enumerate(prompts)]


def write_images(
    out_dir: str, prompts: Sequence[str], images: np.ndarray, *, grid_name: str = "grid.png", upscale_to: int = 0
) -> dict:
    """Write uint8 images [N, H, W, 3] as PNGs under `out_dir`, their grid, and
    manifest.json ([{"image": file, "prompt": text}] relative to out_dir). Returns the manifest."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(prompts):
        raise ValueError(
            f"write_images needs uint8 [N, H, W, 3] for N = {len(prompts)} prompts, got {images.dtype} {images.shape}."
        )
    entries = []
    for name, prompt, image in zip(image_file_names(prompts), prompts, images):
        save_png(image, storage.join(out_dir, name))
        entries.append({"image": name, "prompt": prompt})
    save_png(make_grid(images, upscale_to=upscale_to), storage.join(out_dir, grid_name))
    storage.write_text(storage.join(out_dir, "manifest.json"), json.dumps(entries, indent=1))
    return {"images": entries, "grid": grid_name}
