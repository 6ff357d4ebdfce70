"""FID: our Flax InceptionV3 against pytorch-fid's network (random weights through our
loader), the Frechet distance against pytorch-fid's, the CLIP score formula against a
float64 loop, sharded extraction against one device, and `imagen-jax eval fid` end to end
on a dataset imported here."""

import io
import json

import jax
import numpy as np
import pytest
from fid_reference import import_pytorch_fid, pytorch_fid_model
from PIL import Image

from imagen_jax import cli
from imagen_jax.eval import inception
from imagen_jax.eval.clip_score import clip_score, clip_scores
from imagen_jax.eval.features import ShardedFeatures, all_features
from imagen_jax.eval.frechet import FeatureStatistics, StatisticsAccumulator, feature_statistics, frechet_distance
from imagen_jax.eval.inception_weights import (
    load_inception_params,
    params_from_state_dict,
    save_safetensors,
    state_dict_from_params,
)
from imagen_jax.parallel.mesh import make_mesh


def _random_fid_params(seed: int = 0) -> dict:
    """He-normal convs and batch norms with non-trivial statistics (identity ones would hide
    a swapped mean/var or scale/bias)."""
    rng = np.random.default_rng(seed)
    draw = {
        "mean": lambda s: rng.normal(0, 0.1, s),
        "var": lambda s: rng.uniform(0.5, 1.5, s),
        "scale": lambda s: rng.uniform(0.8, 1.2, s),
        "bias": lambda s: rng.normal(0, 0.1, s),
    }
    params = inception.init_params(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: draw[path[-1].key](x.shape).astype(np.float32) if path[-1].key in draw else np.asarray(x),
        params,
    )


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    """(params, a .pth and a .safetensors file holding them in pytorch-fid's layout)."""
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("inception")
    params = _random_fid_params()
    state = state_dict_from_params(params)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, folder / "pt_inception.pth")
    save_safetensors(params, str(folder / "inception.safetensors"))
    return params, folder / "pt_inception.pth", folder / "inception.safetensors"


def test_inception_matches_pytorch_fid(fid_weights):
    torch = pytest.importorskip("torch")
    params, pth, safetensors = fid_weights
    loaded = load_inception_params(str(pth))
    assert jax.tree_util.tree_all(jax.tree.map(np.array_equal, loaded, load_inception_params(str(safetensors))))
    reference = pytorch_fid_model(state_dict_from_params(params))
    rng = np.random.default_rng(1)
    for shape in ((2, 64, 48, 3), (1, 299, 299, 3)):  # upsampled (non-square) and native size
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = np.asarray(jax.jit(inception.pool_features)(loaded, images))
        with torch.no_grad():
            pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # pytorch-fid's ToTensor
            theirs = reference(pixels)[0][:, :, 0, 0].numpy()
        assert ours.shape == theirs.shape == (shape[0], 2048)
        assert np.abs(theirs).mean() > 0.1  # the features carry signal
        assert np.max(np.abs(ours - theirs)) <= 1e-4 * np.max(np.abs(theirs))


def test_bilinear_resize_is_torchs():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((1, 1, 7, 5), dtype=np.float32)
    theirs = torch.nn.functional.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear", align_corners=False)
    ours = inception.bilinear_matrix(7, 299) @ x[0, 0] @ inception.bilinear_matrix(5, 299).T
    np.testing.assert_allclose(ours, theirs[0, 0].numpy(), atol=1e-6)


def test_inception_weights_are_checked(fid_weights):
    params = fid_weights[0]
    state = state_dict_from_params(params)
    del state["Mixed_6b.branch7x7_2.conv.weight"]
    state["Mixed_9z.conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="missing.*Mixed_6b.branch7x7_2.kernel.*unexpected.*Mixed_9z"):
        params_from_state_dict(state)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
        load_inception_params("/nonexistent/pt_inception.pth")


def test_frechet_distance_matches_pytorch_fid():
    _, fid_score = import_pytorch_fid()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(0.3, 1.2, size=(150, 16)) @ rng.normal(size=(16, 16))
    sa, sb = feature_statistics(a), feature_statistics(b)
    np.testing.assert_allclose(sa.covariance, np.cov(a, rowvar=False), rtol=1e-10, atol=1e-10)
    ours = frechet_distance(sa.mean, sa.covariance, sb.mean, sb.covariance)
    theirs = fid_score.calculate_frechet_distance(sa.mean, sa.covariance, sb.mean, sb.covariance)
    assert ours > 1 and abs(ours - theirs) <= 1e-6 * abs(theirs)
    assert abs(frechet_distance(sa.mean, sa.covariance, sa.mean, sa.covariance)) < 1e-8 * np.trace(sa.covariance)

    # Streaming in batches of any size gives the same statistics; the file round-trips.
    accumulator = StatisticsAccumulator(16)
    for part in np.array_split(a, [3, 50, 51]):
        accumulator.add(part.astype(np.float32))
    streamed = accumulator.statistics({"weights": "x"})
    np.testing.assert_allclose(streamed.covariance, np.cov(a.astype(np.float32), rowvar=False), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="different feature sizes"):
        frechet_distance(sa.mean, sa.covariance, sa.mean[:8], sa.covariance[:8, :8])


def test_statistics_file_round_trip(tmp_path):
    stats = feature_statistics(np.random.default_rng(0).normal(size=(10, 4)), {"dataset": "d", "images": 10})
    back = FeatureStatistics.load(stats.save(str(tmp_path / "s.npz")))
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.covariance, stats.covariance)
    assert back.count == 10 and back.metadata == {"dataset": "d", "images": 10}


