"""The text-embedding cache: write_embedding_cache, EmbeddingCacheSource and `imagen-jax embed`."""

import json
import os
import pickle

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from imagen_jax import cli
from imagen_jax.text import load_text_encoder
from imagen_jax.text.embedding_cache import (
    EmbeddingCacheSource,
    embedding_cache_dir,
    write_embedding_cache,
)

CAPTIONS = ["a red circle", b"two blue squares", "", "a green triangle left of a circle", "é", "one", "a b c"]


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder("tiny-random-byt5", max_length=16, dtype=jnp.float32)


def _expected(encoder, captions):
    embeddings, mask = encoder.encode([c.decode() if isinstance(c, bytes) else c for c in captions])
    return [np.asarray(e)[np.asarray(m)] for e, m in zip(embeddings, mask)]


@pytest.mark.parametrize("dtype,np_dtype", [("float16", np.float16), ("bfloat16", ml_dtypes.bfloat16)])
def test_cache_round_trip(tmp_path, encoder, dtype, np_dtype):
    records = [{"caption": c, "other": i} for i, c in enumerate(CAPTIONS)]
    out_dir = tmp_path / "cache"
    with pytest.warns(UserWarning, match="truncated"):
        metadata = write_embedding_cache(records, encoder, str(out_dir), batch_size=3, dtype=dtype, records_per_file=3)
        expected = _expected(encoder, CAPTIONS)
    assert metadata["count"] == 7 and len(metadata["files"]) == 3 and metadata["dtype"] == dtype
    assert sorted(os.listdir(tmp_path)) == ["cache"]  # no temporary directory left behind

    source = pickle.loads(pickle.dumps(EmbeddingCacheSource(str(out_dir))))  # grain workers pickle sources
    assert (len(source), source.dim, source.max_length, source.encoder_name) == (7, 256, 16, "tiny-random-byt5")
    for i, want in enumerate(expected):
        got = source[i]["text_embedding"]
        assert got.dtype == np_dtype and got.shape == want.shape == (len(want), 256)
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-2, atol=1e-2)
    assert [len(r["text_embedding"]) for r in source.__getitems__([6, 0])] == [6, 13]
    assert source[-1]["text_embedding"].shape == source[6]["text_embedding"].shape
    with pytest.raises(IndexError):
        source[7]


def test_interrupted_write_leaves_no_cache_and_existing_cache_is_kept(tmp_path, encoder):
    out_dir = tmp_path / "cache"
    records = [{"caption": "a red circle"}] * 5
    write_embedding_cache(records, encoder, str(out_dir), batch_size=4, progress=False)

    class Broken(list):
        def __getitem__(self, i):
            if i == 4:
                raise RuntimeError("disk on fire")
            return super().__getitem__(i)

    with pytest.raises(FileExistsError, match="overwrite"):
        write_embedding_cache(records, encoder, str(out_dir), progress=False)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_embedding_cache(Broken(records), encoder, str(out_dir), batch_size=4, overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["cache"] and len(EmbeddingCacheSource(str(out_dir))) == 5
    write_embedding_cache(records[:2], encoder, str(out_dir), batch_size=4, overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["cache"] and len(EmbeddingCacheSource(str(out_dir))) == 2

    with pytest.raises(FileNotFoundError, match="imagen-jax embed"):
        EmbeddingCacheSource(str(tmp_path / "nothing"))
    with pytest.raises(KeyError, match="pass caption_key"):
        write_embedding_cache([{"text": "x"}], encoder, str(tmp_path / "other"), progress=False)
    with pytest.raises(ValueError, match="float16"):
        write_embedding_cache(records, encoder, str(tmp_path / "other"), dtype="float32")
    assert sorted(os.listdir(tmp_path)) == ["cache"]


def _prepare_tiny_tfds_dataset(data_dir):
    """A two-split TFDS ArrayRecord dataset with image and caption features, built without TensorFlow."""
    import tensorflow_datasets as tfds

    class TinyCaptions(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {"image": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8), "caption": tfds.features.Text()}
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(5), "test": self._generate_examples(2)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((4, 4, 3), 40 * i, np.uint8), "caption": f"{i} red circles"}

    builder = TinyCaptions(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return builder


def test_embed_command_caches_a_tfds_dataset(tmp_path, encoder, capsys):
    builder = _prepare_tiny_tfds_dataset(tmp_path / "tfds")
    dataset_dir = str(builder.data_dir)
    argv = ["embed", "--dataset-dir", dataset_dir, "--max-length", "16", "--batch-size", "4", "--dtype", "bfloat16"]
    assert cli.main(argv) == 0

    records = builder.as_data_source(split="train")
    source = EmbeddingCacheSource(embedding_cache_dir(dataset_dir, "tiny-random-byt5", "train"))
    assert len(source) == 5
    assert len(EmbeddingCacheSource(embedding_cache_dir(dataset_dir, "tiny-random-byt5", "test"))) == 2
    expected = _expected(encoder, [records[i]["caption"] for i in range(5)])
    for i, want in enumerate(expected):
        np.testing.assert_allclose(source[i]["text_embedding"].astype(np.float32), want, rtol=1e-2, atol=1e-2)
    meta = json.loads(open(os.path.join(source.cache_dir, "metadata.json")).read())
    assert meta["encoder_name"] == "tiny-random-byt5" and meta["max_length"] == 16

    capsys.readouterr()
    assert cli.main([*argv, "--splits", "validation"]) == 2
    assert "imagen-jax embed: error: Unknown split" in capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(argv) == 2 and "--overwrite" in capsys.readouterr().err
