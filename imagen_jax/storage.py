"""The path layer: every file the package reads or writes goes through here, local and
gs:// alike (etils epath; gcsfs behind it for gs://, orbax/tensorstore for checkpoints).

    storage.path("runs/base")          -> epath.Path("/abs/runs/base")   (local: ~ expanded, absolute)
    storage.path("gs://bucket/run")    -> epath.Path("gs://bucket/run")  (never made local)
    storage.path("s3://x")             -> StorageError naming the supported forms

Cloud Storage has no append and no atomic rename, so: single files are written whole
(`write_bytes`: one object upload, which appears complete or not at all; locally a temp
file and a rename); append-only logs (metrics.jsonl, TensorBoard event files) are kept in
memory and rewritten whole on flush (`AppendFile`, as TensorFlow's GCS writer does);
directories of files are committed by writing their marker file last (`upload_tree`).

ArrayRecord (datasets, the text-embedding cache) reads and writes local files only (its
reader does not open gs:// paths), so those readers take `local_view(path)`: for gs:// the
bucket's gcsfuse mount, named by $IMAGEN_JAX_GCS_MOUNT (gs://B/x is read at
$IMAGEN_JAX_GCS_MOUNT/B/x); an ArrayRecord file bound for gs:// is written locally and
uploaded whole (`StagedFile`; locally it is renamed into place).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence

import fsspec.config
from etils import epath

GCS_PREFIX = "gs://"
MOUNT_ENV = "IMAGEN_JAX_GCS_MOUNT"
SUPPORTED = "a local path or gs://BUCKET/PATH (Cloud Storage)"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")

# Listings are not cached: another process or host may have written a file since (e.g. the
# text-embedding cache written by process 0 and then opened by every process).
fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)


class StorageError(ValueError):
    """A path that cannot be used: unsupported scheme, missing bucket, no credentials,
    no permission, a gs:// dataset without a mount. The message names the path and the fix."""


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is on Cloud Storage (gs://)."""
    return os.fspath(path).startswith(GCS_PREFIX)


def _check_scheme(text: str) -> None:
    match = _SCHEME.match(text)
    if match is None or text.startswith(GCS_PREFIX):
        return
    scheme = match.group(1)
    if scheme.lower() in ("gs", "gcs"):
        raise StorageError(f"{text!r} is not a Cloud Storage path: write it gs://BUCKET/PATH (two slashes).")
    raise StorageError(f"{text!r}: the scheme {scheme}: is not supported; use {SUPPORTED}.")


def path(p: str | os.PathLike) -> epath.Path:
    """The one constructor of paths: gs:// stays gs://; a local path is made absolute with
    ~ expanded; any other scheme (s3://, gcs://, gs:/x, http://) is refused by name."""
    if isinstance(p, epath.Path) and is_remote(p):
        return p
    text = os.fspath(p)
    if not text:
        raise StorageError(f"An empty path; give {SUPPORTED}.")
    _check_scheme(text)
    if is_remote(text):
        if not text[len(GCS_PREFIX) :].split("/")[0]:
            raise StorageError(f"{text!r} names no bucket; write it gs://BUCKET/PATH.")
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def join(base: str | os.PathLike, *parts: str) -> str:
    """`path(base) / parts...` as a string."""
    return os.fspath(path(base).joinpath(*parts))


def name(p: str | os.PathLike) -> str:
    """The last component of a path (a workdir's name), trailing slashes ignored."""
    return path(os.fspath(p).rstrip("/") or "/").name


def glob(pattern: str | os.PathLike) -> list[str]:
    """Paths matching a glob (`*`, `?`, `[...]` in any component after the first), local or
    gs://, sorted. 'gs://b/x/*.tar' lists gs://b/x once; a pattern without wildcards
    matches itself if it exists."""
    text = os.fspath(path(pattern))
    wildcard = min((i for i in (text.find(c) for c in "*?[") if i >= 0), default=-1)
    if wildcard < 0:
        return [text] if path(text).exists() else []
    parent = text[:wildcard].rsplit("/", 1)[0]
    return sorted(os.fspath(p) for p in path(parent).glob(text[len(parent) + 1 :]))


# ----------------------------------------------------------------------------- access


def _bucket(p: str) -> str:
    return p[len(GCS_PREFIX) :].split("/")[0]


def _explicit_gcs_token() -> bool:
    """Whether gcsfs was given credentials explicitly (a token file, 'anon' for a public
    bucket or an emulator), e.g. FSSPEC_GS='{"token": "anon"}'; otherwise Google's
    default credentials are required (gcsfs would silently fall back to anonymous)."""
    return any(fsspec.config.conf.get(proto, {}).get("token") is not None for proto in ("gs", "gcs"))


def check_access(p: str | os.PathLike, *, write: bool) -> None:
    """For gs:// paths, at start-up, before any compile: credentials exist, the bucket
    exists, and (`write`) an object can be written and deleted under `p`. Each failure is
    one StorageError naming the path and the fix. Local paths: nothing to check here."""
    p = os.fspath(path(p))
    if not is_remote(p):
        return
    bucket = _bucket(p)
    if not _explicit_gcs_token():
        import google.auth
        import google.auth.exceptions

        try:
            google.auth.default()
        except google.auth.exceptions.DefaultCredentialsError:
            raise StorageError(
                f"{p}: no Google Cloud credentials were found. Run `gcloud auth application-default login`, "
                "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file; on a Cloud TPU VM give "
                "the VM a service account with access to the bucket (roles/storage.objectAdmin)."
            ) from None
    fs = fsspec.filesystem("gs")
    try:
        fs.info(bucket)
    except FileNotFoundError:
        raise StorageError(
            f"{p}: the bucket gs://{bucket} does not exist. Create it (`gcloud storage buckets create "
            f"gs://{bucket} --location REGION`, in the TPU's region) or fix the name."
        ) from None
    except OSError as error:
        raise _permission_error(p, bucket, "read", error) from None
    if not write:
        return
    probe = f"{p.rstrip('/')}/.imagen_jax_write_check-{uuid.uuid4().hex[:12]}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except OSError as error:
        raise _permission_error(p, bucket, "write", error) from None


def _permission_error(p: str, bucket: str, what: str, error: Exception) -> StorageError:
    return StorageError(
        f"{p}: permission denied to {what} in gs://{bucket} ({str(error).splitlines()[0]}). Grant the "
        f"account the job runs as roles/storage.objectAdmin on the bucket (`gcloud storage buckets "
        f"add-iam-policy-binding gs://{bucket} --member=serviceAccount:SA --role=roles/storage.objectAdmin`)."
    )


# ----------------------------------------------------------------------------- reading


def local_view(p: str | os.PathLike) -> str:
    """A local file-system path at which `p` can be read by code that opens files itself
    (ArrayRecord): `p` itself if local; for gs://B/x, $IMAGEN_JAX_GCS_MOUNT/B/x, where a
    gcsfuse mount of bucket B must be (launch/tpu_setup.sh --gcsfuse B sets it up)."""
    p = os.fspath(path(p))
    if not is_remote(p):
        return p
    bucket = _bucket(p)
    mount = os.environ.get(MOUNT_ENV)
    if not mount:
        raise StorageError(
            f"{p} is on Cloud Storage, and ArrayRecord (datasets, the text-embedding cache) reads local files "
            f"only. Mount the bucket with gcsfuse on every host (`gcsfuse --implicit-dirs {bucket} /gcs/{bucket}`; "
            f"launch/tpu_setup.sh --gcsfuse {bucket} does it) and set {MOUNT_ENV}=/gcs."
        )
    local = os.path.join(os.path.abspath(mount), p[len(GCS_PREFIX) :])
    if not os.path.isdir(os.path.join(os.path.abspath(mount), bucket)):
        raise StorageError(
            f"{p}: {MOUNT_ENV}={mount} but gs://{bucket} is not mounted at {os.path.join(mount, bucket)}. "
            f"Mount it there (`gcsfuse --implicit-dirs {bucket} {os.path.join(mount, bucket)}`)."
        )
    return local


# ----------------------------------------------------------------------------- writing


def write_bytes(p: str | os.PathLike, data: bytes) -> str:
    """Write `data` to `p` whole and atomically (local: temp file + rename; gs://: one
    object upload). Parent folders are created. Returns the path as a string."""
    target = path(p)
    if is_remote(target):
        target.write_bytes(data)
        return os.fspath(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, target)
    return os.fspath(target)


def write_text(p: str | os.PathLike, text: str) -> str:
    return write_bytes(p, text.encode("utf-8"))


def read_text(p: str | os.PathLike) -> str:
    return path(p).read_text(encoding="utf-8")


def rmtree(p: str | os.PathLike) -> None:
    """Delete a folder and everything under it (a gs:// prefix: every object under it)."""
    target = path(p)
    if target.exists():
        target.rmtree()


def move_tree(source: str | os.PathLike, target: str | os.PathLike) -> str:
    """Move a folder and everything under it to `target` (not there yet): locally one rename;
    on gs:// (no rename) each object copied, then the source deleted."""
    source, target = path(source), path(target)
    if not is_remote(source) and not is_remote(target):
        os.rename(source, target)
        return os.fspath(target)
    for item in sorted(source.rglob("*")):
        if item.is_dir():
            continue
        destination = target / os.path.relpath(os.fspath(item), os.fspath(source))
        with item.open("rb") as src, destination.open("wb") as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)
    rmtree(source)
    return os.fspath(target)


