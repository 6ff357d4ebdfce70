"""`imagen-jax data import`: folders and tables, odd images, and failures that never crash."""

import io
import json
import logging

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from imagen_jax import cli
from imagen_jax.data.importer import import_dataset
from imagen_jax.data.pipeline import make_dataset
from imagen_jax.data.sources import open_source
from imagen_jax.data.transforms import PrepareExample


def _write_odd_images(folder):
    """A corrupt JPEG, a grayscale PNG, an RGBA PNG (top half opaque red, bottom half
    transparent) in a subfolder, a non-square JPEG, and one image without a caption."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    nonsquare = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(nonsquare).save(folder / "a_nonsquare.jpg", quality=95)
    gray = np.tile(np.arange(32, dtype=np.uint8)[None, :] * 8, (32, 1))
    Image.fromarray(gray, "L").save(folder / "b_gray.png")
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:10, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(folder / "sub" / "c_rgba.png")
    (folder / "d_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 20)
    Image.fromarray(nonsquare[:8, :8]).save(folder / "e_no_caption.png")
    for stem in ("a_nonsquare", "b_gray", "sub/c_rgba", "d_corrupt"):
        (folder / f"{stem}.txt").write_text(f"  caption of {stem}\n")
    return gray


def test_import_folder_with_corrupt_grayscale_rgba_and_nonsquare(tmp_path, caplog):
    gray = _write_odd_images(tmp_path / "images")
    with caplog.at_level(logging.WARNING):
        builder, report = import_dataset(
            tmp_path / "images", name="odd_images", data_dir=tmp_path / "tfds", num_workers=1
        )
    assert report.written == {"train": 3}
    assert [p.split("/")[-1] for p in report.unreadable] == ["d_corrupt.jpg"]
    assert [p.split("/")[-1] for p in report.missing_caption] == ["e_no_caption.png"]
    assert "d_corrupt.jpg" in caplog.text and "e_no_caption.png" in caplog.text
    assert builder.info.file_format.value == "array_record"

    records = open_source("odd_images", data_dir=tmp_path / "tfds")  # by name, from the files
    assert len(records) == 3
    by_file = {records[i]["file"].decode(): records[i] for i in range(3)}
    assert set(by_file) == {"a_nonsquare.jpg", "b_gray.png", "sub/c_rgba.png"}
    assert by_file["b_gray.png"]["caption"] == b"caption of b_gray"
    images = {name: Image.open(io.BytesIO(r["image"])) for name, r in by_file.items()}
    assert images["a_nonsquare.jpg"].format == "JPEG"  # an RGB JPEG keeps its bytes
    assert images["a_nonsquare.jpg"].size == (30, 40)  # non-square kept as is
    gray_rgb = np.asarray(images["b_gray.png"])
    assert gray_rgb.shape == (32, 32, 3)
    np.testing.assert_array_equal(gray_rgb, np.repeat(gray[..., None], 3, axis=-1))
    rgba_rgb = np.asarray(images["sub/c_rgba.png"])
    assert rgba_rgb.shape == (20, 20, 3)
    np.testing.assert_array_equal(rgba_rgb[:10], np.broadcast_to([255, 0, 0], (10, 20, 3)))  # opaque red
    np.testing.assert_array_equal(rgba_rgb[10:], np.full((10, 20, 3), 255))  # transparent -> white

    # The pipeline center-crops the non-square image to a square batch.
    dataset = make_dataset(
        records,
        PrepareExample(image_size=16, text="none"),
        batch_size=3,
        shuffle=False,
        process_index=0,
        process_count=1,
    )
    batch = next(iter(dataset))
    assert batch["image"].shape == (3, 16, 16, 3) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0

    with pytest.raises(FileExistsError, match="--overwrite"):
        import_dataset(tmp_path / "images", name="odd_images", data_dir=tmp_path / "tfds", num_workers=1)


def test_import_tables_and_cli(tmp_path, capsys):
    _write_odd_images(tmp_path / "images")
    rows = [
        {"file_name": "images/a_nonsquare.jpg", "text": "first"},
        {"file_name": "images/d_corrupt.jpg", "text": "broken"},
        {"file_name": "images/missing.png", "text": "gone"},
        {"file_name": "images/sub/c_rgba.png", "text": "third"},
        {"file_name": "images/b_gray.png", "text": "second, with a comma"},
    ]
    (tmp_path / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(tmp_path / "table.csv", "w") as f:
        f.write("file_name,text\n" + "".join(f'{r["file_name"]},"{r["text"]}"\n' for r in rows))

    _, report = import_dataset(
        tmp_path / "table.jsonl",
        name="from_jsonl",
        data_dir=tmp_path / "tfds",
        image_column="file_name",
        caption_column="text",
        num_workers=1,
    )
    assert report.written == {"train": 3} and len(report.unreadable) == 1 and len(report.missing_file) == 1
    records = open_source("from_jsonl", data_dir=tmp_path / "tfds")
    assert [records[i]["caption"].decode() for i in range(3)] == ["first", "third", "second, with a comma"]

    # The CLI, with a held-out test split chosen by seed (two worker processes).
    argv = ["data", "import", str(tmp_path / "table.csv"), "--name", "from_csv", "--data-dir", str(tmp_path / "tfds")]
    argv += ["--image-column", "file_name", "--caption-column", "text", "--test-size", "1", "--seed", "2"]
    assert cli.main(argv + ["--num-workers", "2"]) == 0
    assert "Imported 2 train, 1 test; skipped 1 unreadable images" in capsys.readouterr().out
    captions = set()
    for split in ("train", "test"):
        source = open_source("from_csv", split=split, data_dir=tmp_path / "tfds")
        captions |= {source[i]["caption"].decode() for i in range(len(source))}
    assert captions == {"first", "third", "second, with a comma"}

    # Bad input: one message, exit status 2.
    assert cli.main(["data", "import", str(tmp_path / "nothing_here"), "--name", "x", "--data-dir", str(tmp_path)]) == 2
    assert "Nothing to import" in capsys.readouterr().err
    assert cli.main(["data", "import", str(tmp_path / "table.csv"), "--name", "Bad-Name"]) == 2
    assert "Bad dataset name" in capsys.readouterr().err


class _CatalogLike(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Stands in for a prepared TFDS catalog dataset (e.g. coco_captions): other image key,
    several captions per image under a nested key."""

    name = "catalog_like"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "picture": tfds.features.Image(shape=(None, None, 3)),
            "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"validation": self._generate_examples()}

    def _generate_examples(self):
        for i in range(4):
            picture = Image.fromarray(np.full((10, 14, 3), 60 * i, np.uint8))
            yield i, {"picture": picture, "captions": {"text": [f"first {i}", f"second {i}"]}}


def test_prepared_tfds_dataset_by_name_with_configured_keys(tmp_path):
    _CatalogLike(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    with pytest.raises(KeyError, match="data.image_key"):
        open_source("catalog_like", split="validation", data_dir=tmp_path)
    with pytest.raises(KeyError, match="data.split"):
        open_source("catalog_like", split="train", data_dir=tmp_path, image_key="picture")
    records = open_source("catalog_like", split="validation", data_dir=tmp_path, image_key="picture")
    prepare = PrepareExample(
        image_size=8, image_key="picture", text_key="captions/text", text="none", keep_caption=True
    )
    batch = next(iter(make_dataset(records, prepare, batch_size=4, shuffle=False, process_index=0, process_count=1)))
    indices = [int(c.removeprefix("first ")) for c in batch["caption"]]  # the first of several captions
    assert sorted(indices) == [0, 1, 2, 3]  # (TFDS shuffled the records when writing them)
    np.testing.assert_allclose(batch["image"][:, 0, 0, 0], [60 * i / 127.5 - 1 for i in indices], atol=1e-6)
