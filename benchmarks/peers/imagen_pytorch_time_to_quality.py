"""imagen-pytorch 2.1.0's side of benchmarks/time_to_quality.py. Runs in the PEER's virtual
environment (benchmarks/peers/setup_imagen_pytorch.sh), driven by that script:

    python imagen_pytorch_time_to_quality.py train --arch ARCH.json --data DATA.npz \
        --budget-seconds T --fractions 0.25 0.5 0.75 1 --out DIR
    python imagen_pytorch_time_to_quality.py sample --arch ARCH.json --checkpoint DIR/peer_1.00.pt \
        --prompts PROMPTS.npz --seeds 0 1 2 3 --cond-scale 5 --timesteps 1000 --out IMAGES.npz

train: Imagen(unets=Unet(...)) with imagen-pytorch's defaults for everything the ARCH file does
not name (eps prediction, min-SNR-5 loss weight, cosine schedule over continuous times, text
dropout 0.1), trained by its ImagenTrainer with ITS defaults (Adam lr 1e-4, betas (0.9, 0.99),
no warmup, no clipping, EMA as ema_pytorch defaults it) on the driver's images (32 px, [-1, 1]
floats, given to Imagen in [0, 1]) and precomputed text embeddings, batch ARCH["batch"],
reshuffled each epoch (torch.Generator seeded ARCH["seed"]). The clock starts when this process
starts (imports included), and training stops at the first step that ends past the budget; a
checkpoint (trainer.save: unet, EMA, optimizer) is written when each fraction of the budget has
passed. Writes DIR/progress.json: per checkpoint the seconds, step and images seen.

sample: the EMA unet (ImagenTrainer.sample's default) sampled by Imagen.sample: ancestral
steps over `--timesteps` uniform times (imagen-pytorch's only sampler; its default 1000),
dynamic thresholding at its default percentile 0.95, classifier-free guidance at
--cond-scale. Writes uint8 images [seeds, prompts, 32, 32, 3] and the seconds per seed.
"""

import argparse
import json
import os
import time

START = time.perf_counter()


def _import_imagen():
    """imagen_pytorch reads google/t5-v1_1-base's config at import (a default argument); there is
    no hub here, so answer that one request with its real d_model (as the other peer scripts)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import transformers

    original = transformers.T5Config.from_pretrained.__func__

    def offline_t5_config(cls, name, *a, **k):
        return cls(d_model=768) if name == "google/t5-v1_1-base" else original(cls, name, *a, **k)

    transformers.T5Config.from_pretrained = classmethod(offline_t5_config)
    import imagen_pytorch

    return imagen_pytorch


def build_trainer(arch: dict):
    """(ImagenTrainer, torch) for `arch` (the driver's JSON): the Unet arguments it names, the
    rest imagen-pytorch's defaults."""
    import torch

    torch.set_num_threads(int(arch["threads"]))
    torch.manual_seed(int(arch["seed"]))
    imagen_pytorch = _import_imagen()
    levels = len(arch["dim_mults"])
    attention = tuple(level >= levels - arch["attention_levels"] for level in range(levels))
    unet = imagen_pytorch.Unet(
        dim=arch["dim"],
        dim_mults=tuple(arch["dim_mults"]),
        num_resnet_blocks=arch["num_resnet_blocks"],
        layer_attns=attention,
        layer_cross_attns=attention,
        attn_heads=arch["attn_heads"],
        attn_dim_head=arch["attn_dim_head"],
        text_embed_dim=arch["text_dim"],
        max_text_len=arch["text_len"],
    )
    imagen = imagen_pytorch.Imagen(
        unets=(unet,), image_sizes=(arch["image_size"],), text_embed_dim=arch["text_dim"], condition_on_text=True
    )
    trainer = imagen_pytorch.ImagenTrainer(imagen, verbose=False)
    return trainer, torch


def train(args) -> None:
    import numpy as np

    arch = json.loads(open(args.arch).read())
    os.makedirs(args.out, exist_ok=True)
    trainer, torch = build_trainer(arch)
    data = np.load(args.data)
    images = torch.from_numpy((data["images"].astype(np.float32) + 1) / 2).permute(0, 3, 1, 2).contiguous()
    embeds = torch.from_numpy(data["text_embeddings"].astype(np.float32))
    masks = torch.from_numpy(data["text_masks"].astype(bool))
    params = sum(p.numel() for p in trainer.imagen.unets[0].parameters())
    batch, count = int(arch["batch"]), len(images)
    generator = torch.Generator().manual_seed(int(arch["seed"]))
    fractions = sorted(args.fractions)
    progress, step, losses = [], 0, []
    order, cursor = torch.randperm(count, generator=generator), 0
    while fractions:
        if cursor + batch > count:
            order, cursor = torch.randperm(count, generator=generator), 0
        index = order[cursor : cursor + batch]
        cursor += batch
        loss = trainer(images[index], text_embeds=embeds[index], text_masks=masks[index], unet_number=1)
        trainer.update(unet_number=1)
        step += 1
        losses.append(float(loss))
        if step % 200 == 0:
            elapsed = time.perf_counter() - START
            print(f"[peer] step {step} loss {np.mean(losses[-200:]):.4f} {elapsed:.0f} s", flush=True)
        elapsed = time.perf_counter() - START
        while fractions and elapsed >= fractions[0] * args.budget_seconds:
            path = os.path.join(args.out, f"peer_{fractions[0]:.2f}.pt")
            trainer.save(path)
            progress.append(
                {
                    "fraction": fractions[0],
                    "seconds": time.perf_counter() - START,
                    "step": step,
                    "images": step * batch,
                    "checkpoint": path,
                    "loss_last_200": float(np.mean(losses[-200:])),
                }
            )
            print(f"[peer] saved {path} at step {step}", flush=True)
            fractions.pop(0)
    with open(os.path.join(args.out, "progress.json"), "w") as f:
        json.dump({"params": params, "checkpoints": progress}, f, indent=1)


def sample(args) -> None:
    import numpy as np

    arch = json.loads(open(args.arch).read())
    trainer, torch = build_trainer(arch)
    trainer.load(args.checkpoint)
    trainer.imagen.noise_schedulers[0].num_timesteps = args.timesteps  # continuous times: any count
    prompts = np.load(args.prompts)
    embeds = torch.from_numpy(prompts["text_embeddings"].astype(np.float32))
    masks = torch.from_numpy(prompts["text_masks"].astype(bool))
    images, seconds = [], []
    for seed in args.seeds:
        torch.manual_seed(seed)
        start = time.perf_counter()
        with torch.inference_mode():
            out = trainer.sample(
                text_embeds=embeds, text_masks=masks, cond_scale=args.cond_scale, batch_size=len(embeds), use_tqdm=False
            )
        seconds.append(time.perf_counter() - start)
        pixels = (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        images.append(pixels)
        print(f"[peer] seed {seed}: {len(pixels)} images, {args.timesteps} steps, {seconds[-1]:.1f} s", flush=True)
    np.savez(args.out, images=np.stack(images), seconds=np.array(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--arch", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--budget-seconds", type=float, required=True)
    t.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    t.add_argument("--out", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--arch", required=True)
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--prompts", required=True)
    s.add_argument("--seeds", type=int, nargs="+", default=[0])
    s.add_argument("--cond-scale", type=float, default=5.0)
    s.add_argument("--timesteps", type=int, default=1000)
    s.add_argument("--out", required=True)
    args = parser.parse_args()
    (train if args.command == "train" else sample)(args)


if __name__ == "__main__":
    main()
