"""pytorch-fid, the FID reference (torchvision made importable by conftest: torchvision_cpu.py)."""

from __future__ import annotations

import numpy as np
import pytest


def import_pytorch_fid():
    """(pytorch_fid.inception, pytorch_fid.fid_score), or skip when pytorch-fid is absent."""
    pytest.importorskip("torch")
    inception = pytest.importorskip("pytorch_fid.inception")
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    return inception, fid_score


def pytorch_fid_model(state_dict: dict[str, np.ndarray]):
    """pytorch-fid's InceptionV3([pool block], FID variant, its resize and normalization) in
    eval mode, holding `state_dict` (torchvision layout, as in its weight file) instead of
    the downloaded weights."""
    import torch

    inception, _ = import_pytorch_fid()
    full = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
    full["fc.weight"] = torch.zeros(1008, 2048)
    full["fc.bias"] = torch.zeros(1008)
    original = inception.load_state_dict_from_url
    inception.load_state_dict_from_url = lambda *args, **kwargs: full
    try:
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True)
    finally:
        inception.load_state_dict_from_url = original
    return model.eval()
