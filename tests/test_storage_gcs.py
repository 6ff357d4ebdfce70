"""Every artifact of a run on gs://, against a real GCS JSON API server on 127.0.0.1
(fake-gcs-server; fixtures in gcs_server.py): a training run's workdir, SIGKILL and
resume from the bucket, a dataset imported to the bucket with its embedding cache and a run
that trains from it (through a gcsfuse-style mount) warm-started from a bucket workdir, the
cascade from gs:// workdirs to a gs:// --out, a T5 checkpoint directory on the bucket, and
the start-up errors."""

import io
import json
import os
import signal
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fsspec.config
import jax
import numpy as np
import pytest
from gcs_server import free_port, point_clients_at
from PIL import Image
from test_cascade import make_workdir
from test_train_loop import CONFIG, REPO, env, tiny_overrides, train_cmd

from imagen_jax import storage
from imagen_jax.cli import main
from imagen_jax.config import apply_overrides, load_config
from imagen_jax.storage import StorageError
from imagen_jax.train import loop


def run(cmd, cwd, timeout=600, **extra_env):
    proc = subprocess.run(cmd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def no_local_gs_folder(*roots):
    for root in roots:
        for folder, dirs, _ in os.walk(root):
            assert not any(d.startswith("gs:") for d in dirs), f"a local gs: folder appeared in {folder}"


def saved_params(uri, step):
    """Params and step of a saved state on the bucket, restored onto one device."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    path = storage.path(uri) / "checkpoints" / str(step) / "state"
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), checkpointer.metadata(path).item_metadata
    )
    state = checkpointer.restore(path, target)
    return jax.tree_util.tree_leaves(state["params"]), int(state["step"])


def committed_steps(gcs, prefix):
    names = gcs.objects(f"{prefix}/checkpoints/")
    return sorted({int(n.split("/")[2]) for n in names if n.endswith("/commit_success.txt")})


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return {
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_paths_keep_gs_and_refuse_other_schemes(tmp_path, monkeypatch):
    assert os.fspath(storage.path("gs://bucket/run")) == "gs://bucket/run"
    monkeypatch.chdir(tmp_path)
    assert os.fspath(storage.path("runs/a")) == str(tmp_path / "runs" / "a")
    assert storage.join("gs://bucket/run", "checkpoints") == "gs://bucket/run/checkpoints"
    assert storage.name("gs://bucket/runs/base/") == "base"
    for bad, message in [
        ("s3://bucket/run", "s3: is not supported"),
        ("gcs://bucket/run", "two slashes"),
        ("gs:/bucket/run", "two slashes"),
        ("gs://", "names no bucket"),
        ("http://host/x", "http: is not supported"),
    ]:
        with pytest.raises(StorageError, match=message):
            storage.path(bad)
    with pytest.raises(StorageError, match="IMAGEN_JAX_GCS_MOUNT"):
        monkeypatch.delenv("IMAGEN_JAX_GCS_MOUNT", raising=False)
        storage.local_view("gs://bucket/data")
    assert storage.local_view(tmp_path) == str(tmp_path)


def test_append_file_on_the_bucket_keeps_what_was_there(gcs):
    uri = gcs.uri("append/metrics.jsonl")
    log = storage.AppendFile(uri)
    log.write(b"one\n")
    log.close()
    log = storage.AppendFile(uri, upload_every=3600)
    log.write(b"two\n")
    log.flush()  # the first flush uploads
    assert gcs.read("append/metrics.jsonl") == b"one\ntwo\n"
    log.write(b"three\n")
    log.flush()  # within upload_every of the last upload: not yet
    assert gcs.read("append/metrics.jsonl") == b"one\ntwo\n"
    log.close()
    assert gcs.read("append/metrics.jsonl") == b"one\ntwo\nthree\n"


@pytest.fixture(scope="module")
def straight_run(gcs, data_dir, compile_cache, tmp_path_factory):
    """12 steps on gs://BUCKET/straight with a sample grid every 6 steps."""
    cwd = tmp_path_factory.mktemp("cwd_straight")
    overrides = tiny_overrides(
        data_dir, steps=12, **{"train.sample_every": 6, "train.sample_prompts": "('a red circle',)"}
    )
    run(train_cmd(gcs.uri("straight"), overrides), cwd, **compile_cache)
    return cwd


def test_a_training_run_writes_every_artifact_to_the_bucket(gcs, straight_run):
    names = gcs.objects("straight/")
    assert "straight/config.json" in names and "straight/metrics.jsonl" in names
    assert {"straight/samples/step_0000006.png", "straight/samples/step_0000012.png"} <= set(names)
    events = [n for n in names if n.startswith("straight/tensorboard/events.out.tfevents")]
    assert len(events) == 1 and b"train/loss" in gcs.read(events[0])
    assert committed_steps(gcs, "straight") == [6, 9, 12]  # keep 3, every 3
    lines = [json.loads(x) for x in gcs.read("straight/metrics.jsonl").decode().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 13))
    grid = np.asarray(Image.open(io.BytesIO(gcs.read("straight/samples/step_0000012.png"))))
    assert grid.ndim == 3 and grid.shape[-1] == 3
    assert json.loads(gcs.read("straight/config.json"))["train"]["steps"] == 12
    no_local_gs_folder(straight_run, REPO)


