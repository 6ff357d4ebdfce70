"""Programs that run once (parameter and train-state initialization), compiled to compile fast.

On CPU, XLA's LLVM backend at its default -O3 spends most of an initializer's compile time
optimizing the hundreds of small random-number fusions that will run a single time; at -O1
the same program compiles about 2.5x faster (38 s -> 14 s for the 17M-parameter UNet of
benchmarks/compare_imagen_pytorch.py on 2 cores) and gives bit-identical parameters
(threefry is integer arithmetic). Other backends keep their defaults.
"""

from __future__ import annotations

import jax

CPU_ONE_SHOT_OPTIONS = {"xla_backend_optimization_level": 1}


def run_once(fn, *args, **jit_kwargs):
    """jax.jit(fn, **jit_kwargs)(*args), compiled with the one-shot options on CPU."""
    lowered = jax.jit(fn, **jit_kwargs).lower(*args)
    options = CPU_ONE_SHOT_OPTIONS if jax.default_backend() == "cpu" else None
    return lowered.compile(compiler_options=options)(*args)
