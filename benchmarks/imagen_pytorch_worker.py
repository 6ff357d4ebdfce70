"""The imagen-pytorch side of benchmarks/compare_imagen_pytorch.py: a long-lived worker
that runs in the PEER's virtual environment (torch + imagen-pytorch 2.1.0, installed by
benchmarks/peers/setup_imagen_pytorch.sh) and speaks one JSON object per line.

    driver -> worker: {"op": "setup", "arch": {...}}   worker -> driver: {"params": ..., "flops": ...}
    driver -> worker: {"op": "train"} | {"op": "guided"}  worker -> driver: {"seconds": ...}
    driver -> worker: {"op": "quit"}

It builds the Unet exactly as benchmarks/peers/bench_imagen_pytorch.py does (every constructor
argument spelled out below) and times the same two things: one training step of
Imagen(unets=(unet,)) (q_sample, forward, min-SNR MSE, backward, Adam step), and one
classifier-free-guidance step, unet.forward_with_cond_scale (cond and null-text forwards,
parallel-component removal). Each reply's `seconds` is the op alone (no pipe time).
Anything printed by the libraries goes to stderr; stdout carries the protocol only.
"""

import json
import math
import os
import sys
import time

PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)  # the driver reads replies here
os.dup2(2, 1)  # library prints (imagen-pytorch warns on stdout) go to stderr
sys.stdout = sys.stderr


def reply(**payload):
    PROTOCOL.write(json.dumps(payload) + "\n")


def setup(arch):
    threads = int(arch["threads"])
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    import transformers

    # imagen_pytorch reads google/t5-v1_1-base's config at import time (a default argument); there is
    # no hub access, so answer that one request with its real d_model (the peer bench does the same).
    original = transformers.T5Config.from_pretrained.__func__

    def offline_t5_config(cls, name, *a, **k):
        return cls(d_model=768) if name == "google/t5-v1_1-base" else original(cls, name, *a, **k)

    transformers.T5Config.from_pretrained = classmethod(offline_t5_config)
    from imagen_pytorch import Imagen, Unet
    from imagen_pytorch.version import __version__ as imagen_version
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    torch.manual_seed(arch["seed"])
    dim_mults = tuple(arch["dim_mults"])
    unet = Unet(
        dim=arch["dim"],
        dim_mults=dim_mults,
        num_resnet_blocks=arch["num_resnet_blocks"],
        text_embed_dim=arch["text_dim"],
        cond_dim=None,
        num_time_tokens=2,
        learned_sinu_pos_emb_dim=16,
        channels=3,
        channels_out=None,
        attn_dim_head=arch["attn_dim_head"],
        attn_heads=arch["attn_heads"],
        ff_mult=arch["ff_mult"],
        lowres_cond=False,
        layer_attns=tuple(arch["layer_attns"]),
        layer_attns_depth=1,
        layer_mid_attns_depth=1,
        attend_at_middle=True,
        layer_cross_attns=tuple(arch["layer_cross_attns"]),
        use_linear_attn=False,
        use_linear_cross_attn=False,
        cond_on_text=True,
        max_text_len=arch["max_text_len"],
        init_dim=None,
        init_cross_embed=True,
        init_cross_embed_kernel_sizes=(3, 7, 15),
        cross_embed_downsample=False,
        attn_pool_text=True,
        attn_pool_num_latents=arch["attn_pool_num_latents"],
        memory_efficient=False,
        init_conv_to_final_conv_residual=False,
        use_global_context_attn=True,
        scale_skip_connection=True,
        final_resnet_block=True,
        final_conv_kernel_size=3,
        self_cond=False,
        resize_mode="nearest",
        combine_upsample_fmaps=False,
        pixel_shuffle_upsample=True,
    )
    size, batch = arch["image_size"], arch["batch"]
    imagen = Imagen(
        unets=(unet,),
        image_sizes=(size,),
        text_embed_dim=arch["text_dim"],
        channels=3,
        timesteps=1000,
        cond_drop_prob=0.1,
        loss_type="l2",
        noise_schedules="cosine",
        pred_objectives="noise",
        condition_on_text=True,
        auto_normalize_img=True,
        dynamic_thresholding=True,
        dynamic_thresholding_percentile=0.95,
        min_snr_loss_weight=True,
        min_snr_gamma=5,
    )
    assert imagen.unets[0] is unet, "Imagen re-created the unet; constructor arguments mismatch"
    generator = torch.Generator().manual_seed(arch["seed"])
    images = torch.rand(batch, 3, size, size, generator=generator)
    text = torch.randn(batch, arch["text_len"], arch["text_dim"], generator=generator)
    mask = torch.ones(batch, arch["text_len"], dtype=torch.bool)
    z = torch.randn(batch, 3, size, size, generator=generator)
    logsnr = imagen.noise_schedulers[0].get_condition(torch.rand(batch, generator=generator))
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8)  # ImagenTrainer's

    def train():
        unet.train()
        loss = imagen(images, text_embeds=text, text_masks=mask, unet_number=1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise FloatingPointError("imagen-pytorch loss is not finite")

    def guided():
        unet.eval()
        with torch.no_grad():
            unet.forward_with_cond_scale(
                z,
                logsnr,
                text_embeds=text,
                text_mask=mask,
                cond_scale=arch["cond_scale"],
                remove_parallel_component=True,
            )

    flops = {}
    for name, fn in (("train", train), ("guided", guided)):
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        flops[name] = int(counter.get_total_flops())
    info = dict(
        impl=f"imagen-pytorch {imagen_version}",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        params=sum(p.numel() for p in unet.parameters()),
        matmul_conv_flops=flops,
    )
    return {"train": train, "guided": guided}, info


def main():
    ops = None
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "setup":
                ops, info = setup(request["arch"])
                reply(**info)
            elif op == "quit":
                reply(bye=True)
                return
            else:
                start = time.perf_counter()
                ops[op]()
                reply(seconds=time.perf_counter() - start)
        except Exception as error:  # reported to the driver, which stops with it
            reply(error=f"{type(error).__name__}: {error}")
            return


if __name__ == "__main__":
    main()