def test_clip_score_formula():
    rng = np.random.default_rng(0)
    images, texts = rng.normal(size=(32, 8)).astype(np.float32), rng.normal(size=(32, 8)).astype(np.float32)
    expected = []
    for u, v in zip(images.astype(np.float64), texts.astype(np.float64)):
        cos = sum(x * y for x, y in zip(u, v)) / (sum(x * x for x in u) ** 0.5 * sum(y * y for y in v) ** 0.5)
        expected.append(max(100.0 * cos, 0.0))
    np.testing.assert_allclose(clip_scores(images, texts), expected, rtol=1e-12)
    assert min(expected) == 0.0 < max(expected)  # some pairs are clipped, some not
    assert clip_score(images, texts) == pytest.approx(np.mean(expected), rel=1e-12)
    assert clip_score(images, 3 * images) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="pairs image i with caption i"):
        clip_scores(images, texts[:5])


def test_sharded_extraction_equals_one_device(fid_weights):
    params = fid_weights[0]
    images = list(np.random.default_rng(2).integers(0, 256, (11, 32, 32, 3), dtype=np.uint8))
    one = ShardedFeatures(inception.pool_features, params, batch_size=4, mesh=make_mesh(devices=jax.devices()[:1]))
    eight = ShardedFeatures(inception.pool_features, params, batch_size=4, mesh=make_mesh())
    assert (one.batch_size, eight.batch_size) == (4, 8)  # rounded up to the device count
    a = all_features(one, images, lambda x: x, progress=False)  # 3 batches, the last padded
    b = all_features(eight, images, lambda x: x, progress=False)  # 2 batches, the last padded
    assert a.shape == b.shape == (11, 2048)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(a).max())