def upload_tree(local_dir: str, remote_dir: str | os.PathLike, *, last: Sequence[str] = ()) -> None:
    """Copy every file under `local_dir` to `remote_dir` (same relative paths). Files
    named in `last` (a directory's commit marker: dataset_info.json, metadata.json) are
    copied after all others, so a reader that looks for the marker never sees half a copy."""
    remote = path(remote_dir)
    files = []
    for root, _, names in os.walk(local_dir):
        files += [os.path.relpath(os.path.join(root, n), local_dir) for n in names]
    files.sort(key=lambda rel: (os.path.basename(rel) in last, rel))
    for rel in files:
        target = remote / rel
        if not is_remote(target):
            target.parent.mkdir(parents=True, exist_ok=True)
        with open(os.path.join(local_dir, rel), "rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)


class StagedFile:
    """A local path (`.local`) at which code that writes local files only (ArrayRecord)
    writes one file, then `commit()` puts it at `target` whole: locally by a rename from a
    temporary name beside it, on gs:// by one streamed upload (an object exists only once
    complete); `discard()` drops it. A reader never sees a half-written `target`."""

    def __init__(self, target: str | os.PathLike):
        self.target = path(target)
        if is_remote(self.target):
            self._tmpdir = tempfile.mkdtemp(prefix="imagen_jax_file_")
            self.local = os.path.join(self._tmpdir, self.target.name)
        else:
            self._tmpdir = None
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.local = f"{self.target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def commit(self) -> str:
        if self._tmpdir is None:
            os.replace(self.local, self.target)
        else:
            with open(self.local, "rb") as src, self.target.open("wb") as dst:
                shutil.copyfileobj(src, dst, length=16 << 20)
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        return os.fspath(self.target)

    def discard(self) -> None:
        if self._tmpdir is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.local)
        else:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


