"""Configs: one source of truth for derived values, and older workdirs' config.json read as
today's (tests/fixtures/older_configs: written by `imagen-jax demo` at commit 09007dc, from
configs/demo.py:smoke, before the stage switch and the data sizes were derived)."""

import json
from pathlib import Path

import pytest

from imagen_jax.config import config_diff, is_super_resolution, load_config, upgrade_saved_config
from imagen_jax.models import build_model
from imagen_jax.pipeline.stage_sampler import StageConfig

REPO = Path(__file__).resolve().parents[1]
OLDER = Path(__file__).parent / "fixtures" / "older_configs"
# Fields older versions set beside their source, and the sources.
DERIVED = ("stage", "low_res_conditioning", "image_size", "crop_size", "low_res_size", "batch_size_per_host")
SOURCES = ("resolution", "low_res_resolution", "resize_to", "train.batch_size")


def older(stage: str) -> dict:
    return json.loads((OLDER / f"demo_smoke_{stage}.json").read_text())


@pytest.mark.parametrize("stage", ["base", "sr"])
def test_older_config_json_reads_as_todays_config(stage):
    """The older copies of derived values drop out when they agree with their sources, so a
    run of the older version resumes under today's config with no difference in them."""
    saved = older(stage)
    assert "stage" in saved and "crop_size" in saved["data"] and "low_res_conditioning" in saved["model"]
    upgraded = upgrade_saved_config(saved)
    assert not {"stage"} & set(upgraded)
    assert not {"image_size", "crop_size", "low_res_size", "batch_size_per_host"} & set(upgraded["data"])
    assert "low_res_conditioning" not in upgraded["model"]
    assert upgraded["data"]["resize_to"] == 0  # it read its images at the resolution
    assert upgraded["low_res_resolution"] == (16 if stage == "sr" else 0)
    assert is_super_resolution(upgraded) == (stage == "sr")
    today = upgrade_saved_config(load_config(f"{REPO}/configs/demo.py:smoke")[stage])
    assert [line for line in config_diff(upgraded, today) if line.split(":")[0].endswith(DERIVED + SOURCES)] == []
    assert build_model(upgraded).low_res_conditioning == (stage == "sr")
    sampler = StageConfig.from_config(saved)
    assert (sampler.image_size, sampler.low_res_size) == ((32, 16) if stage == "sr" else (16, 0))


def test_older_derived_value_that_disagrees_stays_a_difference():
    """A copy that disagreed with its source was a different run: it is kept and shows."""
    saved = older("sr")
    saved["data"]["crop_size"], saved["data"]["low_res_size"] = 24, 8
    upgraded = upgrade_saved_config(saved)
    today = upgrade_saved_config(older("sr"))
    assert config_diff(upgraded, today) == ["data.crop_size: 24 -> '<absent>'", "data.low_res_size: 8 -> '<absent>'"]
    saved = older("sr")
    saved["data"]["image_size"], saved["data"]["crop_size"] = 64, 32  # 32 px crops of 64 px images
    assert upgrade_saved_config(saved)["data"]["resize_to"] == 64
    assert "crop_size" not in upgrade_saved_config(saved)["data"]


@pytest.mark.parametrize(
    "line, replacement",
    [
        ('config.stage = "sr"', "low_res_resolution"),
        ("config.model.low_res_conditioning = True", "low_res_resolution"),
        ("config.data.crop_size = 24", "resolution"),
        ("config.data.image_size = 64", "data.resize_to"),
        ("config.optimizer.total_steps = 10", "train.steps"),
    ],
)
def test_config_file_setting_a_retired_field_is_refused_by_name(tmp_path, line, replacement):
    path = tmp_path / "old_style.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'configs')!r})\n"
        "import shapes_sr64\n\n"
        "def get_config():\n"
        "    config = shapes_sr64.get_config()\n"
        f"    {line}\n"
        "    return config\n"
    )
    with pytest.raises(ValueError, match=f"no longer a field: use {replacement}"):
        load_config(path)
