"""Grain pipeline: sharding, seeding, checkpointed iterators, text inputs, low-res images."""

import json
import os
import subprocess
import sys
import textwrap

import ml_collections
import ml_dtypes
import numpy as np
import pytest

from imagen_jax.data import image_ops
from imagen_jax.data.pipeline import dataset_from_config, make_dataset
from imagen_jax.data.shapes_builder import prepare_shapes
from imagen_jax.data.shapes_render import render_scene
from imagen_jax.data.shapes_scene import sample_scene
from imagen_jax.data.sources import open_source
from imagen_jax.data.transforms import PrepareExample

NUM_RECORDS = 24


def _records(count=NUM_RECORDS, size=12):
    """In-memory records: a uint8 image whose pixels encode the index, and caption str(index)."""
    rng = np.random.default_rng(0)
    return [
        {"image": rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8), "caption": str(i).encode()}
        for i in range(count)
    ]


def _captions(batches):
    return [int(c) for batch in batches for c in batch["caption"]]


def _take(dataset, count):
    iterator = iter(dataset)
    return [next(iterator) for _ in range(count)]


def _ids_dataset(records=None, **kwargs):
    prepare = PrepareExample(image_size=8, text="none", keep_caption=True)
    defaults = dict(batch_size=4, seed=0, process_index=0, process_count=1)
    return make_dataset(records if records is not None else _records(), prepare, **(defaults | kwargs))