class AppendFile:
    """An append-only binary file on any store. Locally: a file opened for append. On
    gs:// (no append there): its content is kept in memory (starting from what the object
    already holds) and the whole object is rewritten on `flush`, at most once every
    `upload_every` seconds (`close` always writes what is pending)."""

    def __init__(self, p: str | os.PathLike, *, upload_every: float = 0.0):
        self.path = path(p)
        self.remote = is_remote(self.path)
        self.upload_every = upload_every
        self._uploaded_at = -math.inf
        if self.remote:
            self._buffer = io.BytesIO()
            if self.path.exists():
                self._buffer.write(self.path.read_bytes())
            self._dirty = False
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")

    def write(self, data: bytes) -> None:
        if self.remote:
            self._buffer.write(data)
            self._dirty = True
        else:
            self._file.write(data)

    def flush(self, *, force: bool = False) -> None:
        if not self.remote:
            self._file.flush()
        elif self._dirty and (force or time.monotonic() - self._uploaded_at >= self.upload_every):
            self.path.write_bytes(self._buffer.getvalue())
            self._dirty, self._uploaded_at = False, time.monotonic()

    def close(self) -> None:
        self.flush(force=True)
        if not self.remote:
            self._file.close()


class _TensorBoardFileFactory:
    """tensorboardX's writer factory for gs://: event files through `AppendFile`
    (replaces its own, which talks to google-cloud-storage directly)."""

    def open(self, p: str) -> AppendFile:
        return AppendFile(p)

    def directory_check(self, p: str) -> None:  # no folders on Cloud Storage
        path(p)


def register_tensorboard_writer() -> None:
    """Route tensorboardX's gs:// event files through this layer (idempotent)."""
    from tensorboardX import record_writer

    record_writer.register_writer_factory("gs", _TensorBoardFileFactory())
