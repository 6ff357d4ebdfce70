"""Imagen's first super-resolution stage: 64 -> 256, the ~600M-parameter Efficient U-Net
with self-attention (text concatenated to its keys/values) at the lowest level (design.md §1, §4).

Attention after every ResNet block of that level and the T5 output read directly by each
attention layer: with these (unstated in the paper) choices the count lands near the paper's
600M, while sr1024's single cross-attention per block lands near its 400M.

Training as the paper (design.md §1): Adam (b1 0.9, b2 0.999, eps 1e-8), batch 2048, peak lr 1e-4,
10k warmup steps, cosine decay over 2.5M steps, frozen T5-XXL embeddings; data defaults to
the built-in 256px shapes dataset with 64px low-res inputs.

For 64 TPU v4 chips (v4-128): parameters, EMA and Adam state fully sharded (mesh data 1 x
fsdp 64), each ResNet block rematerialized, and the batch of 2048 taken as 2 accumulated
micro-batches of 16 per chip. `imagen-jax compile-check --topology v4-128` refuses 32 per chip
(35.6 GiB of temporaries against the 30.75 GiB XLA can use on a v4 chip; README,
benchmarks/results/compile_check_sr256_600m_v4-128_accum1.json); at 2 x 16 it fits:
19.8 of 32 GiB per chip (temporaries 18.6 GiB; compile_check_sr256_600m_v4-128.json).
Compiling it takes about 23.4 GB of RAM (44 min on 2 shared cores).
"""

import data_shapes
import ml_collections
import stage_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.resolution = 256
    config.low_res_resolution = 64
    config.model = ml_collections.ConfigDict(
        dict(
            family="efficient_unet",
            channels=(128, 256, 512, 1024),
            num_res_blocks=(2, 4, 8, 8),
            strides=(2, 2, 2, 2),
            attention=("none", "none", "none", "self"),
            attention_every_block=True,
            num_heads=8,
            head_dim=None,
            embed_dim=1024,
            noise_sinusoid_dim=256,
            text_dim=4096,  # T5-XXL
            text_pool_heads=16,
            text_context_dim=None,  # each attention layer reads the T5 output itself
            norm_groups=32,
            dropout=0.0,
            out_channels=3,
            low_res_resize="bilinear",
            dtype="bfloat16",
            param_dtype="float32",
            remat=True,
            attention_implementation="auto",
        )
    )
    config.data = data_shapes.data_config("sr256")
    stage_defaults.add_training_sections(config, optimizer="adam", steps=2_500_000, batch_size=2048)
    config.text.encoder = "google/t5-v1_1-xxl"
    config.mesh.data, config.mesh.fsdp = 1, -1
    config.train.grad_accum_steps = 2
    return config
