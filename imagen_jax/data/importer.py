"""`imagen-jax data import`: user images + captions -> a TFDS ArrayRecord dataset.

Inputs: a folder of images, each with a same-named .txt caption beside it (searched
recursively), or a CSV / JSONL table of (image path, caption) rows, paths relative to
the table's folder. Every image is fully decoded before it is written: unreadable
files are counted and skipped with a warning. Grayscale, palette, 16-bit and CMYK
images become RGB; transparency is composited over white; non-square images stay
non-square (the pipeline crops). Optionally the shorter side is reduced to max_size.
Images that need no change keep their original JPEG/PNG bytes; others are stored as PNG.

Output: data_dir/<name>/1.0.0/<name>-<split>.array_record-*, data_dir local or gs://
(prepared in a local staging folder and uploaded, see sources.prepare_builder), readable by name with
`tfds.data_source(name, data_dir=...)` or `imagen_jax.data.open_source`. Features:
"image" (RGB, any size), "caption" (text), "file" (the path relative to the folder, or as written in the table).
Records keep the input order (sorted paths for folders, row order for tables).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from etils import epath
from PIL import Image

from imagen_jax import storage
from imagen_jax.data import image_ops
from imagen_jax.data.sources import prepare_builder, resolve_data_dir
from imagen_jax.data.worker_pool import ordered_map

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
_MAX_LOGGED_WARNINGS = 20


@dataclasses.dataclass(frozen=True)
class ImportItem:
    """One image to import: its path, its name as given (recorded as "file"), its caption."""

    path: str
    name: str
    caption: str


@dataclasses.dataclass
class ImportReport:
    """What an import did: records written per split and files skipped, with reasons."""

    written: dict[str, int] = dataclasses.field(default_factory=dict)
    unreadable: list[str] = dataclasses.field(default_factory=list)
    missing_caption: list[str] = dataclasses.field(default_factory=list)
    missing_file: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        written = ", ".join(f"{n} {split}" for split, n in self.written.items()) or "nothing"
        return (
            f"Imported {written}; skipped {len(self.unreadable)} unreadable images, "
            f"{len(self.missing_caption)} images without a caption file, {len(self.missing_file)} missing files."
        )


def _warn(report: ImportReport, message: str) -> None:
    skipped = len(report.unreadable) + len(report.missing_caption) + len(report.missing_file)
    if skipped <= _MAX_LOGGED_WARNINGS:
        log.warning(message)
    elif skipped == _MAX_LOGGED_WARNINGS + 1:
        log.warning("More files skipped; the summary at the end counts them all.")


def list_folder(folder: str | os.PathLike, report: ImportReport) -> list[ImportItem]:
    """Images under `folder` (recursive, sorted) whose same-named .txt caption exists."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Image folder {folder!r} does not exist.")
    items = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for file in sorted(files):
            stem, ext = os.path.splitext(file)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            path = os.path.join(root, file)
            caption_path = os.path.join(root, stem + ".txt")
            if not os.path.isfile(caption_path):
                report.missing_caption.append(path)
                _warn(report, f"Skipping {path}: no caption file {caption_path}.")
                continue
            with open(caption_path, encoding="utf-8", errors="replace") as f:
                name = os.path.relpath(path, folder)
                items.append(ImportItem(path=path, name=name, caption=f.read().strip()))
    return items