@pytest.fixture(scope="module")
def shapes_source(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare_shapes(32, num_train=16, num_test=4, seed=1, data_dir=data_dir, num_workers=1)
    return open_source("imagen_shapes/32px_seed1_train16_test4", data_dir=data_dir)


def test_host_shards_are_disjoint_and_cover_every_epoch():
    for shuffle in (False, True):
        shards = [
            _captions(_take(_ids_dataset(num_epochs=2, shuffle=shuffle, process_index=i, process_count=3), 4))
            for i in range(3)
        ]  # 2 epochs x 24 records / 3 hosts = 16 per host = 4 batches of 4
        for epoch in range(2):
            per_host = [shard[epoch * 8 : (epoch + 1) * 8] for shard in shards]
            assert sorted(sum(per_host, [])) == list(range(NUM_RECORDS))  # disjoint, and all covered
        with pytest.raises(StopIteration):
            _take(_ids_dataset(num_epochs=2, shuffle=shuffle, process_index=0, process_count=3), 5)


def test_global_batches_do_not_depend_on_the_number_of_hosts():
    """Hosts' batches concatenated in process order = the one-host batch of the same global size,
    random crops included (they are keyed by the global element index)."""
    prepare = PrepareExample(image_size=8, crop_size=6, random_crop=True, text="none", keep_caption=True)
    one = _take(make_dataset(_records(), prepare, batch_size=8, seed=3, process_index=0, process_count=1), 5)
    hosts = [
        _take(make_dataset(_records(), prepare, batch_size=4, seed=3, process_index=i, process_count=2), 5)
        for i in range(2)
    ]
    for step in range(5):
        np.testing.assert_array_equal(np.concatenate([h[step]["image"] for h in hosts]), one[step]["image"])
        assert list(np.concatenate([h[step]["caption"] for h in hosts])) == list(one[step]["caption"])


def test_start_element_resumes_the_global_stream_on_any_number_of_hosts():
    """The resume position is global: one host's batches 3.. equal, on 2 hosts started at
    element 3 x 8, the hosts' batches concatenated (random crops and the epoch boundary at
    24 records included); a position inside a global batch starts there too."""
    prepare = PrepareExample(image_size=8, crop_size=6, random_crop=True, text="none", keep_caption=True)
    one = _take(make_dataset(_records(), prepare, batch_size=8, seed=3, process_index=0, process_count=1), 7)
    hosts = [
        _take(
            make_dataset(
                _records(), prepare, batch_size=4, seed=3, process_index=i, process_count=2, start_element=3 * 8
            ),
            4,
        )
        for i in range(2)
    ]
    for step in range(4):
        np.testing.assert_array_equal(np.concatenate([h[step]["image"] for h in hosts]), one[3 + step]["image"])
        assert list(np.concatenate([h[step]["caption"] for h in hosts])) == list(one[3 + step]["caption"])
    # A batch size change on resume: the stream goes on from the next element.
    halves = _take(
        make_dataset(
            _records(), prepare, batch_size=4, seed=3, process_index=0, process_count=1, start_element=3 * 8 + 4
        ),
        2,
    )
    assert _captions(halves) == _captions(one[3:5])[4:12]
    with pytest.raises(ValueError, match="start_element must be >= 0"):
        _ids_dataset(start_element=-1)


def test_same_seed_same_batches_and_each_epoch_reshuffled():
    first = _take(_ids_dataset(seed=7), 12)  # two epochs
    again = _take(_ids_dataset(seed=7), 12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["caption"], b["caption"])
    order = _captions(first)
    assert sorted(order[:NUM_RECORDS]) == sorted(order[NUM_RECORDS:]) == list(range(NUM_RECORDS))
    assert order[:NUM_RECORDS] != order[NUM_RECORDS:] != list(range(NUM_RECORDS))
    assert _captions(_take(_ids_dataset(seed=8), 6)) != order[:NUM_RECORDS]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_restored_iterator_yields_the_same_next_batches(shapes_source, num_workers):
    def dataset(workers=num_workers):
        prepare = PrepareExample(image_size=32, crop_size=24, random_crop=True, low_res_size=8, text="none")
        return make_dataset(
            shapes_source, prepare, batch_size=3, seed=3, process_index=0, process_count=1, num_workers=workers
        )

    iterator = iter(dataset())
    _take_from = lambda it, n: [next(it) for _ in range(n)]  # noqa: E731
    _take_from(iterator, 4)  # crosses the epoch boundary (16 records / 3)
    state = json.loads(json.dumps(iterator.get_state()))  # the state is plain JSON
    expected = _take_from(iterator, 4)
    restored = iter(dataset())
    restored.set_state(state)
    got = _take_from(restored, 4)
    for iterator_ in (iterator, restored):
        getattr(iterator_, "close", lambda: None)()
    in_process = _take(dataset(workers=0), 8)[4:]  # worker processes do not change the batches
    for a, b, c in zip(expected, got, in_process):
        assert a.keys() == b.keys() == {"image", "low_res"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(a[key], c[key])


@pytest.mark.parametrize("cache_dtype", [np.float16, ml_dtypes.bfloat16])
def test_batch_contract_with_cached_text_embeddings(cache_dtype):
    dim, max_length = 6, 5
    rng = np.random.default_rng(1)
    cache = [
        {"text_embedding": rng.normal(size=(1 + i % max_length, dim)).astype(cache_dtype)} for i in range(NUM_RECORDS)
    ]
    prepare = PrepareExample(
        image_size=8, low_res_size=4, text="embedding", max_text_length=max_length, keep_caption=True
    )
    dataset = make_dataset(_records(), prepare, batch_size=4, text_embeddings=cache, process_index=0, process_count=1)
    for batch in _take(dataset, 2):
        assert batch["image"].shape == (4, 8, 8, 3) and batch["image"].dtype == np.float32
        assert batch["low_res"].shape == (4, 4, 4, 3) and batch["low_res"].dtype == np.float32
        assert batch["text_embedding"].shape == (4, max_length, dim) and batch["text_embedding"].dtype == np.float32
        assert batch["text_mask"].shape == (4, max_length) and batch["text_mask"].dtype == bool
        for row, index in enumerate(int(c) for c in batch["caption"]):
            n = 1 + index % max_length
            np.testing.assert_array_equal(batch["text_mask"][row], np.arange(max_length) < n)
            np.testing.assert_array_equal(
                batch["text_embedding"][row, :n], cache[index]["text_embedding"].astype(np.float32)
            )
            assert not batch["text_embedding"][row, n:].any()

    with pytest.raises(ValueError, match="rebuild the cache"):
        make_dataset(_records(), prepare, batch_size=4, text_embeddings=cache[:-1], process_index=0, process_count=1)
    with pytest.raises(ValueError, match="needs the embedding cache"):
        make_dataset(_records(), prepare, batch_size=4, process_index=0, process_count=1)
    too_long = [{"text_embedding": np.zeros((max_length + 1, dim), np.float16)}] * NUM_RECORDS
    dataset = make_dataset(
        _records(), prepare, batch_size=4, text_embeddings=too_long, process_index=0, process_count=1
    )
    with pytest.raises(ValueError, match="max_text_length"):
        next(iter(dataset))


def test_batch_contract_with_a_tokenizer():
    length = 7

    def tokenize(captions):
        ids = np.zeros((len(captions), length), np.int32)
        for row, caption in enumerate(captions):
            ids[row, : len(caption)] = [ord(ch) for ch in caption]
        return ids, ids != 0

    prepare = PrepareExample(image_size=8, text="tokens", max_text_length=length)
    batch = _take(
        make_dataset(_records(), prepare, batch_size=4, tokenize=tokenize, process_index=0, process_count=1), 1
    )[0]
    assert set(batch) == {"image", "text_tokens", "text_mask"}  # all numeric by default
    assert batch["text_tokens"].dtype == np.int32 and batch["text_tokens"].shape == (4, length)
    decoded = ["".join(chr(t) for t in row if t) for row in batch["text_tokens"]]
    assert all(0 <= int(d) < NUM_RECORDS for d in decoded)
    np.testing.assert_array_equal(batch["text_mask"], batch["text_tokens"] != 0)

    wrong = lambda captions: (np.zeros((len(captions), 3), np.int32), np.zeros((len(captions), 3), bool))  # noqa: E731
    with pytest.raises(ValueError, match="pad/truncate"):
        _take(make_dataset(_records(), prepare, batch_size=4, tokenize=wrong, process_index=0, process_count=1), 1)


def test_low_res_is_the_antialiased_downsample_of_the_image(shapes_source):
    prepare = PrepareExample(image_size=32, low_res_size=8, text="none", keep_caption=True, with_shapes_labels=True)
    batch = _take(
        make_dataset(shapes_source, prepare, batch_size=4, shuffle=False, process_index=0, process_count=1), 1
    )[0]
    for row in range(4):
        pixels = np.rint((batch["image"][row] + 1) * 127.5).astype(np.uint8)
        np.testing.assert_array_equal(
            pixels, render_scene(sample_scene(1, row), 32)
        )  # center crop of a square = itself
        expected = image_ops.to_signed_unit(image_ops.downsample(pixels, 8))
        np.testing.assert_allclose(batch["low_res"][row], expected, atol=1e-6)
        # Close to the same scene rendered directly at the low resolution.
        direct = image_ops.to_signed_unit(render_scene(sample_scene(1, row), 8))
        assert np.abs(batch["low_res"][row] - direct).mean() < 0.08
    assert batch["labels"]["num_objects"].tolist() == [len(sample_scene(1, i).objects) for i in range(4)]

    # Antialiasing: a one-pixel checkerboard averages to gray instead of aliasing to black or white.
    checkerboard = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    for method in ("box", "bilinear", "bicubic", "lanczos"):
        low = image_ops.downsample(checkerboard, 8, method=method).astype(float)
        assert np.abs(low - 127.5).max() < 3, method


def test_random_crops_are_windows_of_the_resized_image():
    record = {"image": np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8), "caption": b"0"}
    prepare = PrepareExample(image_size=20, crop_size=10, random_crop=True, text="none")
    crops = [
        b["image"][0] for b in _take(make_dataset([record], prepare, batch_size=1, process_index=0, process_count=1), 8)
    ]
    full = image_ops.to_signed_unit(record["image"])
    windows = {
        (y, x)
        for crop in crops
        for y in range(11)
        for x in range(21)
        if np.array_equal(full[y : y + 10, x : x + 10], crop)
    }
    assert len(windows) > 3  # distinct positions, each an exact window (no resampling at scale 1)
    center = _take(make_dataset([record], PrepareExample(image_size=20, text="none"), batch_size=1,
                                process_index=0, process_count=1), 1)[0]["image"][0]  # fmt: skip
    np.testing.assert_array_equal(center, full[:, 5:25])


def test_dataset_from_config(shapes_source, tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
    try:
        import data_shapes
    finally:
        sys.path.pop(0)

    # The sizes are the stage's: crop `resolution` of the image resized to data.resize_to
    # (0: the resolution), low-res `low_res_resolution`; the batch train.batch_size / hosts.
    def stage(resolution, low_res_resolution, data, batch_size=4):
        return ml_collections.ConfigDict(
            dict(
                resolution=resolution,
                low_res_resolution=low_res_resolution,
                data=data,
                train=dict(batch_size=batch_size),
            )
        )

    data = data_shapes.data_config("sr128")
    data.num_workers, data.text, data.shapes_labels = 0, "none", True
    sr = stage(32, 8, data)
    batch = next(iter(dataset_from_config(sr, batch_size=2, records=shapes_source, process_index=0, process_count=1)))
    assert batch["image"].shape == (2, 32, 32, 3) and batch["low_res"].shape == (2, 8, 8, 3)
    assert batch["labels"]["shape"].shape == (2, 2)
    data.resize_to = 48  # random 32 px crops of the images at 48 px; the batch from train.batch_size / 2 hosts
    batch = next(iter(dataset_from_config(sr, records=shapes_source, process_index=1, process_count=2)))
    assert batch["image"].shape == (2, 32, 32, 3) and batch["low_res"].shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        dataset_from_config(sr, records=shapes_source, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="needs the embedding cache"):
        data.text = "embedding"
        dataset_from_config(sr, records=shapes_source, process_index=0, process_count=1)

    # By name: a missing shapes dataset is generated; host index and count come from JAX.
    data = data_shapes.data_config("base32")
    data.name, data.data_dir, data.text, data.num_workers = "imagen_shapes/16px_train8_test2", str(tmp_path), "none", 0
    base = stage(16, 0, data)
    batch = next(iter(dataset_from_config(base)))
    assert batch["image"].shape == (4, 16, 16, 3) and "low_res" not in batch
    data.prepare_shapes, data.name = False, "imagen_shapes/16px_train9_test2"
    with pytest.raises(FileNotFoundError, match="imagen-jax data shapes"):
        dataset_from_config(base)


def test_everything_runs_without_tensorflow(tmp_path):
    """Generation, import and the pipeline in a fresh process never import TensorFlow
    (whether or not it is installed)."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from PIL import Image
        from imagen_jax.data.importer import import_dataset
        from imagen_jax.data.pipeline import make_dataset
        from imagen_jax.data.shapes_builder import prepare_shapes
        from imagen_jax.data.sources import open_source
        from imagen_jax.data.transforms import PrepareExample

        prepare_shapes(16, num_train=4, num_test=2, data_dir={str(tmp_path)!r}, num_workers=1)
        Image.fromarray(np.zeros((9, 7), np.uint8)).save({str(tmp_path / "a.png")!r})
        open({str(tmp_path / "a.txt")!r}, "w").write("black")
        import_dataset({str(tmp_path)!r}, name="tiny", data_dir={str(tmp_path / "tfds")!r}, num_workers=1)
        datasets = (("imagen_shapes/16px_train4_test2", {str(tmp_path)!r}), ("tiny", {str(tmp_path / "tfds")!r}))
        for name, data_dir in datasets:
            source = open_source(name, data_dir=data_dir)
            dataset = make_dataset(source, PrepareExample(image_size=8, low_res_size=4, text="none"),
                                   batch_size=1, process_index=0, process_count=1)
            assert next(iter(dataset))["image"].shape == (1, 8, 8, 3)
        assert "tensorflow" not in sys.modules
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(__file__))] + sys.path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
