"""benchmarks/time_to_quality.py: the helpers behind its table (scores, the fewest-steps rule,
the peer's default time), the demo base config it trains, and a missing peer named with its fix."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import time_to_quality as ttq

from imagen_jax.data.shapes_render import render_scene
from imagen_jax.data.shapes_scene import POSITIONS, SIZES, Scene, ShapeObject


def _row(steps, correct, seconds):
    return {"num_steps": steps, "correct": correct, "seconds_per_image": seconds}


def test_fewest_steps_within_two_points_of_the_best():
    sweep = [_row(8, 0.70, 0.01), _row(16, 0.885, 0.02), _row(32, 0.90, 0.04), _row(64, 0.905, 0.08)]
    assert ttq.fewest_steps_within(sweep)["num_steps"] == 16  # 88.5 >= 90.5 - 2
    sweep[1]["correct"] = 0.88  # 88.0 < 88.5: now 32 is the fewest
    assert ttq.fewest_steps_within(sweep)["num_steps"] == 32


def test_peer_default_time_is_measured_or_scaled_from_the_most_steps():
    assert ttq.peer_default_time([_row(50, 0.5, 1.0), _row(250, 0.6, 5.0)]) == {
        "peer": 20.0,
        "peer_measured_at_steps": 250,
    }
    assert ttq.peer_default_time([_row(1000, 0.6, 19.5)])["peer"] == 19.5


def test_score_reads_rendered_scenes_per_seed():
    def scene(color, shape, background):
        obj = ShapeObject(shape, color, "large", "center", POSITIONS["center"], SIZES["large"])
        return render_scene(Scene(background, (obj,), "", 0), 32)

    prompts = ["a red circle on a white background", "a blue square"]
    right = np.stack([scene("red", "circle", "white"), scene("blue", "square", "black")])
    wrong_background = np.stack([scene("red", "circle", "black"), scene("green", "square", "black")])
    result = ttq.score([right, wrong_background], prompts, [0, 1])
    assert [row["correct"] for row in result["per_seed"]] == [1.0, 0.5]
    assert [row["strict"] for row in result["per_seed"]] == [1.0, 0.0]
    assert result["correct"] == 0.75 and result["strict"] == 0.5 and result["background"] == 0.5


def test_base_config_checkpoints_each_quarter():
    config, base = ttq.demo_base_config(400)
    assert (base.train.steps, base.checkpoint.every, base.checkpoint.keep) == (400, 100, 4)
    assert base.model.patch_size == 2 and len(config.eval.prompts) == 30
    _, default = ttq.demo_base_config(None)
    assert default.checkpoint.every * 4 == default.train.steps
    with pytest.raises(SystemExit, match="multiple of 4"):
        ttq.demo_base_config(402)


def test_missing_peer_python_names_the_setup_script(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        ttq.main(["--peer-python", str(tmp_path / "venv" / "bin" / "python"), "--workdir", str(tmp_path)])
    assert "setup_imagen_pytorch.sh" in str(exit_info.value.code)