def list_table(
    table: str | os.PathLike,
    report: ImportReport,
    *,
    image_column: str = "path",
    caption_column: str = "caption",
) -> list[ImportItem]:
    """Rows of a .csv (with a header) or .jsonl table; relative paths are relative to its folder."""
    table = os.fspath(table)
    base = os.path.dirname(os.path.abspath(table))
    if table.endswith(".csv"):
        with open(table, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif table.endswith((".jsonl", ".json")):
        with open(table, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        raise ValueError(f"Unsupported caption table {table!r}: use a .csv or a .jsonl file.")
    items = []
    for number, row in enumerate(rows, start=1):
        if image_column not in row or caption_column not in row:
            raise KeyError(
                f"Row {number} of {table} lacks column {image_column!r} or {caption_column!r} (it has "
                f"{sorted(row)}); name the columns with --image-column / --caption-column."
            )
        name = str(row[image_column])
        path = os.path.join(base, os.path.expanduser(name))
        if not os.path.isfile(path):
            report.missing_file.append(path)
            _warn(report, f"Skipping row {number} of {table}: no file {path}.")
            continue
        items.append(ImportItem(path=path, name=name, caption=str(row[caption_column]).strip()))
    return items


def encode_for_import(data: bytes, max_size: int | None = None) -> bytes:
    """The bytes to store for one image file: decoded fully (raises on corrupt data),
    made RGB, shorter side reduced to max_size (antialiased); the original bytes if
    nothing changed and it is a JPEG or PNG, else a PNG."""
    original = Image.open(io.BytesIO(data))
    original.load()
    return encode_loaded(data, original, max_size)


def encode_loaded(data: bytes, original: Image.Image, max_size: int | None = None) -> bytes:
    """encode_for_import of `data` already opened and loaded as `original`."""
    image = image_ops.to_rgb(original)
    changed = image is not original
    width, height = image.size
    if max_size and min(width, height) > max_size:
        scale = max_size / min(width, height)
        size = (max(max_size, round(width * scale)), max(max_size, round(height * scale)))
        image = image.resize(size, image_ops.resampling("bicubic"), reducing_gap=None)
        changed = True
    if not changed and original.format in ("JPEG", "PNG"):
        return data
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _encode_item(args: tuple[str, int | None]) -> tuple[bytes | None, str]:
    path, max_size = args
    try:
        with open(path, "rb") as f:
            return encode_for_import(f.read(), max_size), ""
    except Exception as error:  # any decoder error means "unreadable": count it, never crash
        return None, f"{type(error).__name__}: {error}"


DATASET_VERSION = "1.0.0"


def check_dataset_name(name: str) -> None:
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"Bad dataset name {name!r}: use lower case letters, digits and '_', e.g. 'my_photos'.")


def import_features() -> tfds.features.FeaturesDict:
    """An imported record: "image" (encoded RGB, any size), "caption", "file" (its source)."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "caption": tfds.features.Text(),
            "file": tfds.features.Text(),
        }
    )


class ImportedImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """TFDS builder for an import; its name is given per instance (not a registered class)."""

    VERSION = tfds.core.Version(DATASET_VERSION)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # See ImagenShapes.code_path: avoids TFDS probing `importlib_resources`.
        return epath.Path(__file__)

    def __init__(
        self,
        *,
        name: str,
        splits: dict[str, Sequence[ImportItem]],
        report: ImportReport,
        max_size: int | None = None,
        num_workers: int = 1,
        **kwargs,
    ):
        self.name = name
        self._splits = splits
        self._report = report
        self._max_size = max_size
        self._num_workers = max(1, num_workers)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Images with captions imported by `imagen-jax data import`.",
            features=import_features(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split, items) for split, items in self._splits.items()}

    def _generate_examples(self, split: str, items: Sequence[ImportItem]) -> Iterator[tuple[int, dict]]:
        tasks = [(item.path, self._max_size) for item in items]
        written = 0
        with ordered_map(_encode_item, tasks, num_workers=self._num_workers, chunksize=16) as results:
            progress = tqdm.tqdm(zip(items, results), total=len(items), desc=f"Importing {split}", unit=" images")
            for index, (item, (encoded, error)) in enumerate(progress):
                if encoded is None:
                    self._report.unreadable.append(item.path)
                    _warn(self._report, f"Skipping unreadable image {item.path} ({error}).")
                    progress.set_postfix(skipped=len(self._report.unreadable))
                    continue
                written += 1
                yield index, {"image": encoded, "caption": item.caption, "file": item.name}
        self._report.written[split] = written


def import_dataset(
    source: str | os.PathLike,
    *,
    name: str,
    data_dir: str | os.PathLike | None = None,
    image_column: str = "path",
    caption_column: str = "caption",
    test_size: int = 0,
    seed: int = 0,
    max_size: int | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
) -> tuple[tfds.core.DatasetBuilder, ImportReport]:
    """Imports a folder or a .csv/.jsonl table (see module docstring) as TFDS dataset `name`.

    test_size: that many items, drawn with `seed`, go to a "test" split (the rest to
    "train"). Returns the prepared builder and the report of what was written/skipped.
    """
    check_dataset_name(name)
    report = ImportReport()
    if storage.is_remote(storage.path(source)):
        raise ValueError(
            f"{os.fspath(source)!r}: the images to import are read from a local folder or table; copy "
            "them here first (`gcloud storage cp -r SRC DIR`). The output --data-dir may be gs://."
        )
    if os.path.isdir(source):
        items = list_folder(source, report)
    elif os.path.isfile(source):
        items = list_table(source, report, image_column=image_column, caption_column=caption_column)
    else:
        raise FileNotFoundError(f"Nothing to import at {os.fspath(source)!r}: give a folder, a .csv or a .jsonl file.")
    if not items:
        raise ValueError(f"No images with captions found in {os.fspath(source)!r}. {report.summary()}")
    if not 0 <= test_size < len(items):
        raise ValueError(f"test_size must be in [0, {len(items)}) for {len(items)} images, got {test_size}.")
    is_test = np.zeros(len(items), bool)
    is_test[np.random.default_rng(seed).permutation(len(items))[:test_size]] = True
    splits = {"train": [it for it, t in zip(items, is_test) if not t]}
    if test_size:
        splits["test"] = [it for it, t in zip(items, is_test) if t]

    def make_builder(directory: str) -> ImportedImages:
        return ImportedImages(
            name=name,
            splits=splits,
            report=report,
            max_size=max_size,
            num_workers=num_workers or os.cpu_count() or 1,
            data_dir=directory,
            file_format="array_record",
        )

    data_dir = resolve_data_dir(data_dir)
    storage.check_access(data_dir, write=True)
    builder = make_builder(data_dir)
    if builder.is_prepared():
        if not overwrite:
            raise FileExistsError(
                f"Dataset {name!r} already exists in {builder.data_dir}; pick another name or pass --overwrite."
            )
        storage.rmtree(builder.data_dir)
    try:
        builder = prepare_builder(make_builder, data_dir)
    except AssertionError:  # TFDS refuses to write a split without examples
        empty = [split for split in splits if report.written.get(split, 0) == 0]
        if not empty:
            raise
        raise ValueError(
            f"No readable image in split(s) {empty}; nothing was written. {report.summary()} "
            "Fix or remove the unreadable files, or change --test-size / --seed."
        ) from None
    if report.unreadable or report.missing_caption or report.missing_file:
        log.warning(report.summary())
    return builder, report
