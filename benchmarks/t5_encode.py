"""T5 encoder throughput: prompts per second for a given encoder and batch sizes.

    python benchmarks/t5_encode.py [--encoder tiny-random-byt5 | --shape t5-v1_1-xxl]
        [--batch_sizes 32,128] [--max_length 128] [--dtype float32|bfloat16] [--repeats 5]
        [--out benchmarks/results/t5_encode.json]

--encoder takes anything load_text_encoder accepts (built-in name, HF directory, hub id);
--shape builds a public T5 v1.1 architecture with random weights (no download) to time the
real XXL shape. Two numbers per batch size: `encode` (tokenize + device + copy back, what
the embed command sees) and `device` (the jitted encoder alone on pre-tokenized ids).
Model TFLOP/s counts 2 flops per multiply-add of the matmuls (attention included).
Prints a table and writes JSON; times are medians over --repeats after one warm-up call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from results_io import write_results

from imagen_jax.text import TextEncoder, init_params, load_text_encoder
from imagen_jax.text.config import T5_V1_1_CONFIGS
from imagen_jax.text.tokenizer import byt5_tokenizer

WORDS = "a the red blue green small large circle square triangle left right above below of on two three".split()


def random_prompts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 16))) for _ in range(n)]


def matmul_flops_per_prompt(config, length):
    """2 * multiply-adds of one prompt's forward pass at `length` tokens (embedding lookup excluded)."""
    inner = config.num_heads * config.d_kv
    projections = 4 * config.d_model * inner
    mlp = (3 if config.is_gated else 2) * config.d_model * config.d_ff
    attention = 2 * length * inner  # q k^T and weights @ v, per query token
    return 2 * length * config.num_layers * (projections + mlp + attention)


def median_seconds(fn, repeats):
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_encoder(args, dtype):
    if args.shape:
        config = T5_V1_1_CONFIGS[args.shape]
        params = init_params(config, seed=0, param_dtype=jnp.bfloat16 if dtype == jnp.bfloat16 else jnp.float32)
        # Real T5 checkpoints use SentencePiece; byte tokens stand in (ids < 384 < vocab): same compute.
        return TextEncoder(args.shape, config, params, byt5_tokenizer(), max_length=args.max_length, dtype=dtype)
    return load_text_encoder(args.encoder, max_length=args.max_length, dtype=dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--encoder", default="tiny-random-byt5")
    source.add_argument("--shape", choices=sorted(T5_V1_1_CONFIGS))
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default: per backend)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/t5_encode.json")
    args = parser.parse_args()

    dtype = None if args.dtype is None else jnp.dtype(args.dtype)
    encoder = build_encoder(args, dtype)
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        prompts = random_prompts(batch)
        ids, mask = encoder.tokenize(prompts)
        ids_dev = jax.device_put(ids, encoder.batch_sharding) if batch % encoder.num_shards == 0 else ids
        mask_dev = jax.device_put(mask, encoder.batch_sharding) if batch % encoder.num_shards == 0 else mask
        device_s = median_seconds(lambda: encoder.encode_ids(ids_dev, mask_dev)[0], args.repeats)
        encode_s = median_seconds(lambda: np.asarray(encoder.encode(prompts)[0]), args.repeats)
        flops = matmul_flops_per_prompt(encoder.config, encoder.max_length) * batch
        rows.append({
            "encoder": encoder.name,
            "params": encoder.config.num_params,
            "batch": batch,
            "max_length": encoder.max_length,
            "dtype": jnp.dtype(encoder.dtype).name,
            "encode_s": encode_s,
            "device_s": device_s,
            "prompts_per_s": batch / encode_s,
            "device_prompts_per_s": batch / device_s,
            "device_tflops": flops / device_s / 1e12,
        })  # fmt: skip

    header = (
        f"{'encoder':>18} {'params':>8} {'batch':>5} {'L':>4} {'dtype':>8} "
        f"{'prompts/s':>10} {'device prompts/s':>16} {'TFLOP/s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['encoder']:>18} {r['params'] / 1e6:>7.1f}M {r['batch']:>5} {r['max_length']:>4} {r['dtype']:>8} "
            f"{r['prompts_per_s']:>10.1f} {r['device_prompts_per_s']:>16.1f} {r['device_tflops']:>8.3f}"
        )
    write_results(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