def test_sigkill_then_rerun_resumes_from_the_bucket_to_the_same_params(
    gcs, straight_run, data_dir, compile_cache, tmp_path
):
    uri = gcs.uri("killed")
    # The straight run's 12 steps, slowed by a grid after every step so the kill lands mid-run.
    overrides = tiny_overrides(data_dir, steps=12, **{"train.sample_every": 1})
    proc = subprocess.Popen(
        train_cmd(uri, overrides),
        env=env(**compile_cache),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not committed_steps(gcs, "killed"):
            assert proc.poll() is None, proc.stderr.read()[-4000:]
            threading.Event().wait(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    resumed_from = committed_steps(gcs, "killed")[-1]
    assert 3 <= resumed_from < 12
    run(train_cmd(uri, overrides), tmp_path, **compile_cache)  # the same command again resumes
    straight, step_a = saved_params(gcs.uri("straight"), 12)
    resumed, step_b = saved_params(uri, 12)
    assert step_a == step_b == 12
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    no_local_gs_folder(tmp_path)


def write_image_folder(folder, count=16):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(count):
        color = rng.integers(0, 256, 3)
        Image.fromarray(np.full((20, 24, 3), color, np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"a flat color number {i}")


def test_dataset_on_the_bucket_its_embedding_cache_and_a_run_that_trains_from_it(
    gcs, gcs_mount, data_dir, straight_run, compile_cache, tmp_path, capsys
):
    write_image_folder(tmp_path / "images")
    data_uri = gcs.uri("data")
    assert (
        main(
            [
                "data",
                "import",
                str(tmp_path / "images"),
                "--name",
                "flat_colors",
                "--data-dir",
                data_uri,
                "--test-size",
                "2",
            ]
        )
        == 0
    )
    assert "Imported 14 train, 2 test" in capsys.readouterr().out
    names = gcs.objects("data/flat_colors/1.0.0/")
    assert "data/flat_colors/1.0.0/dataset_info.json" in names
    assert any(".array_record-" in n and "train" in n for n in names)
    overrides = tiny_overrides(
        data_dir,
        steps=3,
        **{
            "data.name": "flat_colors",
            "data.data_dir": data_uri,
            "train.sample_every": 0,
            "checkpoint.every": 3,
            "train.init_from": gcs.uri("straight"),
        },
    )
    proc = run(
        train_cmd(gcs.uri("from_bucket_data"), overrides),
        tmp_path,
        IMAGEN_JAX_GCS_MOUNT=str(gcs_mount),
        **compile_cache,
    )
    assert f"params and EMA params from {gcs.uri('straight')}, step 12" in proc.stderr  # init_from on the bucket
    cache = "data/flat_colors/1.0.0/text_embeddings/tiny-random-byt5/train/"
    metadata = json.loads(gcs.read(cache + "metadata.json"))
    assert metadata["count"] == 14 and all(cache + f in gcs.objects(cache) for f in metadata["files"])
    assert committed_steps(gcs, "from_bucket_data") == [3]
    no_local_gs_folder(tmp_path, REPO)


def test_cascade_from_bucket_workdirs_samples_to_a_bucket_out(gcs, capsys):
    base, _ = make_workdir(gcs.uri("cascade"), "base")
    sr, _ = make_workdir(gcs.uri("cascade"), "sr")
    assert (
        main(
            [
                "sample",
                "--workdir",
                base,
                "--workdir",
                sr,
                "--prompt",
                "a red circle",
                "--prompt",
                "a blue square",
                "--out",
                gcs.uri("samples"),
                "--config.0.sampling.num_steps=2",
                "--config.1.sampling.num_steps=2",
                "--no-progress",
            ]
        )
        == 0
    )
    manifest = [json.loads(line) for line in gcs.read("samples/manifest.jsonl").splitlines()]
    assert [e["prompt"] for e in manifest] == ["a red circle", "a blue square"]
    for entry in manifest:
        assert np.asarray(Image.open(io.BytesIO(gcs.read("samples/" + entry["image"])))).shape == (32, 32, 3)
    assert "samples/grid.png" in gcs.objects("samples/")
    assert any(n.startswith("samples/stages/0_base/") for n in gcs.objects("samples/"))
    assert "wrote 2 images of 32 px to gs://" in capsys.readouterr().out


def test_a_t5_checkpoint_directory_on_the_bucket_loads_as_locally(gcs, tmp_path):
    from imagen_jax.text.encoder import load_text_encoder
    from imagen_jax.text.hf_checkpoint import save_hf_checkpoint

    builtin = load_text_encoder("tiny-random-t5-words")
    local = tmp_path / "t5"
    save_hf_checkpoint(str(local), builtin.params, builtin.config)
    builtin.tokenizer.save_pretrained(str(local))
    storage.upload_tree(str(local), gcs.uri("t5"))
    prompts = ["a red circle above a blue square", "a green triangle"]
    from_bucket = load_text_encoder(gcs.uri("t5"), max_length=16)
    from_disk = load_text_encoder(str(local), max_length=16)
    assert from_bucket.name == from_disk.name == "t5"
    for a, b in zip(from_bucket.encode(prompts), from_disk.encode(prompts)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------------- errors


def tiny_config(data_dir, **extra):
    overrides = [o.removeprefix("--config.") for o in tiny_overrides(data_dir, **extra)]
    return apply_overrides(load_config(CONFIG), overrides)


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if training gets as far as compiling: storage errors come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the train step was compiled before the storage check")

    monkeypatch.setattr(loop, "compile_training", refuse)


def test_unsupported_schemes_are_refused_by_name(data_dir, no_compile, tmp_path, capsys):
    for workdir in ("s3://bucket/run", "gcs:/bucket/run"):
        with pytest.raises(StorageError, match="not supported|two slashes"):
            loop.train(tiny_config(data_dir), workdir)
    with pytest.raises(StorageError, match="two slashes"):
        loop.train(tiny_config(data_dir, **{"data.data_dir": "gs:/bucket/data"}), str(tmp_path / "run"))
    assert main(["sample", "--workdir", "s3://bucket/base", "--prompt", "x", "--out", str(tmp_path / "out")]) == 2
    assert "s3: is not supported" in capsys.readouterr().err


def test_a_missing_bucket_is_named_at_start_up(gcs, data_dir, no_compile):
    with pytest.raises(StorageError, match="the bucket gs://no-such-bucket does not exist"):
        loop.train(tiny_config(data_dir), "gs://no-such-bucket/run")


def test_a_bucket_dataset_without_its_mount_is_named_at_start_up(gcs, data_dir, no_compile, monkeypatch, tmp_path):
    monkeypatch.delenv("IMAGEN_JAX_GCS_MOUNT", raising=False)
    with pytest.raises(StorageError, match="gcsfuse .* IMAGEN_JAX_GCS_MOUNT=/gcs"):
        loop.train(tiny_config(data_dir, **{"data.data_dir": gcs.uri("data")}), str(tmp_path / "run"))


def test_no_credentials_is_named_at_start_up(gcs, data_dir, no_compile, monkeypatch):
    monkeypatch.setitem(fsspec.config.conf, "gs", {k: v for k, v in fsspec.config.conf["gs"].items() if k != "token"})
    monkeypatch.setenv("HOME", "/nonexistent")  # no gcloud application-default credentials either
    monkeypatch.delenv("CLOUDSDK_CONFIG", raising=False)
    with pytest.raises(StorageError, match="no Google Cloud credentials .*gcloud auth application-default login"):
        loop.train(tiny_config(data_dir), gcs.uri("no_credentials"))


class _ReadOnlyProxy(BaseHTTPRequestHandler):
    """Forwards reads to the GCS server and answers writes 403 as GCS does for an account with
    read-only access (the emulator itself has no IAM)."""

    upstream = ""

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        request = urllib.request.Request(
            self.upstream + self.path,
            data=body,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
        )
        try:
            with urllib.request.urlopen(request) as r:
                status, headers, payload = r.status, r.headers, r.read()
        except urllib.error.HTTPError as error:
            status, headers, payload = error.code, error.headers, error.read()
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _forbid(self):
        payload = json.dumps(
            {
                "error": {
                    "code": 403,
                    "message": "reader@project.iam.gserviceaccount.com does not "
                    "have storage.objects.create access to the Google Cloud Storage object.",
                }
            }
        )
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())

    do_GET = _forward

    def do_POST(self):  # uploads
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._forbid()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, *args):
        pass


def test_a_permission_error_is_named_at_start_up(gcs, data_dir, no_compile):
    _ReadOnlyProxy.upstream = gcs.url
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _ReadOnlyProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        point_clients_at(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(StorageError, match=f"permission denied to write in gs://{gcs.bucket} .*objectAdmin"):
            loop.train(tiny_config(data_dir), gcs.uri("read_only"))
    finally:
        point_clients_at(gcs.url)
        server.shutdown()