@pytest.fixture(scope="module")
def photo_dataset(tmp_path_factory):
    """(data_dir, name): 12 captioned 48x40 images (flat colors with a square) imported as a dataset."""
    from imagen_jax.data.importer import import_dataset

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    folder = root / "photos"
    folder.mkdir()
    rows = []
    for i in range(12):
        image = np.full((40, 48, 3), rng.integers(0, 256, 3), np.uint8)
        x, y = rng.integers(0, 20, 2)
        image[y : y + 16, x : x + 16] = rng.integers(0, 256, 3)
        Image.fromarray(image).save(folder / f"{i}.png")
        rows.append({"file_name": f"photos/{i}.png", "text": f"a photo of a cat {i}"})
    (root / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data_dir = root / "tfds"
    import_dataset(root / "table.jsonl", name="fid_ref", data_dir=data_dir, image_column="file_name",
                   caption_column="text", num_workers=1, test_size=4)  # fmt: skip
    return data_dir, "fid_ref"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from tiny_clip import save_tiny_clip

    directory = tmp_path_factory.mktemp("clip")
    save_tiny_clip(directory, hidden_act="quick_gelu", legacy_eos=False, preprocessor=None, seed=0)
    return directory


def test_eval_fid_cli_against_an_imported_dataset(tmp_path, fid_weights, photo_dataset, capsys):
    from imagen_jax.data.sources import open_source
    from imagen_jax.eval.reference import record_image

    data_dir, _ = photo_dataset
    weights = str(fid_weights[2])
    base = ["eval", "fid", "--reference", "fid_ref", "--data-dir", str(data_dir), "--inception-weights", weights]
    base += ["--eval-batch-size", "8", "--no-progress"]
    # No --images: the reference statistics are computed and saved beside the dataset.
    assert cli.main(base + ["--resolution", "32", "--output", str(tmp_path / "ref.json")]) == 0
    made = json.loads((tmp_path / "ref.json").read_text())
    stats_file = made["reference_statistics"]
    assert "/fid_ref/" in stats_file and "fid_statistics/train_32px_8_" in stats_file
    assert made["reference_images"] == 8 and "fid" not in made

    # Asked again, the saved statistics are read, not recomputed.
    mtime = (tmp_path / stats_file).stat().st_mtime
    assert cli.main(base + ["--resolution", "32", "--output", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["reference_statistics"] == stats_file
    assert (tmp_path / stats_file).stat().st_mtime == mtime

    # The dataset's own images as evaluated (32 px center crops), given by a glob, against the
    # saved statistics file: FID ~0 (one FID costs a 2048 x 2048 sqrtm, ~10 s here).
    records = open_source("fid_ref", data_dir=data_dir)
    own = tmp_path / "own"
    own.mkdir()
    for i in range(len(records)):
        Image.fromarray(record_image(records[i], "image", 32)).save(own / f"{i}.png")
    argv = ["eval", "fid", "--images", str(own / "*.png"), "--reference", stats_file, "--inception-weights", weights]
    assert cli.main(argv + ["--no-progress", "--output", str(tmp_path / "own.json")]) == 0
    result = json.loads((tmp_path / "own.json").read_text())
    assert result["images"] == 8 and result["resolution"] == 32 and result["reference_images"] == 8
    assert abs(result["fid"]) < 1e-3 * np.trace(FeatureStatistics.load(stats_file).covariance)
    assert "FID" in capsys.readouterr().out

    # Bad input: one line, exit status 2.
    assert cli.main(base + ["--images", str(tmp_path / "nothing")]) == 2
    assert "is not a folder, a glob or a file" in capsys.readouterr().err


def test_eval_coco_samples_the_drawn_captions_and_scores_them(tmp_path, fid_weights, photo_dataset, clip_dir, capsys):
    from test_cascade import make_workdir

    from imagen_jax.data.sources import open_source

    data_dir, name = photo_dataset
    base, _ = make_workdir(str(tmp_path / "runs"), "base")  # a tiny random 16 px base stage
    out = tmp_path / "coco"
    argv = ["eval", "coco", "--workdir", base, "--dataset", name, "--data-dir", str(data_dir), "--split", "test"]
    argv += ["--num-samples", "3", "--caption-seed", "5", "--out", str(out), "--batch-size", "8", "--no-progress"]
    argv += ["--inception-weights", str(fid_weights[2]), "--clip", str(clip_dir), "--eval-batch-size", "8"]
    assert cli.main(argv) == 0
    result = json.loads((out / "eval_coco.json").read_text())
    # 3 of the split's 4 captions, drawn with the seed, sampled in order, one image each.
    captions = [r["caption"].decode() for r in open_source(name, split="test", data_dir=data_dir)]
    drawn = [captions[i] for i in sorted(np.random.default_rng(5).choice(4, 3, replace=False))]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["prompt"] for m in manifest] == drawn
    assert result["protocol"] == {"dataset": name, "split": "test", "captions": 3, "caption_seed": 5}
    assert result["sampling"]["stages"][0]["num_steps"] == 3 and result["sampling"]["seed"] == 0
    fid = result["fid"]
    assert fid["images"] == 3 and fid["reference_images"] == 4 and fid["resolution"] == 16 and fid["fid"] > 0
    assert fid["split"] == "test" and "fid_statistics/test_16px_4_" in fid["reference_statistics"]
    assert result["clip_score"]["images"] == 3 and 0 <= result["clip_score"]["clip_score"] <= 100
    out_text = capsys.readouterr().out
    assert "FID" in out_text and "CLIP score" in out_text

    # `eval clip` on the written manifest gives the same CLIP score.
    manifest_argv = ["eval", "clip", "--manifest", str(out / "manifest.jsonl"), "--clip", str(clip_dir)]
    assert cli.main(manifest_argv + ["--no-progress", "--output", str(tmp_path / "clip.json")]) == 0
    again = json.loads((tmp_path / "clip.json").read_text())
    assert again["clip_score"] == pytest.approx(result["clip_score"]["clip_score"], rel=1e-6)


def test_images_and_weights_are_read_from_gcs(gcs, fid_weights):
    """--images globs and folders on gs:// (the GCS API server), the Inception weights there too;
    the features equal those of the same images read locally."""
    from imagen_jax import storage
    from imagen_jax.commands.eval_metrics import image_files
    from imagen_jax.eval.image_io import read_image
    from imagen_jax.eval.scoring import FidScorer

    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    folder = gcs.uri("samples")
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        storage.write_bytes(storage.join(folder, f"{i}.png"), buffer.getvalue())
    storage.write_bytes(storage.join(folder, "notes.txt"), b"not an image")
    weights = storage.write_bytes(gcs.uri("inception.safetensors"), fid_weights[2].read_bytes())
    paths = image_files([storage.join(folder, "*.png")])
    assert paths == [storage.join(folder, f"{i}.png") for i in range(3)] and image_files([folder]) == paths
    scorer = FidScorer(weights, batch_size=8, mesh=make_mesh(devices=jax.devices()[:1]))
    remote = all_features(scorer.extractor, paths, read_image, progress=False)
    local = all_features(scorer.extractor, list(images), lambda x: x, progress=False)
    np.testing.assert_array_equal(remote, local)
