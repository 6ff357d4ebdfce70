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


class OutputDirError(ValueError):
    """An output folder that holds samples made with other settings."""


class SampleWriter:
    """Writes a cascade's batches as they come (Cascade.sample_batches), so a long job keeps
    one batch in memory and an interrupted one resumes:

      <out>/<index>_<prompt slug>.png     the final stage's images
      <out>/stages/<i>_<name>/...png      each earlier stage's (same names)
      <out>/manifest.jsonl                {"index", "image", "prompt", "seed"} per image, in
                                          index order once the job ends (imagen-jax eval --manifest)
      <out>/settings.json                 prompts' count, seed, batch size, stages (checkpoint step) and their
                                          sampler settings: a rerun with other settings is refused
      <out>/grid.png                      the first 64 final images (and one per stage folder)

    Every process writes the images of its own rows; process 0 writes the manifest and the
    settings. `done(b, indices)` says whether batch b's images are all there (a rerun skips it).
    """

    GRID_IMAGES = 64

    def __init__(self, out_dir: str, prompts: Sequence[str], *, settings: dict, stage_dirs: Sequence[str]):
        """stage_dirs: one folder per written stage relative to out_dir, the last "" (out_dir)."""
        import jax

        self.out_dir = out_dir
        self.prompts = list(prompts)
        self.names = image_file_names(self.prompts)
        self.dirs = [storage.join(out_dir, d) if d else out_dir for d in stage_dirs]
        self.seed = settings["seed"]
        self.batch_size = settings["batch_size"]
        self.is_writer = jax.process_index() == 0
        settings_path = storage.join(out_dir, "settings.json")
        if storage.path(settings_path).exists():
            saved = json.loads(storage.read_text(settings_path))
            if saved != json.loads(json.dumps(settings)):
                changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
                raise OutputDirError(
                    f"{out_dir} holds samples made with other settings ({', '.join(changed)} differ); "
                    "pass another --out, or delete that folder to start over."
                )
        elif self.is_writer:
            storage.write_text(settings_path, json.dumps(settings, indent=1, sort_keys=True))
        self.existing = [_file_names(d) for d in self.dirs]
        self._manifest = storage.AppendFile(storage.join(out_dir, "manifest.jsonl"), upload_every=30.0)

    def done(self, batch_number: int, indices: np.ndarray) -> bool:
        return all(self.names[i] in names for names in self.existing for i in indices)

    def write(self, batch) -> None:
        """Batch `batch` (SampledBatch): this process's PNGs for every stage, then (process 0)
        the manifest lines of the whole global batch."""
        for directory, names, images in zip(self.dirs, self.existing, batch.images):
            for i, image in zip(batch.indices, images):
                save_png(image, storage.join(directory, self.names[i]))
                names.add(self.names[i])
        if self.is_writer:
            start = batch.number * self.batch_size
            for i in range(start, min(start + self.batch_size, len(self.prompts))):
                self._manifest.write((json.dumps(self._entry(i)) + "\n").encode())
            self._manifest.flush()

    def _entry(self, i: int) -> dict:
        return {"index": i, "image": self.names[i], "prompt": self.prompts[i], "seed": self.seed}

    def finish(self) -> int:
        """After the last batch (every process calls it): process 0 rewrites the manifest in
        index order, one line per image on disk, and draws the grids. Returns the count of
        final images on disk."""
        import jax
        from jax.experimental import multihost_utils

        self._manifest.close()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("imagen_jax_samples_written")
        final = _file_names(self.dirs[-1])
        written = [i for i, name in enumerate(self.names) if name in final]
        if self.is_writer:
            lines = "".join(json.dumps(self._entry(i)) + "\n" for i in written)
            storage.write_text(storage.join(self.out_dir, "manifest.jsonl"), lines)
            for directory in self.dirs:
                first = [_read_png(storage.join(directory, self.names[i])) for i in written[: self.GRID_IMAGES]]
                if first:
                    save_png(make_grid(np.stack(first), upscale_to=64), storage.join(directory, "grid.png"))
        return len(written)


def _file_names(directory: str) -> set[str]:
    """Names of the files in `directory` (local or gs://): one listing, not one request per file."""
    path = storage.path(directory)
    return {p.name for p in path.iterdir()} if path.exists() else set()


def _read_png(path: str) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(storage.path(path).read_bytes())).convert("RGB"))
