"""torchvision importable on the tests' CPU-only torch.

PyPI's torchvision wheel is built against CUDA torch: on CPU torch its C operators do not
load, and `import torchvision` then fails at its two fake-tensor registrations
(torchvision::nms, ::qnms). transformers imports torchvision whenever it is installed (its
image processors, CLIPModel), and pytorch-fid's FID network is torchvision's Inception, so
the reference tests need it. Declaring those two operator schemas first lets the
pure-Python parts import. Nothing happens where torchvision is absent or imports as is.
"""

from __future__ import annotations

import importlib.util
import sys

_DECLARED = None  # the torch.library.Library holding the declarations (kept alive)


def make_torchvision_importable() -> None:
    global _DECLARED
    if _DECLARED is not None or importlib.util.find_spec("torchvision") is None:
        return
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        _DECLARED = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _DECLARED.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
