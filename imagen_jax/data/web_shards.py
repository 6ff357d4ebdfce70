"""Reading img2dataset output: webdataset .tar shards and parquet files, local or gs://.

img2dataset writes each shard as a tar of consecutive same-key members (`KEY.jpg` or
.png/.webp, `KEY.txt` the caption, `KEY.json` its metadata: url, width, height,
original_width, original_height, ...) or as a parquet file with one row per image (the
image bytes in a column named after the encode format, `jpg` by default, the caption in
`caption`, plus key/status/original_width/...). Both are read as a stream of `RawRecord`s
in file order; nothing is decoded here.

A shard that breaks half way (a truncated tar, a corrupt parquet page) raises from the
iterator after the records read before the break; the caller counts the shard as
unreadable and keeps what it got.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tarfile
from collections.abc import Iterator, Sequence

from imagen_jax import storage

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet",)
SHARD_SUFFIXES = TAR_SUFFIXES + PARQUET_SUFFIXES
IMAGE_MEMBER_SUFFIXES = ("jpg", "jpeg", "png", "webp")
# img2dataset's parquet layout (encode_format "jpg"; "png"/"webp" name the column too).
PARQUET_IMAGE_COLUMN = "jpg"
PARQUET_CAPTION_COLUMN = "caption"
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_PARQUET_BATCH = 256


@dataclasses.dataclass
class RawRecord:
    """One image-text pair as stored: `image` encoded bytes (None if the pair has no
    image), `caption` text (None if it has none), `meta` the img2dataset json (or the
    parquet row's other columns)."""

    key: str
    image: bytes | None
    caption: str | None
    meta: dict


def is_shard(path: str) -> bool:
    return path.lower().endswith(SHARD_SUFFIXES)


def expand_braces(pattern: str) -> list[str]:
    """webdataset's brace ranges: 'shards/{00000..00002}.tar' -> the three names (zero
    padding kept from the first bound); several ranges expand as a product."""
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    first, last = match.group(1), match.group(2)
    width = len(first) if first.startswith("0") else 0
    names = []
    for number in range(int(first), int(last) + 1):
        names += expand_braces(pattern[: match.start()] + str(number).zfill(width) + pattern[match.end() :])
    return names


def list_shards(sources: Sequence[str]) -> list[str]:
    """The input shards named by `sources`: paths, globs (`*`, `?`, `[...]`) or brace
    ranges, local or gs://, in the order given (each glob sorted). Duplicates are dropped.
    A glob that matches no shard raises; a brace-named file that does not exist is kept
    (it is counted as an unreadable shard, as img2dataset leaves gaps for failed shards)."""
    shards: list[str] = []
    for source in sources:
        for pattern in expand_braces(source):
            if any(c in pattern for c in "*?["):
                found = [p for p in storage.glob(pattern) if is_shard(p)]
                if not found:
                    raise FileNotFoundError(f"No .tar or .parquet shard matches {pattern!r}.")
                shards += found
            elif not is_shard(pattern):
                raise ValueError(
                    f"{pattern!r} is not a .tar / .tar.gz / .parquet shard; give shards only, or one folder / "
                    ".csv / .jsonl."
                )
            else:
                shards.append(os.fspath(storage.path(pattern)))
    return list(dict.fromkeys(shards))


def read_shard(path: str, *, image_column: str | None = None, caption_column: str | None = None) -> Iterator[RawRecord]:
    """The records of one shard, in file order (see the module docstring)."""
    if path.lower().endswith(PARQUET_SUFFIXES):
        image_column, caption_column = image_column or PARQUET_IMAGE_COLUMN, caption_column or PARQUET_CAPTION_COLUMN
        yield from read_parquet(path, image_column=image_column, caption_column=caption_column)
    else:
        yield from read_tar(path)


def _split_member(name: str) -> tuple[str, str]:
    """webdataset's key/extension rule: the key is the path up to the first '.' of the
    file name; the extension is the rest, lower case ('a/b.c.jpg' -> ('a/b', 'c.jpg'))."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _record_from_members(key: str, members: dict[str, bytes]) -> RawRecord:
    image = next((members[s] for s in IMAGE_MEMBER_SUFFIXES if s in members), None)
    caption = members["txt"].decode("utf-8", errors="replace") if "txt" in members else None
    meta: dict = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"])
        except ValueError:
            meta = {}
    return RawRecord(key=key, image=image, caption=caption, meta=meta if isinstance(meta, dict) else {})


def read_tar(path: str) -> Iterator[RawRecord]:
    """Records of a webdataset tar (optionally gzipped), streamed: consecutive members
    with the same key form one record."""
    with storage.path(path).open("rb") as file, tarfile.open(fileobj=file, mode="r|*") as archive:
        key, members = None, {}
        for member in archive:
            if not member.isfile():
                continue
            member_key, extension = _split_member(member.name)
            if member_key.startswith("__") or member.name.split("/")[-1].startswith("."):
                continue  # __MACOSX/, ._resource forks, hidden files
            if member_key != key:
                if key is not None:
                    yield _record_from_members(key, members)
                key, members = member_key, {}
            members[extension] = archive.extractfile(member).read()
        if key is not None:
            yield _record_from_members(key, members)


def read_parquet(path: str, *, image_column: str, caption_column: str) -> Iterator[RawRecord]:
    """Records of a parquet file, read in batches of rows: `image_column` holds the image
    bytes (null for a failed download), `caption_column` the caption; the `key` column
    (if any) names each record, else its row number."""
    import pyarrow.parquet as pq

    with storage.path(path).open("rb") as file:
        table = pq.ParquetFile(file)
        columns = table.schema_arrow.names
        missing = [c for c in (image_column, caption_column) if c not in columns]
        if missing:
            raise KeyError(
                f"{path} has no column {missing[0]!r} (it has {columns}); name the columns with "
                "--image-column / --caption-column."
            )
        row = 0
        for batch in table.iter_batches(batch_size=_PARQUET_BATCH):
            for values in batch.to_pylist():
                image, caption = values.pop(image_column), values.pop(caption_column)
                key = values.get("key")
                yield RawRecord(
                    key=str(key) if key is not None else str(row),
                    image=bytes(image) if image is not None else None,
                    caption=str(caption) if caption is not None else None,
                    meta=values,
                )
                row += 1
