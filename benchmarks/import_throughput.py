"""Images per second of `imagen-jax data import` on img2dataset shards, on this machine,
with 1 and 2 worker processes, in this process's pool (--runner inprocess) and on Apache
Beam's DirectRunner (if Beam is installed: `pip install -e '.[beam]'`); then the wall time
for 400M images on N Dataflow workers, projected from Beam's 1-process rate (a projection:
it assumes conversion is CPU-bound and scales per vCPU, as the 2-process rows check here;
it leaves out reading the shards from GCS and Dataflow's start-up). Each time is the whole
import, process start-up included, as a user sees it.

    python benchmarks/import_throughput.py [--shards 8] [--per-shard 2000] [--side 256]
        [--out benchmarks/results/import_throughput_cpu.json]

The shards are written first, as img2dataset writes them with its defaults (`--image_size
256 --resize_mode border`, JPEG quality 95, KEY.jpg + KEY.txt + KEY.json): smooth
photographs-like images (upsampled noise plus grain), captions of about 60 characters.
Every record passes the filters, so images/s counts the full work per kept image (decode,
checks, digest, serialization, two ArrayRecord writes).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from results_io import write_results

from imagen_jax.data.web_filters import ImportFilters
from imagen_jax.data.web_import import import_shards

IMAGES = 400_000_000
DATAFLOW_WORKERS = (50, 100, 200)
VCPUS_PER_WORKER = 4  # n1-standard-4, Dataflow's default for batch jobs; one SDK process per vCPU


def photo_like(rng: np.random.Generator, side: int) -> bytes:
    """A side x side JPEG (quality 95) with the statistics of a downscaled photo, roughly."""
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((side, side), Image.BICUBIC), np.float32)
    pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_tars(folder: Path, shards: int, per_shard: int, side: int) -> int:
    """img2dataset-style tars 00000.tar ...; returns the total bytes written."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    total = 0
    for shard in range(shards):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as archive:
            for k in range(per_shard):
                key = f"{shard:05d}{k:04d}"
                meta = {"key": key, "width": side, "height": side, "original_width": 640, "original_height": 480}
                caption = f"a photograph of item {key} on a wooden table, soft window light"
                for suffix, data in (
                    ("jpg", photo_like(rng, side)),
                    ("txt", caption.encode()),
                    ("json", json.dumps(meta).encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        total += (folder / f"{shard:05d}.tar").stat().st_size
    return total


def time_import(shards_glob: str, runner: str, workers: int, scratch: Path) -> dict:
    out = scratch / f"out_{runner}_{workers}"
    start = time.perf_counter()
    _, report = import_shards(
        [shards_glob],
        name="bench",
        data_dir=str(out),
        filters=ImportFilters(min_image_side=64),
        runner=runner,
        num_workers=workers,
    )
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    kept = sum(report.written.values())
    return {"runner": runner, "workers": workers, "images": kept, "seconds": seconds, "images_per_s": kept / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=2000)
    parser.add_argument("--side", type=int, default=256, help="image side (img2dataset --image_size)")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", default="benchmarks/results/import_throughput_cpu.json")
    args = parser.parse_args()
    runners = ["inprocess"]
    try:
        import apache_beam  # noqa: F401

        runners.append("DirectRunner")
    except ImportError:
        print("Apache Beam is not installed: timing --runner inprocess only.")

    with tempfile.TemporaryDirectory(prefix="import_throughput_") as scratch:
        scratch = Path(scratch)
        input_bytes = write_tars(scratch / "shards", args.shards, args.per_shard, args.side)
        rows = []
        for runner in runners:
            for workers in map(int, args.workers.split(",")):
                row = time_import(str(scratch / "shards" / "*.tar"), runner, workers, scratch)
                rows.append(row)
                print(
                    f"{runner:13s} {workers} workers: {row['images']} images in {row['seconds']:.1f} s, "
                    f"{row['images_per_s']:.0f} images/s"
                )

    # Per-process rate for the projection: Beam's, as Dataflow runs the same DoFns.
    single = [r for r in rows if r["workers"] == 1]
    per_process = next((r for r in single if r["runner"] == "DirectRunner"), single[0])["images_per_s"]
    projection = []
    for n in DATAFLOW_WORKERS:
        rate = per_process * n * VCPUS_PER_WORKER
        projection.append({"dataflow_workers": n, "vcpus": n * VCPUS_PER_WORKER, "hours": IMAGES / rate / 3600})
        print(
            f"projection: {IMAGES / 1e6:.0f}M images on {n} x {VCPUS_PER_WORKER}-vCPU Dataflow workers "
            f"≈ {IMAGES / rate / 3600:.1f} h"
        )
    write_results(
        args.out,
        {
            "shards": args.shards,
            "images_per_shard": args.per_shard,
            "side": args.side,
            "input_mb": input_bytes / 1e6,
            "rows": rows,
            "projection": {
                "images": IMAGES,
                "from_images_per_s_per_process": per_process,
                "vcpus_per_worker": VCPUS_PER_WORKER,
                "rows": projection,
            },
        },
    )


if __name__ == "__main__":
    main()
