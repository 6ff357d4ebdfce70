"""The text-embedding cache: write_embedding_cache, EmbeddingCacheSource and `imagen-jax embed`."""

import functools
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


def _files(cache_dir):
    return {name: (cache_dir / name).read_bytes() for name in sorted(os.listdir(cache_dir))}


class Broken(list):
    """Records whose reads fail from index `fail_at` on (an interrupted write)."""

    fail_at = None

    def __getitems__(self, indices):
        if self.fail_at is not None and max(indices) >= self.fail_at:
            raise RuntimeError("disk on fire")
        return [self[i] for i in indices]


def test_interrupted_write_resumes_to_the_same_cache(tmp_path, encoder):
    """A write that fails part-way leaves whole files and no metadata.json (not a cache); the
    same call again writes only the missing files and gives the uninterrupted run's bytes."""
    records = Broken({"caption": f"{i} red circles"} for i in range(10))
    settings = dict(batch_size=2, records_per_file=4, progress=False)
    straight = tmp_path / "straight"
    write_embedding_cache(records, encoder, str(straight), **settings)

    out = tmp_path / "cache"
    records.fail_at = 6
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_embedding_cache(records, encoder, str(out), **settings)
    assert sorted(os.listdir(out)) == ["in_progress.json", "text_embeddings-00000-of-00003.array_record"]
    with pytest.raises(FileNotFoundError, match="imagen-jax embed"):
        EmbeddingCacheSource(str(out))
    first = (out / "text_embeddings-00000-of-00003.array_record").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="dtype: 'float16' there, 'bfloat16' here.*overwrite"):
        write_embedding_cache(records, encoder, str(out), **settings, dtype="bfloat16")

    records.fail_at = None
    write_embedding_cache(records, encoder, str(out), **settings)
    assert (out / "text_embeddings-00000-of-00003.array_record").stat().st_mtime_ns == first  # not rewritten
    assert _files(out) == _files(straight) and "in_progress.json" not in _files(out)
    assert len(EmbeddingCacheSource(str(out))) == 10


def test_complete_cache_is_kept_and_other_settings_are_refused(tmp_path, encoder):
    out_dir = tmp_path / "cache"
    records = [{"caption": "a red circle"}] * 5
    write_embedding_cache(records, encoder, str(out_dir), batch_size=4, progress=False)
    before = _files(out_dir)
    assert write_embedding_cache(records, encoder, str(out_dir), batch_size=4, progress=False)["count"] == 5
    assert _files(out_dir) == before  # the same cache again: left as it is
    with pytest.raises(FileExistsError, match="count: 5 there, 2 here.*overwrite"):
        write_embedding_cache(records[:2], encoder, str(out_dir), progress=False)
    write_embedding_cache(records[:2], encoder, str(out_dir), batch_size=4, overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["cache"] and len(EmbeddingCacheSource(str(out_dir))) == 2

    with pytest.raises(FileNotFoundError, match="imagen-jax embed"):
        EmbeddingCacheSource(str(tmp_path / "nothing"))
    with pytest.raises(KeyError, match="pass caption_key"):
        write_embedding_cache([{"text": "x"}], encoder, str(tmp_path / "other"), progress=False)
    with pytest.raises(ValueError, match="float16"):
        write_embedding_cache(records, encoder, str(tmp_path / "other"), dtype="float32")


KILLED_WRITER = """
import sys, time
from imagen_jax.text import load_text_encoder
from imagen_jax.text.embedding_cache import write_embedding_cache

class Slow(list):
    def __getitems__(self, indices):
        time.sleep(0.3)
        return [self[i] for i in indices]

records = Slow({"caption": f"{i} red circles"} for i in range(40))
encoder = load_text_encoder("tiny-random-byt5", max_length=16, dtype="float32")
write_embedding_cache(records, encoder, sys.argv[1], batch_size=8, records_per_file=16, progress=False)
"""


def test_killed_write_resumes_to_the_same_cache(tmp_path, encoder):
    """SIGKILL part-way (a half-written file left behind): the rerun removes it, writes the
    missing files only, and the cache equals an uninterrupted one byte for byte."""
    import signal
    import subprocess
    import sys
    import time

    records = [{"caption": f"{i} red circles"} for i in range(40)]
    settings = dict(batch_size=8, records_per_file=16, progress=False)  # 2 batches per file, 3 files
    straight = tmp_path / "straight"
    write_embedding_cache(records, encoder, str(straight), **settings)

    out = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300

    def half_written():
        return [n for n in os.listdir(out) if ".tmp-" in n] if out.exists() else []

    while not ((out / "text_embeddings-00000-of-00003.array_record").exists() and half_written()):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "no cache file appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    left = sorted(os.listdir(out))
    assert "metadata.json" not in left and "text_embeddings-00002-of-00003.array_record" not in left
    assert half_written()  # the file being written when it was killed
    write_embedding_cache(records, encoder, str(out), **settings)
    assert _files(out) == _files(straight)  # the half-written file is gone


@functools.cache
def _tiny_captions_builder():
    """The builder class, defined once (TFDS registers every builder class by name)."""
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

    return TinyCaptions


def _prepare_tiny_tfds_dataset(data_dir):
    """A two-split TFDS ArrayRecord dataset with image and caption features, built without TensorFlow."""
    builder = _tiny_captions_builder()(data_dir=str(data_dir), file_format="array_record")
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
    assert cli.main(argv) == 0  # complete: left as it is
    assert cli.main([*argv[:-1], "float16"]) == 2 and "--overwrite" in capsys.readouterr().err


def test_two_process_embed_equals_one_process_embed(tmp_path):
    """`imagen-jax embed` on 2 processes (gloo; the encoder FSDP-sharded over both, each
    process writing its own files, one process idling through the other's extra batch)
    writes the cache a single process writes, byte for byte."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    dataset_dir = str(_prepare_tiny_tfds_dataset(tmp_path / "tfds").data_dir)
    args = ["--dataset-dir", dataset_dir, "--splits", "train", "--max-length", "16", "--records-per-file", "2"]

    def embed(cache_root, processes, devices, batch_size):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        env["PYTHONPATH"] = str(repo)
        if processes > 1:
            env.update(IMAGEN_JAX_COORDINATOR=f"127.0.0.1:{port}", IMAGEN_JAX_NUM_PROCESSES=str(processes))
            env.update(JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
        # The cache goes beside the dataset; copy the dataset so each run has its own.
        import shutil

        root = tmp_path / cache_root
        shutil.copytree(dataset_dir, root)
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "imagen_jax.cli",
                    "embed",
                    *args[:1],
                    str(root),
                    *args[2:],
                    "--batch-size",
                    batch_size,
                ],
                env=dict(env, IMAGEN_JAX_PROCESS_ID=str(i)) if processes > 1 else env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(processes)
        ]
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
        return root / "text_embeddings" / "tiny-random-byt5" / "train"

    # The same global batch of 4 (2 rows per device): each device computes what it computed before.
    one = embed("one", processes=1, devices=2, batch_size="4")
    two = embed("two", processes=2, devices=1, batch_size="2")
    assert sorted(os.listdir(one)) == ["metadata.json"] + [
        f"text_embeddings-0000{i}-of-00003.array_record" for i in range(3)
    ]
    assert _files(one) == _files(two)
    assert len(EmbeddingCacheSource(str(two))) == 5
