"""Images per second the input pipeline delivers to one host, at 64 and 256 px.

For each case it builds the real pipeline (TFDS ArrayRecord shapes dataset -> Grain ->
batches with images, SR low-res images and padded T5-sized text embeddings from a
synthetic cache), discards warm-up batches, then times batches and prints a table;
results go to benchmarks/results/input_pipeline.json.

  python benchmarks/input_pipeline.py [--num-workers 0 4] [--batches 40] [--data-dir D]

Compare the figures with what training consumes per host: e.g. the paper's base model,
global batch 2048 at ~1 step/s on 64 hosts (v4-256), takes 32 images/s per host.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from imagen_jax.data.pipeline import make_dataset
from imagen_jax.data.shapes_builder import prepare_shapes
from imagen_jax.data.sources import open_source
from imagen_jax.data.transforms import PrepareExample

CASES = {
    # name: (dataset resolution, PrepareExample arguments)
    "base64": (64, dict(image_size=64)),
    "sr256": (256, dict(image_size=256, low_res_size=64, random_crop=True)),
    "sr1024-style crops 256->64": (256, dict(image_size=256, crop_size=128, low_res_size=32, random_crop=True)),
}


class SyntheticEmbeddingCache:
    """Stands in for imagen_jax.text.embedding_cache.EmbeddingCacheSource: record i has
    4 + i % 29 tokens of a float16 [n, dim] embedding (a few distinct tables, so it pickles small)."""

    def __init__(self, count: int, dim: int, max_tokens: int = 32):
        self._count = count
        rng = np.random.default_rng(0)
        self._tables = rng.normal(size=(4, max_tokens, dim)).astype(np.float16)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> dict:
        return {"text_embedding": self._tables[index % 4, : 4 + index % 29]}


def measure(dataset, warmup: int, batches: int, batch_size: int) -> float:
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    getattr(iterator, "close", lambda: None)()
    return batches * batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="where to generate the datasets (default: a temp dir)")
    parser.add_argument("--num-records", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, os.cpu_count() or 1])
    parser.add_argument("--read-threads", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--text-dim", type=int, default=4096, help="T5-XXL width")
    parser.add_argument("--max-text-length", type=int, default=128)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "input_pipeline.json"))
    args = parser.parse_args()

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="imagen_jax_bench_")
    rows = []
    for case, (resolution, prepare_args) in CASES.items():
        start = time.perf_counter()
        prepare_shapes(resolution, num_train=args.num_records, num_test=10, data_dir=data_dir)
        name = f"imagen_shapes/{resolution}px_train{args.num_records}_test10"
        generation_s = time.perf_counter() - start
        source = open_source(name, data_dir=data_dir)
        cache = SyntheticEmbeddingCache(len(source), args.text_dim)
        prepare = PrepareExample(text="embedding", max_text_length=args.max_text_length, **prepare_args)
        for workers in args.num_workers:
            dataset = make_dataset(
                source,
                prepare,
                batch_size=args.batch_size,
                text_embeddings=cache,
                process_index=0,
                process_count=1,
                num_workers=workers,
                read_threads=args.read_threads,
            )
            rate = measure(dataset, args.warmup, args.batches, args.batch_size)
            rows.append(
                dict(
                    case=case,
                    dataset_resolution=resolution,
                    output_size=prepare_args.get("crop_size") or prepare_args["image_size"],
                    low_res_size=prepare_args.get("low_res_size", 0),
                    num_workers=workers,
                    read_threads=args.read_threads,
                    batch_size=args.batch_size,
                    images_per_second=round(rate, 1),
                    dataset_generation_s=round(generation_s, 1),
                )
            )
            print(f"{case:28s} workers={workers:2d}  {rate:8.1f} images/s", flush=True)

    header = f"{'case':28s} {'image':>5s} {'low':>4s} {'workers':>7s} {'images/s':>9s}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(
            f"{r['case']:28s} {r['output_size']:5d} {r['low_res_size']:4d} {r['num_workers']:7d} "
            f"{r['images_per_second']:9.1f}"
        )
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    machine = dict(
        cpus=os.cpu_count(), processor=platform.processor() or platform.machine(), python=platform.python_version()
    )
    with open(args.output, "w") as f:
        json.dump(dict(machine=machine, settings=vars(args), results=rows), f, indent=2)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
