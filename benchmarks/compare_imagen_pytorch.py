"""Side by side with lucidrains' imagen-pytorch 2.1.0: one training step and one guided
sampling step of our UNet and of its Unet at matching hyperparameters, timed alternately
in one run (ours one rep, theirs one rep, ...), medians, ratios, parameter counts.

    PEER=/tmp/peer bash benchmarks/peers/setup_imagen_pytorch.sh    # once: the peer's own venv
    python benchmarks/compare_imagen_pytorch.py --peer-python /tmp/peer/venv/bin/python --reps 7
    python benchmarks/compare_imagen_pytorch.py --image-size 64 --dim 128 --reps 3

The peer runs in its own environment, driven through benchmarks/imagen_pytorch_worker.py
(JSON lines over a pipe). What is timed:
  train   ours: the real train step (imagen_jax.train.program.compile_training: sharded state,
          AOT-compiled with donation; CFG text dropout, q_sample, eps MSE with min-SNR 5 as
          the peer, Adam, EMA). Theirs: Imagen.forward + backward + Adam (no EMA).
  guided  ours: one jitted guided_output (cond + null text as ONE batched call), dynamic
          thresholding and the ancestral update with fresh noise. Theirs:
          Unet.forward_with_cond_scale (two forwards, parallel-component removal).
The architectures match in base width, width multipliers, levels, res blocks per level,
attention levels, head width, text length and width; the blocks themselves are each
implementation's own (ours: ADM/Imagen, theirs: see the worker), so the parameter counts
differ a little: both are printed, with both sides' matmul+conv FLOPs per step.
Prints a table and writes benchmarks/results/compare_imagen_pytorch_<S>px_dim<D>_b<B>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
WORKER = BENCHMARKS / "imagen_pytorch_worker.py"
SETUP_SCRIPT = "benchmarks/peers/setup_imagen_pytorch.sh"


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The shared hyperparameters, in imagen-pytorch's terms (its Unet arguments)."""

    image_size: int = 32
    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4)
    num_resnet_blocks: int = 2
    layer_attns: tuple[bool, ...] = (False, True, True)  # per level; also the peer's layer_cross_attns
    attn_heads: int = 8
    attn_dim_head: int = 64
    text_len: int = 16
    text_dim: int = 64
    batch: int = 8
    cond_scale: float = 5.0
    # the peer's own knobs, at the values of benchmarks/peers/bench_imagen_pytorch.py
    ff_mult: float = 2.0
    max_text_len: int = 256
    attn_pool_num_latents: int = 32
    threads: int = 2
    seed: int = 0

    def __post_init__(self):
        levels = len(self.dim_mults)
        if len(self.layer_attns) != levels:
            raise ValueError(f"--layer-attns needs one value per level ({levels}), got {self.layer_attns}")
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"--image-size {self.image_size} must be divisible by 2^(levels - 1) = {2 ** (levels - 1)}"
            )

    def attention_resolutions(self) -> tuple[int, ...]:
        return tuple(self.image_size // 2**level for level, on in enumerate(self.layer_attns) if on)

    def peer_arguments(self) -> dict:
        arch = dataclasses.asdict(self)
        arch["layer_cross_attns"] = arch["layer_attns"]
        return arch


def matched_config(arch: Architecture):
    """Our base-stage config with `arch`'s hyperparameters: config.model is a UNet with
    channels = dim, channel_mult = dim_mults, num_res_blocks = num_resnet_blocks, attention
    (with the text concatenated to its keys/values, design.md §2) at the levels of layer_attns and
    in the middle, 64-channel heads = attn_dim_head, conditioning width 4 * dim (the peer's
    time-embedding width), and resampling by one conv as the peer (resblock_updown=False:
    strided 3x3 conv down, nearest 2x + 3x3 conv up; the peer: pixel-unshuffle + 1x1 conv,
    1x1 conv + pixel-shuffle), not ADM's resampling ResNet blocks. Training as the peer: Adam (b2 0.99, no clipping),
    eps
    prediction with min-SNR(5) weights, 10% text dropout, text of text_len tokens."""
    import ml_collections

    from imagen_jax.config import load_config

    config = load_config(REPO / "configs" / "shapes_base32.py")  # the training sections of a base stage
    config.resolution = arch.image_size
    config.model = ml_collections.ConfigDict(
        dict(
            family="unet",
            channels=arch.dim,
            channel_mult=tuple(arch.dim_mults),
            num_res_blocks=arch.num_resnet_blocks,
            attention_resolutions=arch.attention_resolutions(),
            head_dim=arch.attn_dim_head,
            num_heads=None,
            resblock_updown=False,
            embed_dim=4 * arch.dim,
            noise_sinusoid_dim=arch.dim,
            text_dim=arch.text_dim,
            text_pool_heads=arch.attn_heads,
            text_context_dim=None,
            norm_groups=math.gcd(32, arch.dim),
            dropout=0.0,
            out_channels=3,
            dtype="float32",
            param_dtype="float32",
            remat=False,
            attention_implementation="auto",
        )
    )
    config.data.max_text_length = arch.text_len
    config.diffusion.min_snr_gamma = 5.0
    config.optimizer.update(name="adam", peak_lr=1e-4, warmup_steps=0, b1=0.9, b2=0.99, eps=1e-8, grad_clip_norm=0.0)
    config.train.batch_size = arch.batch
    config.mesh.update(data=1, fsdp=1)
    return config


def matched_param_count(arch: Architecture) -> int:
    """Parameters of our matched UNet, by jax.eval_shape (no memory)."""
    from imagen_jax.models.builder import count_params

    return count_params(matched_config(arch))


def default_peer_python() -> str:
    """$PEER/venv/bin/python; PEER defaults as in the setup script."""
    peer = os.environ.get("PEER", os.path.expanduser("~/.cache/imagen-peer"))
    return os.path.join(peer, "venv", "bin", "python")


def check_peer_python(path: str) -> None:
    """Exit with one message naming the setup script when the peer's python is missing."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.exit(
            f"imagen-pytorch's python {path!r} does not exist. Install the peer once with "
            f"`PEER=/tmp/peer bash {SETUP_SCRIPT}` (run from the repository root; it creates $PEER/venv) "
            f"and pass --peer-python $PEER/venv/bin/python (or set PEER)."
        )


class PeerWorker:
    """imagen_pytorch_worker.py in the peer's python; request() sends one JSON line, returns the reply."""

    def __init__(self, python: str, arch: Architecture, extra_env: dict | None = None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="imagen_pytorch_worker_", suffix=".log", delete=False)
        env = dict(
            os.environ, OMP_NUM_THREADS=str(arch.threads), MKL_NUM_THREADS=str(arch.threads), **(extra_env or {})
        )
        env.pop("PYTHONPATH", None)  # the peer's venv must not see our package
        self.process = subprocess.Popen(
            [python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        self.info = self.request(op="setup", arch=arch.peer_arguments())

    def request(self, **message) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        answer = json.loads(line) if line else {"error": f"worker exited (code {self.process.poll()})"}
        if "error" in answer:
            self.log.flush()
            tail = Path(self.log.name).read_text()[-3000:]
            raise RuntimeError(f"imagen-pytorch worker failed on {message['op']}: {answer['error']}\n{tail}")
        return answer

    def close(self):
        if self.process.poll() is None:
            self.request(op="quit")
            self.process.wait(timeout=60)
        self.log.close()
        os.unlink(self.log.name)


def matmul_conv_flops(closed_jaxpr) -> int:
    """2 x multiply-adds of every dot_general and convolution in a (closed) jaxpr, sub-jaxprs
    included (scan bodies times their length): the count torch's FlopCounterMode makes."""

    def count(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            out_size = math.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
            if name == "dot_general":
                (contracting, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                total += 2 * out_size * math.prod(lhs[d] for d in contracting)
            elif name == "conv_general_dilated":
                rhs = eqn.invars[1].aval.shape
                spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
                total += 2 * out_size * rhs[spec[1]] * math.prod(rhs[d] for d in spec[2:])
            subs = [count(v.jaxpr if hasattr(v, "jaxpr") else v) for v in _sub_jaxprs(eqn.params)]
            if name == "cond":  # one branch runs
                total += max(subs, default=0)
            elif name == "scan":
                total += eqn.params["length"] * sum(subs)
            else:
                total += sum(subs)
        return total

    return count(closed_jaxpr.jaxpr)


def _sub_jaxprs(params):
    from jax.extend import core as jex_core

    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, (jex_core.ClosedJaxpr, jex_core.Jaxpr)):
                yield item


class Ours:
    """Our train step and guided sampling step at `arch`, compiled once, with the synthetic
    batch and sampling inputs. train() / guided() run one step and return its seconds."""

    def __init__(self, arch: Architecture):
        import jax
        import jax.numpy as jnp
        from train_step import synthetic_batch

        from imagen_jax.diffusion import Schedule, ancestral_update, denoise, null_text
        from imagen_jax.parallel import make_mesh, rules_from_config
        from imagen_jax.train.program import compile_training

        self.jax = jax
        config = matched_config(arch)
        start = time.perf_counter()
        program = compile_training(
            config, make_mesh(1, 1, jax.devices()[:1]), rules_from_config(None), arch.batch, jax.random.key(arch.seed)
        )
        self.train_compile_s = time.perf_counter() - start
        self.program, self.state = program, program.state
        self.batch = synthetic_batch(program.batch_specs, program.batch_shardings, arch.seed)
        self.key = jax.random.key(arch.seed + 1)
        self.params = int(sum(x.size for x in jax.tree_util.tree_leaves(program.state.params)))
        if self.params != matched_param_count(arch):
            raise AssertionError(
                f"the train state holds {self.params} parameters, matched_param_count says {matched_param_count(arch)}"
            )
        model, schedule = program.model, Schedule.from_config(config.diffusion.schedule)

        def guided_step(params, z, t, cond, uncond, key):
            """z_t -> z_s, s = t - 1/20: guided eps (one doubled batch), dynamic threshold, ancestral update."""
            logsnr_t = jnp.full(z.shape[:1], schedule(t))
            logsnr_s = jnp.full(z.shape[:1], schedule(t - 1.0 / 20))

            def model_fn(z, logsnr, cond):
                return model.apply({"params": params}, z, logsnr, **cond)

            x_hat, _ = denoise(model_fn, z, logsnr_t, cond, uncond, arch.cond_scale, threshold="dynamic")
            return ancestral_update(z, x_hat, logsnr_t, logsnr_s, jax.random.normal(key, z.shape))

        cond = {"text_embedding": self.batch["text_embedding"], "text_mask": self.batch["text_mask"]}
        uncond = dict(zip(("text_embedding", "text_mask"), null_text(cond["text_embedding"], cond["text_mask"])))
        z = jax.random.normal(jax.random.key(arch.seed + 2), self.batch["image"].shape)
        self.guided_args = (self.state.params, z, jnp.float32(0.5), cond, uncond, jax.random.key(arch.seed + 3))
        start = time.perf_counter()
        self.guided_fn = jax.jit(guided_step).lower(*self.guided_args).compile()
        self.guided_compile_s = time.perf_counter() - start
        train_jaxpr = jax.make_jaxpr(self._step_fn(config, program))(self.state, self.batch, self.key)
        self.matmul_conv_flops = dict(
            train=matmul_conv_flops(train_jaxpr),
            guided=matmul_conv_flops(jax.make_jaxpr(guided_step)(*self.guided_args)),
        )

    @staticmethod
    def _step_fn(config, program):
        from imagen_jax.train.optimizers import make_optimizer
        from imagen_jax.train.step import make_train_step

        optimizer, lr_schedule = make_optimizer(config.optimizer)
        return make_train_step(program.model, optimizer, lr_schedule, config)

    def train(self) -> float:
        start = time.perf_counter()
        self.state, metrics = self.program.step(self.state, self.batch, self.key)  # state donated
        self.jax.block_until_ready(metrics)
        return time.perf_counter() - start

    def guided(self) -> float:
        start = time.perf_counter()
        self.jax.block_until_ready(self.guided_fn(self.state.params, *self.guided_args[1:]))
        return time.perf_counter() - start


def interleaved(ours: Ours, peer: PeerWorker, reps: int) -> dict:
    """One warm-up each, then `reps` rounds of (train, guided), alternating which side goes first."""
    times = {f"{side}_{op}": [] for side in ("ours", "peer") for op in ("train", "guided")}
    run = {
        "ours": lambda op: getattr(ours, op)(),
        "peer": lambda op: peer.request(op=op)["seconds"],
    }
    for op in ("train", "guided"):
        run["ours"](op), run["peer"](op)
    for rep in range(reps):
        order = ("ours", "peer") if rep % 2 == 0 else ("peer", "ours")
        for op in ("train", "guided"):
            for side in order:
                times[f"{side}_{op}"].append(run[side](op))
        print(f"  rep {rep + 1}/{reps}: " + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), flush=True)
    return times


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--peer-python",
        default=default_peer_python(),
        help=f"python of the peer's venv (default $PEER/venv/bin/python); made by {SETUP_SCRIPT}",
    )
    defaults = Architecture()
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--dim-mults", default=",".join(map(str, defaults.dim_mults)))
    parser.add_argument("--num-resnet-blocks", type=int, default=defaults.num_resnet_blocks)
    parser.add_argument(
        "--layer-attns",
        default=",".join(str(int(v)) for v in defaults.layer_attns),
        help="attention per level, 0/1 (peer: self- and cross-attention; ours: self-attention with text)",
    )
    parser.add_argument("--attn-dim-head", type=int, default=defaults.attn_dim_head)
    parser.add_argument("--text-len", type=int, default=defaults.text_len)
    parser.add_argument("--text-dim", type=int, default=defaults.text_dim)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="peer torch threads (XLA: all cores)")
    parser.add_argument(
        "--peer-env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the peer, e.g. OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep "
        "instead of spinning: what torch needs on a loaded machine)",
    )
    parser.add_argument("--reps", type=int, default=5, help="timed rounds after one warm-up (medians reported)")
    parser.add_argument(
        "--out", help="JSON path (default benchmarks/results/compare_imagen_pytorch_<S>px_dim<D>_b<B>.json)"
    )
    return parser.parse_args(argv)


def architecture_from_args(args) -> Architecture:
    return Architecture(
        image_size=args.image_size,
        dim=args.dim,
        dim_mults=tuple(int(m) for m in args.dim_mults.split(",")),
        num_resnet_blocks=args.num_resnet_blocks,
        layer_attns=tuple(v.strip() in ("1", "true", "True") for v in args.layer_attns.split(",")),
        attn_dim_head=args.attn_dim_head,
        text_len=args.text_len,
        text_dim=args.text_dim,
        batch=args.batch,
        threads=args.threads,
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    check_peer_python(args.peer_python)
    arch = architecture_from_args(args)
    sys.path.insert(0, str(BENCHMARKS))
    from results_io import RESULTS_DIR, write_results

    load_before = os.getloadavg()
    print(f"building ours (compile) and starting the peer worker ({args.peer_python}) ...", flush=True)
    ours = Ours(arch)
    peer_env = dict(item.split("=", 1) for item in args.peer_env)
    peer = PeerWorker(args.peer_python, arch, peer_env)
    try:
        times = interleaved(ours, peer, args.reps)
    finally:
        peer.close()
    load_after = os.getloadavg()
    median = {k: statistics.median(v) for k, v in times.items()}
    ratios = {op: median[f"ours_{op}"] / median[f"peer_{op}"] for op in ("train", "guided")}
    flops = {"ours": ours.matmul_conv_flops, "peer": peer.info["matmul_conv_flops"]}

    print(
        f"\n{arch.image_size} px, dim {arch.dim}, mults {arch.dim_mults}, {arch.num_resnet_blocks} res blocks/level, "
        f"attention levels {arch.layer_attns}, text {arch.text_len}x{arch.text_dim}, batch {arch.batch}, "
        f"{args.reps} reps, load {load_before[0]:.1f} -> {load_after[0]:.1f}"
        + (f", peer env {peer_env}" if peer_env else "")
    )
    print(f"{'':<22} {'params':>12} {'train s':>9} {'guided s':>9} {'train GFLOP':>12} {'guided GFLOP':>13}")
    for side, label, params in (
        ("ours", "imagen_jax (JAX)", ours.params),
        ("peer", peer.info["impl"], peer.info["params"]),
    ):
        print(
            f"{label:<22} {params:>12,} {median[side + '_train']:>9.3f} {median[side + '_guided']:>9.3f} "
            f"{flops[side]['train'] / 1e9:>12.1f} {flops[side]['guided'] / 1e9:>13.1f}"
        )
    print(
        f"{'ours / peer':<22} {ours.params / peer.info['params']:>12.3f} "
        f"{ratios['train']:>9.3f} {ratios['guided']:>9.3f}"
    )

    payload = dict(
        architecture=dataclasses.asdict(arch),
        our_config_model=matched_config(arch).model.to_dict(),
        params={"ours": ours.params, "peer": peer.info["params"]},
        median_s=median,
        times_s=times,
        ratio_ours_over_peer=ratios,
        reps=args.reps,
        matmul_conv_flops=flops,
        ours_compile_s={"train": ours.train_compile_s, "guided": ours.guided_compile_s},
        peer={k: v for k, v in peer.info.items() if k not in ("params", "matmul_conv_flops")},
        peer_env=peer_env,
        loadavg_before=list(load_before),
        loadavg_after=list(load_after),
    )
    suffix = "".join(f"_{k.lower()}-{v.lower()}" for k, v in peer_env.items())
    out = (
        args.out or RESULTS_DIR / f"compare_imagen_pytorch_{arch.image_size}px_dim{arch.dim}_b{arch.batch}{suffix}.json"
    )
    write_results(out, payload)


if __name__ == "__main__":
    main()
