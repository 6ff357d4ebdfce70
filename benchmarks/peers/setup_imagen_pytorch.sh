#!/usr/bin/env bash
# Idempotent setup of a CPU-only venv for lucidrains' imagen-pytorch 2.1.0 (peer benchmark).
#
#   bash benchmarks/peers/setup_imagen_pytorch.sh        # from the repository root; creates/repairs $PEER/venv
#   $PEER/venv/bin/python benchmarks/peers/bench_imagen_pytorch.py ...
#
# What it does (and why):
#  1. python3.11 -m venv $PEER/venv (only if missing).
#  2. pip install torch==2.13.0  -> resolves to the local CPU wheel torch-2.13.0+cpu;
#     a constraints file pins torch==2.13.0 for every later step, so nothing can pull CUDA torch.
#  3. pip install -c constraints torchvision==0.28.0 imagen-pytorch==2.1.0
#     torchvision 0.28.0 is the release paired with torch 2.13.0 (Requires-Dist: torch==2.13.0,
#     which 2.13.0+cpu satisfies, so no CUDA torch / nvidia-* packages are pulled). But the only
#     wheel is a CUDA build (0.28.0+cu130): its _C.so needs libtorch_cuda.so / libc10_cuda.so,
#     which the CPU torch lacks, so the C++ ops (nms, roi_align, ...) cannot load. torchvision
#     tolerates that everywhere except two UNGUARDED `@torch.library.register_fake("torchvision::nms"
#     / "torchvision::qnms")` decorators in torchvision/_meta_registrations.py, which crash
#     `import torchvision` ("operator torchvision::nms does not exist").
#  4. PATCH (the only modification of an installed package): those two decorators are made
#     conditional on torchvision.extension._has_ops(), as every other registration in that file
#     already is. Marked "PEER-BENCH PATCH"; the original is kept as _meta_registrations.py.orig.
#     After it, `import torchvision` and the pure-Python parts (torchvision.transforms, used by
#     imagen-pytorch only for T.ToPILImage in sample(return_pil_images=True) and in data.py) work;
#     torchvision C++ ops stay unavailable (imagen-pytorch never uses them).
#  5. Smoke test: import torchvision.transforms and `from imagen_pytorch import Unet, Imagen`.
#     NOTE: imagen_pytorch evaluates get_encoded_dim('google/t5-v1_1-base') at import time
#     (default argument of Unet/Unet3D), i.e. downloads the T5 config from huggingface.co.
#     No HF access here, so callers must set HF_HUB_OFFLINE=1 and stub T5Config.from_pretrained
#     (returns T5Config(d_model=768), the real t5-v1_1-base width; only d_model is read, and the
#     benchmark passes text_embed_dim explicitly anyway). bench_imagen_pytorch.py does this.
set -euo pipefail

PEER=${PEER:-$HOME/.cache/imagen-peer}
VENV=${VENV:-$PEER/venv}
PYTHON=${PYTHON:-python3.11}
TORCH_VER=2.13.0
TV_VER=0.28.0
IMAGEN_VER=2.1.0

mkdir -p "$PEER"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

CONSTRAINTS="$PEER/constraints.txt"
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VER" "$TV_VER" > "$CONSTRAINTS"

# pip's "Location ... is ignored" warnings about the local extra-index are noise; filter them.
quiet() {
  local rc
  set +o pipefail
  "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
  rc=${PIPESTATUS[0]}
  set -o pipefail
  return "$rc"
}

echo "[setup] torch==$TORCH_VER (CPU wheel)"
quiet "${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==$TORCH_VER"
"$VENV/bin/python" - <<'EOF'
import torch, sys
assert torch.version.cuda is None, f"expected CPU torch, got {torch.__version__} cuda={torch.version.cuda}"
print("[setup] torch", torch.__version__, "(cpu)")
EOF

echo "[setup] torchvision==$TV_VER + imagen-pytorch==$IMAGEN_VER (+deps), torch pinned"
quiet "${PIP[@]}" install -q -c "$CONSTRAINTS" "torchvision==$TV_VER" "imagen-pytorch==$IMAGEN_VER"

if "${PIP[@]}" list 2>/dev/null | grep -qi '^nvidia-'; then
  echo "[setup] ERROR: nvidia-* CUDA packages got installed" >&2; exit 1
fi

echo "[setup] patching torchvision/_meta_registrations.py (guard nms/qnms fake registration)"
"$VENV/bin/python" - <<'EOF'
import pathlib, shutil, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
f = site / "torchvision" / "_meta_registrations.py"
src = f.read_text()
MARK = "PEER-BENCH PATCH"
if MARK in src:
    print("[setup]   already patched")
else:
    shutil.copy(f, f.with_suffix(".py.orig"))
    old = '@torch.library.register_fake('
    new = ('@(torch.library.register_fake if torchvision.extension._has_ops() '
           'else (lambda *a, **k: (lambda fn: fn)))(  # ' + MARK +
           ': skip when torchvision _C ops are absent (CUDA torchvision wheel on CPU torch)\n    ')
    n = src.count(old)
    assert n == 2, f"expected 2 unguarded register_fake decorators, found {n}"
    f.write_text(src.replace(old, new))
    print(f"[setup]   patched {n} decorators in {f}")
EOF

echo "[setup] smoke test"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" - <<'EOF'
import torch, torchvision, torchvision.transforms as T
import transformers
_orig = transformers.T5Config.from_pretrained.__func__
def _offline(cls, name, *a, **k):   # see header: no HF hub access; only d_model is used
    if name == "google/t5-v1_1-base":
        return cls(d_model=768)
    return _orig(cls, name, *a, **k)
transformers.T5Config.from_pretrained = classmethod(_offline)
from imagen_pytorch import Unet, Imagen
import imagen_pytorch.version as v
print("[setup] OK: torch", torch.__version__, "| torchvision", torchvision.__version__,
      "(C ops:", torchvision.extension._has_ops(), ") | imagen-pytorch", v.__version__)
EOF
"${PIP[@]}" freeze 2>/dev/null > "$PEER/pip-freeze.txt"
echo "[setup] done; package list in $PEER/pip-freeze.txt"
