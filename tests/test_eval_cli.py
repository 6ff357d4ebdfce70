"""`imagen-jax eval`: folders of PNGs + prompts, JSON manifests, the dataset self-test, SR."""

import json

import numpy as np
from PIL import Image

from imagen_jax.cli import main
from imagen_jax.eval.dataset_check import dataset_images


def _write_pngs(folder, images, names):
    folder.mkdir()
    for image, name in zip(images, names):
        Image.fromarray(image).save(folder / name)


def test_folder_and_prompts_file(tmp_path, capsys):
    images, captions = dataset_images(12, 32)
    # natural order: img2 comes before img10, so image i <-> prompt line i
    _write_pngs(tmp_path / "samples", images, [f"img{i}.png" for i in range(12)])
    (tmp_path / "prompts.txt").write_text("\n".join(captions) + "\n")
    captions[3] = captions[4]  # one prompt the image does not show (still a valid prompt)
    (tmp_path / "wrong.txt").write_text("\n".join(captions))
    output = tmp_path / "eval.json"
    assert main(["eval", "--images", str(tmp_path / "samples"), "--prompts", str(tmp_path / "prompts.txt"),
                 "--output", str(output), "--per-image"]) == 0  # fmt: skip
    result = json.loads(output.read_text())["prompt_accuracy"]
    assert result["correct"] == 1.0 and result["num_images"] == 12 and len(result["images"]) == 12
    assert "correct" in capsys.readouterr().out
    assert main(["eval", "--images", str(tmp_path / "samples"), "--prompts", str(tmp_path / "wrong.txt"),
                 "--output", str(output)]) == 0  # fmt: skip
    assert json.loads(output.read_text())["prompt_accuracy"]["correct"] < 1.0


def test_manifest_and_dataset_check(tmp_path, capsys):
    images, captions = dataset_images(4, 64)
    _write_pngs(tmp_path / "pngs", images, [f"{i}.png" for i in range(4)])
    manifest = [{"image": f"pngs/{i}.png", "prompt": caption} for i, caption in enumerate(captions)]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    output = tmp_path / "out.json"
    assert main(["eval", "--manifest", str(tmp_path / "manifest.json"), "--output", str(output)]) == 0
    assert json.loads(output.read_text())["prompt_accuracy"]["correct"] == 1.0
    assert main(["eval", "--dataset-check", "20", "--resolution", "48", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["dataset_check"]["resolution"] == 48 and result["prompt_accuracy"]["correct"] == 1.0


def test_sr_folders(tmp_path, capsys):
    high, _ = dataset_images(3, 64)
    low, _ = dataset_images(3, 32)
    names = ["a.png", "b.png", "c.png"]
    _write_pngs(tmp_path / "sr", high, names)
    _write_pngs(tmp_path / "high", high, names)
    _write_pngs(tmp_path / "low", low, names)
    output = tmp_path / "sr.json"
    args = ["eval", "--sr-images", str(tmp_path / "sr"), "--high-res", str(tmp_path / "high")]
    assert main([*args, "--low-res", str(tmp_path / "low"), "--output", str(output)]) == 0
    result = json.loads(output.read_text())["sr_fidelity"]
    assert result["sr"]["psnr"] == "inf" and result["sr"]["ssim"] == 1.0  # strict JSON: inf as a string
    assert np.isfinite(result["bicubic"]["psnr"])
    assert "bicubic" in capsys.readouterr().out


def test_user_errors_end_with_one_message(tmp_path, capsys):
    images, captions = dataset_images(3, 32)
    _write_pngs(tmp_path / "samples", images, ["0.png", "1.png", "2.png"])
    (tmp_path / "prompts.txt").write_text("\n".join(captions[:2]))
    assert main(["eval", "--images", str(tmp_path / "samples"), "--prompts", str(tmp_path / "prompts.txt")]) == 2
    assert "3 images" in capsys.readouterr().err
    assert main(["eval", "--dataset-check", "3", "--images", str(tmp_path)]) == 2
    assert "exactly one of" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"files": []}))
    assert main(["eval", "--manifest", str(tmp_path / "bad.json")]) == 2
    assert "Manifest" in capsys.readouterr().err
