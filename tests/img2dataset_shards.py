"""Small img2dataset-style inputs written by the tests: webdataset tars (KEY.jpg/png +
KEY.txt + KEY.json) and a parquet file (image bytes in `jpg`, `caption`, `key`, `status`,
original sizes), with every kind of bad record the importer must count.

`write_shards(folder)` returns the Expected outcome under FILTERS: the kept records in
order (file, caption, pixels) and the exact drop count of each reason."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile

import numpy as np
from PIL import Image

from imagen_jax.data.web_filters import ImportFilters

FILTERS = ImportFilters(min_image_side=32, max_aspect_ratio=2.0, min_caption_length=3, max_caption_length=60)


@dataclasses.dataclass
class Expected:
    kept: list[tuple[str, str, np.ndarray]]  # (file, caption, RGB pixels) in import order
    dropped: dict[str, int]
    records: int  # records read from the shards (the truncated tar's tail is never seen)
    unreadable_shards: list[str]  # shard file names


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _write_tar(path, records: list[dict], *, truncate_at: int | None = None) -> None:
    """records: {"key", "image" (bytes, ext), "caption", "json"}, any part missing."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for record in records:
            members = []
            if "image" in record:
                members.append((f"{record['key']}.{record['image'][1]}", record["image"][0]))
            if "caption" in record:
                members.append((f"{record['key']}.txt", record["caption"].encode()))
            if "json" in record:
                members.append((f"{record['key']}.json", json.dumps(record["json"]).encode()))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    path.write_bytes(data[:truncate_at] if truncate_at else data)


def write_shards(folder, *, seed: int = 0) -> Expected:
    """Writes 00000.tar, 00001.tar, 00002.tar (truncated in its last image) and 00003.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def pixels(height=40, width=40):
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)

    kept, dropped = [], dict.fromkeys(("missing_image", "missing_caption", "caption_too_short"), 0)
    dropped |= dict.fromkeys(("caption_too_long", "corrupt_image", "image_too_small", "aspect_ratio", "duplicate"), 0)

    def keep(shard, key, caption, data):
        kept.append((f"{shard}/{key}", caption.strip(), _decoded(data)))

    # Shard 0: good PNG, corrupt JPEG, no caption, good JPEG, upsampled from a 20 px original.
    shared = _png(pixels(40, 48))  # also copied into shard 1 and the parquet file
    s0 = [
        {"key": "000000000", "image": (shared, "png"), "caption": " a red square ", "json": {"width": 48}},
        {"key": "000000001", "image": (b"\xff\xd8\xff\xe0" + b"junk" * 30, "jpg"), "caption": "corrupt"},
        {"key": "000000002", "image": (_png(pixels()), "png"), "json": {"status": "success"}},
        {"key": "000000003", "image": (_jpeg(pixels(48, 36)), "jpg"), "caption": "a photo"},
        {
            "key": "000000004",
            "image": (_png(pixels()), "png"),
            "caption": "upsampled",
            "json": {"original_width": 20, "original_height": 20},
        },
    ]
    _write_tar(folder / "00000.tar", s0)
    keep("00000.tar", "000000000", s0[0]["caption"], shared)
    keep("00000.tar", "000000003", "a photo", s0[3]["image"][0])
    dropped["corrupt_image"] += 1
    dropped["missing_caption"] += 1
    dropped["image_too_small"] += 1

    # Shard 1: a copy of shard 0's first image, too wide, caption too short/long, a tiny image, a good one.
    s1_good = _png(pixels(36, 44))
    s1 = [
        {"key": "000010000", "image": (shared, "png"), "caption": "the same image again"},
        {"key": "000010001", "image": (_png(pixels(32, 80)), "png"), "caption": "a wide banner"},
        {"key": "000010002", "image": (_png(pixels()), "png"), "caption": "ab"},
        {"key": "000010003", "image": (_png(pixels()), "png"), "caption": "x" * 61},
        {"key": "000010004", "image": (_png(pixels(16, 16)), "png"), "caption": "a tiny icon"},
        {"key": "000010005", "image": (s1_good, "png"), "caption": "a green circle"},
        {"key": "000010006", "caption": "a caption without its image"},
    ]
    _write_tar(folder / "00001.tar", s1)
    dropped["duplicate"] += 1
    dropped["aspect_ratio"] += 1
    dropped["caption_too_short"] += 1
    dropped["caption_too_long"] += 1
    dropped["image_too_small"] += 1
    keep("00001.tar", "000010005", "a green circle", s1_good)
    dropped["missing_image"] += 1

    # Shard 2: three good records, then the tar is cut inside the fourth image.
    s2 = [{"key": f"00002000{k}", "image": (_png(pixels()), "png"), "caption": f"picture {k}"} for k in range(4)]
    _write_tar(folder / "00002.tar", s2)
    full = (folder / "00002.tar").read_bytes()
    cut = full.index(s2[3]["image"][0][:64]) + 100  # inside the fourth image's data
    (folder / "00002.tar").write_bytes(full[:cut])
    for k in range(3):
        keep("00002.tar", s2[k]["key"], f"picture {k}", s2[k]["image"][0])

    # Parquet: good, failed download (null image), a repeat within the file, the shared image.
    p_good = _jpeg(pixels(44, 40))
    table = pa.table(
        {
            "key": ["000030000", "000030001", "000030002", "000030003", "000030004"],
            "jpg": [p_good, None, p_good, shared, _png(pixels())],
            "caption": ["a parquet photo", "failed", "the same photo", "shared again", None],
            "status": ["success", "failed_to_download", "success", "success", "success"],
            "original_width": [400, None, 400, 48, 40],
            "original_height": [440, None, 440, 40, 40],
        }
    )
    pq.write_table(table, folder / "00003.parquet")
    keep("00003.parquet", "000030000", "a parquet photo", p_good)
    dropped["missing_image"] += 1
    dropped["duplicate"] += 2
    dropped["missing_caption"] += 1
    return Expected(kept=kept, dropped=dropped, records=len(s0) + len(s1) + 3 + 5, unreadable_shards=["00002.tar"])
