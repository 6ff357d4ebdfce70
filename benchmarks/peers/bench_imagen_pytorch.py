#!/usr/bin/env python
"""Peer benchmark: lucidrains imagen-pytorch 2.1.0 (PyPI) Unet on CPU.

Setup:  bash benchmarks/peers/setup_imagen_pytorch.sh          (from the repository root)
Run:    $PEER/venv/bin/python benchmarks/peers/bench_imagen_pytorch.py [--image-size 64 --dim 128 ...]

Measures (all medians over --steps timed runs after one warm-up run, torch.set_num_threads(--threads)):
  train_step_s  one training step of the single Unet inside
                Imagen(unets=(unet,), image_sizes=(S,), timesteps=1000): imagen(images, text_embeds, text_masks)
                = random t, q_sample, Unet forward (10% CFG text dropout), min-SNR weighted MSE on noise,
                then loss.backward(), Adam step, zero_grad.
  fwd_s         one Unet denoising forward at batch B (no_grad, eval mode)
  fwd_cfg_s     one classifier-free-guidance step: unet.forward_with_cond_scale(cond_scale>1) = two separate
                forwards at batch B (cond + null-text), plus the (cheap) parallel-component removal that
                Imagen.sample uses by default (cfg_remove_parallel_component=True)
  sample_s      full imagen.sample(text_embeds=..., text_masks=..., cond_scale=C) with an
                Imagen(timesteps=--sample-timesteps) sharing the same Unet (median of --sample-repeats
                runs, after a warm-up sample with 2 timesteps)
Text conditioning: random N(0,1) embeddings (B, text_len, text_dim), mask all True (no T5).
The last stdout line is a JSON object with the results.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time


def bool_list(s, n, name):
    vals = [v.strip().lower() for v in s.split(",")]
    out = tuple(v in ("1", "true", "t", "yes", "y") for v in vals)
    if len(out) == 1:
        out = out * n
    if len(out) != n:
        sys.exit(f"--{name} needs 1 or {n} comma-separated values, got {s!r}")
    return out


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=64, help="base channels")
    p.add_argument("--dim-mults", default="1,2,4")
    p.add_argument("--num-resnet-blocks", type=int, default=2)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--text-len", type=int, default=16)
    p.add_argument("--text-dim", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed iterations (median reported)")
    p.add_argument("--threads", type=int, default=2)
    # architecture knobs (explicit so a second implementation can match)
    p.add_argument("--layer-attns", default=None,
                   help="per-level self-attention TransformerBlock, e.g. 0,1,1 (default: off at the first/"
                        "full-res level, on elsewhere, as in imagen-pytorch BaseUnet64)")
    p.add_argument("--layer-cross-attns", default=None,
                   help="per-level cross-attention in the first ResnetBlock of the level (default like --layer-attns)")
    p.add_argument("--attn-heads", type=int, default=8)
    p.add_argument("--attn-dim-head", type=int, default=64)
    p.add_argument("--ff-mult", type=float, default=2.0)
    p.add_argument("--max-text-len", type=int, default=256,
                   help="Unet pads text tokens to this length before the Perceiver resampler (library default 256)")
    p.add_argument("--attn-pool-num-latents", type=int, default=32)
    p.add_argument("--cond-scale", type=float, default=5.0)
    p.add_argument("--sample-timesteps", type=int, default=20)
    p.add_argument("--sample-repeats", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-arch-dump", action="store_true", help="skip the per-block architecture table")
    return p.parse_args()


args = parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
import transformers  # noqa: E402

# --- OFFLINE SHIM (not part of imagen-pytorch) ------------------------------------------------------
# imagen_pytorch evaluates get_encoded_dim('google/t5-v1_1-base') at import time (default argument of
# Unet / Unet3D / pydantic configs), which fetches the T5 config from huggingface.co. There is no HF
# access here, so answer that one request locally with the real d_model of t5-v1_1-base (768). Nothing
# else is read from it; this benchmark passes text_embed_dim explicitly and never runs T5.
_orig_from_pretrained = transformers.T5Config.from_pretrained.__func__


def _offline_t5_config(cls, name, *a, **k):
    if name == "google/t5-v1_1-base":
        return cls(d_model=768)
    return _orig_from_pretrained(cls, name, *a, **k)


transformers.T5Config.from_pretrained = classmethod(_offline_t5_config)
# -----------------------------------------------------------------------------------------------------

import imagen_pytorch  # noqa: E402
from imagen_pytorch import Imagen, Unet  # noqa: E402
from imagen_pytorch.version import __version__ as imagen_version  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

dim_mults = tuple(int(m) for m in args.dim_mults.split(","))
L = len(dim_mults)
default_attn = ",".join(["0"] + ["1"] * (L - 1)) if L > 1 else "1"
layer_attns = bool_list(args.layer_attns or default_attn, L, "layer-attns")
layer_cross_attns = bool_list(args.layer_cross_attns or args.layer_attns or default_attn, L, "layer-cross-attns")
S, B = args.image_size, args.batch
assert S % (2 ** (L - 1)) == 0, "image size must be divisible by 2**(levels-1)"

# Every Unet constructor argument, spelled out (values = library defaults unless noted).
UNET_KWARGS = dict(
    dim=args.dim,
    dim_mults=dim_mults,
    num_resnet_blocks=args.num_resnet_blocks,     # int -> same for every level
    text_embed_dim=args.text_dim,                 # (library default: T5-base 768)
    cond_dim=None,                                # -> dim: width of the conditioning tokens c
    num_time_tokens=2,
    learned_sinu_pos_emb_dim=16,
    channels=3,
    channels_out=None,                            # -> channels
    attn_dim_head=args.attn_dim_head,
    attn_heads=args.attn_heads,
    ff_mult=args.ff_mult,
    lowres_cond=False,                            # base (64px-style) unet, not a super-resolution unet
    layer_attns=layer_attns,                      # (library default: True at every level)
    layer_attns_depth=1,
    layer_mid_attns_depth=1,
    attend_at_middle=True,
    layer_cross_attns=layer_cross_attns,          # (library default: True at every level)
    use_linear_attn=False,
    use_linear_cross_attn=False,
    cond_on_text=True,
    max_text_len=args.max_text_len,
    init_dim=None,                                # -> dim
    init_cross_embed=True,
    init_cross_embed_kernel_sizes=(3, 7, 15),
    cross_embed_downsample=False,
    attn_pool_text=True,
    attn_pool_num_latents=args.attn_pool_num_latents,
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
    # accepted but unused by imagen-pytorch 2.1.0 Unet: num_image_tokens, layer_attns_add_text_cond, dropout
)

IMAGEN_KWARGS = dict(
    image_sizes=(S,),
    text_embed_dim=args.text_dim,
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

ARCH_NOTE = f"""\
=== imagen-pytorch {imagen_version} Unet architecture (memory_efficient=False) ===
widths: dims=[init_dim={args.dim}] + [dim*m for m in {dim_mults}]; level i works at resolution S/2^i with
  width dims[i] (the level's *input* width); its downsample maps dims[i]->dims[i+1]; the last level has no
  spatial downsample but a Parallel(conv3x3 + conv1x1) dims[L-1]->dims[L]; mid runs at dims[L].
init_conv: CrossEmbedLayer(3->dim): concat of conv3x3/conv7x7/conv15x15 (stride 1) with dim/2, dim/4, rest channels.
time: log_snr(t) (cosine schedule) -> LearnedSinusoidalPosEmb(16) [t, sin, cos]=17 -> Linear(17,4*dim) -> SiLU = th;
  t_emb = Linear(4dim,4dim)(th); time_tokens = Linear(4dim, 2*cond_dim)(th) -> 2 tokens (cond_dim = dim).
text: tok = Linear(text_dim, cond_dim)(text_embeds), zero-padded to max_text_len={args.max_text_len}; positions with mask
  False (incl. the padding) and CFG-dropped rows -> learned null_text_embed (1,{args.max_text_len},cond_dim);
  PerceiverResampler(depth 2, heads={args.attn_heads}, dim_head={args.attn_dim_head}, {args.attn_pool_num_latents} learned latents + 4 latents
  from the mean-pooled sequence, learned pos-emb, latents attend to [seq; latents], FF mult 4) over ALL
  {args.max_text_len} positions (no mask) -> {args.attn_pool_num_latents + 4} text tokens.
  TEXT -> TIME: t_emb += MLP(LayerNorm, Linear(cond_dim,4dim), SiLU, Linear(4dim,4dim))(mean of the text tokens);
  CFG-dropped rows use a learned null_text_hidden instead.
  c = LayerNorm(cat[2 time tokens, {args.attn_pool_num_latents + 4} text tokens]) -> {args.attn_pool_num_latents + 6} context tokens of width cond_dim.
ResnetBlock(x, t_emb, c): h = Block1(x) [ChanRMSNorm, SiLU, conv3x3]; if cross-attn: h = CrossAttention(h, c) + h
  (over HW tokens); h = Block2(h) [ChanRMSNorm, *(1+scale)+shift with (scale,shift)=Linear(SiLU(t_emb)), SiLU,
  conv3x3]; if GCA: h = h * GlobalContext(h) (sigmoid channel gate); out = h + res_conv(x) (1x1 iff widths differ).
Down level i: ResnetBlock 'init' (cross-attn iff layer_cross_attns[i], no GCA) -> num_resnet_blocks x ResnetBlock
  (GCA, no cross-attn; each output is a skip) -> TransformerBlock iff layer_attns[i] (output is a skip) -> downsample
  (pixel-unshuffle 2x + conv1x1).   layer_attns={layer_attns}  layer_cross_attns={layer_cross_attns}
Mid: ResnetBlock(cross-attn, no GCA) -> TransformerBlock(self-attn only, no context) -> ResnetBlock(cross-attn, no GCA).
Up level (reverse order): cat(x, skip*2^-0.5) -> ResnetBlock 'init' (cross-attn iff layer_cross_attns, no GCA) ->
  num_resnet_blocks x [cat(x, skip*2^-0.5) -> ResnetBlock(GCA)] -> TransformerBlock iff layer_attns ->
  PixelShuffleUpsample(conv1x1 -> 4*w, SiLU, pixel-shuffle) except at the top level.
  Up-path widths are dims[i+1] (wider than the down path at the same resolution), see table below.
Final: ResnetBlock(dim->dim, GCA) -> conv3x3 -> 3 channels (zero-initialised).
TransformerBlock = [x + Attention(x, context=c); x + FF(x)] x depth 1; FF = LN, Linear(w, ff_mult*w, no bias), GELU,
  LN, Linear(no bias). Attention (self): pre-LN; q: {args.attn_heads} heads x {args.attn_dim_head}; K/V: ONE shared head (multi-query,
  Linear(w, 2*dim_head)); keys/values = [context K/V from LN(c)->Linear(cond_dim, 2*dim_head); learned null k/v; self];
  cosine-sim attention (l2-normalised q,k * learned per-dim scales, logit scale 8); out Linear(no bias)+LayerNorm.
CrossAttention: pre-LN on x (not on c); q, k, v all {args.attn_heads} heads x {args.attn_dim_head} (k,v from c); learned null k/v
  prepended; cosine-sim (scale 8); out Linear(no bias)+LayerNorm. No attention masks are used anywhere
  (text_mask only selects null_text_embed positions). LayerNorm here = custom (no bias, eps 1e-5) except the
  nn.LayerNorm in to_context / norm_cond / Perceiver / text MLP.
Training: Imagen(timesteps=1000) continuous-time cosine log-SNR, t~U(0,1), predict noise, MSE per sample x
  min-SNR weight min(snr,5)/snr, 10% CFG text dropout. Sampling: DDPM ancestral over T steps with dynamic
  thresholding (95th percentile), CFG with parallel-component removal (Imagen.sample default)."""


def count_params(m):
    return sum(p.numel() for p in m.parameters())


def arch_table(unet, x, t, te, tm):
    """Run one forward with hooks; list every ResnetBlock / TransformerBlock / sampler with shapes."""
    from imagen_pytorch.imagen_pytorch import (ResnetBlock, TransformerBlock, PixelShuffleUpsample,
                                               GlobalContext, CrossEmbedLayer, PerceiverResampler)
    rows, hooks = [], []

    def hook(name):
        def fn(mod, inp, out):
            xi = inp[0]
            desc = type(mod).__name__
            if isinstance(mod, ResnetBlock):
                desc += f" cross_attn={'Y' if mod.cross_attn is not None else 'n'}" \
                        f" gca={'Y' if isinstance(mod.gca, GlobalContext) else 'n'}"
            if isinstance(mod, TransformerBlock):
                has_ctx = mod.layers[0][0].to_context is not None
                desc += f" self_attn+ctx={'Y' if has_ctx else 'n (no context)'}"
            rows.append(f"  {name:<28} {desc:<44} in {tuple(xi.shape[1:])} -> out {tuple(out.shape[1:])}")
        return fn

    for name, mod in unet.named_modules():
        if isinstance(mod, (ResnetBlock, TransformerBlock, PixelShuffleUpsample, CrossEmbedLayer, PerceiverResampler)) \
                or (name.startswith("downs.") and name.count(".") == 2 and name.endswith(".4")):
            hooks.append(mod.register_forward_hook(hook(name)))
    with torch.no_grad():
        unet(x[:1], t[:1], text_embeds=te[:1], text_mask=tm[:1])
    for h in hooks:
        h.remove()
    return "\n".join(rows)


def timeit(fn, n):
    fn()  # warm-up
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def main():
    unet = Unet(**UNET_KWARGS)
    imagen = Imagen(unets=(unet,), **IMAGEN_KWARGS)
    assert imagen.unets[0] is unet, "Imagen re-created the unet (cast_model_parameters); kwargs mismatch"
    n_params = count_params(unet)

    print(f"imagen-pytorch {imagen_version} | torch {torch.__version__} | threads {torch.get_num_threads()} "
          f"| {platform.processor() or platform.machine()}")
    print("Unet kwargs:", json.dumps({k: v for k, v in UNET_KWARGS.items()}, default=str))
    print("Imagen kwargs:", json.dumps(IMAGEN_KWARGS, default=str))
    print(f"batch={B} image_size={S} text_len={args.text_len} text_dim={args.text_dim} "
          f"cond_scale={args.cond_scale} sample_timesteps={args.sample_timesteps} steps={args.steps}")
    print(f"Unet parameters: {n_params:,} (of which null_text_embed {unet.null_text_embed.numel():,}, "
          f"Perceiver attn_pool {count_params(unet.attn_pool):,})")
    print(ARCH_NOTE)

    g = torch.Generator().manual_seed(args.seed)
    images = torch.rand(B, 3, S, S, generator=g)                     # in [0,1]; Imagen normalises to [-1,1]
    text_embeds = torch.randn(B, args.text_len, args.text_dim, generator=g)
    text_masks = torch.ones(B, args.text_len, dtype=torch.bool)
    x = torch.randn(B, 3, S, S, generator=g)
    times = torch.rand(B, generator=g)
    t_cond = imagen.noise_schedulers[0].get_condition(times)         # log-SNR, what the Unet receives

    if not args.no_arch_dump:
        print("per-block shapes (C,H,W) for one forward:")
        print(arch_table(unet, x, t_cond, text_embeds, text_masks))

    # ---- training step -----------------------------------------------------------------------------
    opt = torch.optim.Adam(unet.parameters(), lr=args.lr, betas=(0.9, 0.99), eps=1e-8)  # ImagenTrainer defaults
    unet.train()
    losses = []

    def train_step():
        loss = imagen(images, text_embeds=text_embeds, text_masks=text_masks, unet_number=1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())

    train_med, train_all = timeit(train_step, args.steps)
    assert all(map(lambda v: v == v and abs(v) < 1e6, losses)), losses
    print(f"train step: median {train_med:.4f}s  all {[round(v, 4) for v in train_all]}  losses {[round(v, 4) for v in losses]}")

    # ---- denoising forward / CFG step --------------------------------------------------------------
    unet.eval()
    with torch.no_grad():
        fwd_med, fwd_all = timeit(lambda: unet(x, t_cond, text_embeds=text_embeds, text_mask=text_masks), args.steps)
        cfg_med, cfg_all = timeit(lambda: unet.forward_with_cond_scale(
            x, t_cond, text_embeds=text_embeds, text_mask=text_masks, cond_scale=args.cond_scale,
            remove_parallel_component=True), args.steps)
    print(f"forward: median {fwd_med:.4f}s  all {[round(v, 4) for v in fwd_all]}")
    print(f"CFG step (2 forwards): median {cfg_med:.4f}s  all {[round(v, 4) for v in cfg_all]}")

    # ---- full sampling ----------------------------------------------------------------------------
    sampler = Imagen(unets=(unet,), **{**IMAGEN_KWARGS, "timesteps": args.sample_timesteps})
    warm = Imagen(unets=(unet,), **{**IMAGEN_KWARGS, "timesteps": 2})
    assert sampler.unets[0] is unet and warm.unets[0] is unet
    kw = dict(text_embeds=text_embeds, text_masks=text_masks, cond_scale=args.cond_scale, use_tqdm=False)
    warm.sample(**kw)
    s_all = []
    for _ in range(args.sample_repeats):
        t0 = time.perf_counter()
        out = sampler.sample(**kw)
        s_all.append(time.perf_counter() - t0)
    assert out.shape == (B, 3, S, S) and torch.isfinite(out).all()
    sample_med = statistics.median(s_all)
    print(f"sample ({args.sample_timesteps} steps, cond_scale {args.cond_scale}): median {sample_med:.3f}s "
          f"all {[round(v, 3) for v in s_all]}  -> {sample_med / args.sample_timesteps:.4f}s/step")

    result = dict(
        impl=f"imagen-pytorch {imagen_version}", torch=torch.__version__, device="cpu", threads=torch.get_num_threads(),
        dim=args.dim, dim_mults=list(dim_mults), num_resnet_blocks=args.num_resnet_blocks, image_size=S, batch=B,
        text_len=args.text_len, text_dim=args.text_dim, max_text_len=args.max_text_len,
        attn_heads=args.attn_heads, attn_dim_head=args.attn_dim_head,
        layer_attns=list(layer_attns), layer_cross_attns=list(layer_cross_attns),
        params=n_params,
        train_step_s=train_med, fwd_s=fwd_med, fwd_cfg_s=cfg_med,
        sample_s=sample_med, sample_timesteps=args.sample_timesteps, sample_per_step_s=sample_med / args.sample_timesteps,
        cond_scale=args.cond_scale, steps=args.steps,
        train_step_all_s=train_all, fwd_all_s=fwd_all, fwd_cfg_all_s=cfg_all, sample_all_s=s_all,
    )
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
