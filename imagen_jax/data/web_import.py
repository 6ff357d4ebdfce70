"""Web-scale import: img2dataset shards -> a TFDS ArrayRecord dataset, one shard at a time.

Each input shard becomes one output file (`<name>-<split>.array_record-NNNNN-of-MMMMM`),
in two steps that a runner (Apache Beam, beam_import.py, or this process) schedules:

1. `convert_shard(job, i)`: read shard i, check every record (web_filters: captions,
   decodability, size, aspect ratio, duplicates within the shard), write the kept records
   to `<work>/converted/NNNNN.array_record` with their image digests beside it, and the
   shard's counts last (`NNNNN.json`, its mark of completion).
2. `finalize_shard(job, i, drop)`: copy the converted file to its final name without the
   records at positions `drop` (copies of an image kept in an earlier shard, found from
   all shards' digests by `duplicates_to_drop` or the Beam GroupByKey), then its counts.

A step whose mark exists is not redone, so a rerun after an interruption converts only
the shards that were not finished. `import_shards` lists the inputs, records them and the
settings in `<work>/manifest.json` (a rerun must match it), runs the steps, then writes
TFDS's metadata (dataset_info.json last: the dataset is complete) and
`import_report.json` (every drop counted by reason, unreadable shards), and removes
`<work>`. The work folder is `<data_dir>/<name>/_import`, beside the version folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from tensorflow_datasets.core import dataset_info, example_serializer, naming

from imagen_jax import storage
from imagen_jax.data.importer import DATASET_VERSION, import_features
from imagen_jax.data.sources import resolve_data_dir
from imagen_jax.data.web_filters import DROP_REASONS, ImportFilters, check_record
from imagen_jax.data.web_shards import PARQUET_SUFFIXES, list_shards, read_parquet, read_shard
from imagen_jax.data.worker_pool import ordered_map

log = logging.getLogger(__name__)

REPORT_FILE = "import_report.json"
_DIGEST_BYTES = 16


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to convert or finalize one shard (picklable)."""

    name: str
    dataset_dir: str  # <data_dir>/<name>/<version>: the final files and metadata
    work_dir: str  # <data_dir>/<name>/_import
    shards: tuple[str, ...]
    splits: tuple[str, ...]  # the split of each shard
    filters: ImportFilters
    image_column: str | None = None
    caption_column: str | None = None

    def split_shards(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def output_path(self, i: int) -> str:
        """The final file of shard i, in TFDS's naming."""
        members = self.split_shards(self.splits[i])
        shard = f"{members.index(i):05d}-of-{len(members):05d}"
        return storage.join(self.dataset_dir, f"{self.name}-{self.splits[i]}.array_record-{shard}")

    def work_path(self, step: str, i: int, suffix: str) -> str:
        return storage.join(self.work_dir, step, f"{i:05d}{suffix}")

    def manifest(self) -> dict:
        return {
            "name": self.name,
            "shards": list(self.shards),
            "splits": list(self.splits),
            "filters": dataclasses.asdict(self.filters),
            "image_column": self.image_column,
            "caption_column": self.caption_column,
        }


# ----------------------------------------------------------------------------- the steps


def _serializer():
    """example -> tf.Example bytes, with the feature map in key order: protobuf's default
    map order varies between processes, and a resumed import must write the same bytes."""
    features = import_features()
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    return lambda example: serializer.get_tf_example(features.encode_example(example)).SerializeToString(
        deterministic=True
    )


def _write_array_record(target: str, records: Iterable[bytes]) -> int:
    """Writes serialized records to `target` whole (storage.StagedFile); returns the count."""
    from array_record.python.array_record_module import ArrayRecordWriter

    staged = storage.StagedFile(target)
    count = 0
    try:
        writer = ArrayRecordWriter(staged.local, "group_size:1")
        for record in records:
            writer.write(record)
            count += 1
        writer.close()
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    return count


@contextlib.contextmanager
def _local_file(p: str) -> Iterator[str]:
    """A local path holding the file `p` (itself, or a temporary download from gs://)."""
    if not storage.is_remote(p):
        yield p
        return
    with tempfile.TemporaryDirectory(prefix="imagen_jax_import_") as folder:
        local = os.path.join(folder, "file")
        with storage.path(p).open("rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)
        yield local


def _read_array_record(p: str) -> list[bytes]:
    from array_record.python.array_record_module import ArrayRecordReader

    with _local_file(p) as local:
        reader = ArrayRecordReader(local)
        try:
            return list(reader.read_all())
        finally:
            reader.close()


def _read_json(p: str) -> dict | None:
    target = storage.path(p)
    return json.loads(target.read_text()) if target.exists() else None


def convert_shard(job: ShardJob, i: int) -> np.ndarray:
    """Step 1 for shard i (see the module docstring); returns the kept records' image
    digests, uint8 [kept, 16], in record order. Already done: read back, not redone."""
    stats_path = job.work_path("converted", i, ".json")
    digests_path = job.work_path("converted", i, ".digests")
    if storage.path(stats_path).exists():
        return np.frombuffer(storage.path(digests_path).read_bytes(), np.uint8).reshape(-1, _DIGEST_BYTES)
    serialize = _serializer()
    dropped: Counter = Counter()
    digests: list[bytes] = []
    seen: set[bytes] = set()
    counts = {"records": 0, "error": None}
    source = os.path.basename(job.shards[i].rstrip("/"))

    def kept_records() -> Iterator[bytes]:
        try:
            for record in read_shard(job.shards[i], image_column=job.image_column, caption_column=job.caption_column):
                counts["records"] += 1
                verdict = check_record(record, job.filters)
                if verdict.reason is None and job.filters.dedup and verdict.digest in seen:
                    verdict.reason = "duplicate"
                if verdict.reason is not None:
                    dropped[verdict.reason] += 1
                    continue
                seen.add(verdict.digest)
                digests.append(verdict.digest)
                example = {"image": verdict.image, "caption": verdict.caption, "file": f"{source}/{record.key}"}
                yield serialize(example)
        except Exception as error:  # a missing, truncated or corrupt shard: keep what was read, count it
            counts["error"] = f"{type(error).__name__}: {error}"
            log.warning(
                "Shard %s is unreadable after %d records (%s).", job.shards[i], counts["records"], counts["error"]
            )

    kept = _write_array_record(job.work_path("converted", i, ".array_record"), kept_records())
    storage.write_bytes(digests_path, b"".join(digests))
    stats = {"shard": job.shards[i], **counts, "kept": kept, "dropped": dict(dropped)}
    storage.write_text(stats_path, json.dumps(stats))
    return np.frombuffer(b"".join(digests), np.uint8).reshape(-1, _DIGEST_BYTES)


def duplicates_to_drop(digests: Sequence[np.ndarray]) -> dict[int, list[int]]:
    """{shard: positions} of kept records whose image an earlier shard kept (shards in
    order; within a shard convert_shard has already dropped repeats)."""
    seen: set[bytes] = set()
    drop: dict[int, list[int]] = {}
    for i, shard in enumerate(digests):
        for position, digest in enumerate(map(bytes, shard)):
            if digest in seen:
                drop.setdefault(i, []).append(position)
            else:
                seen.add(digest)
    return drop


def finalize_shard(job: ShardJob, i: int, drop: Iterable[int] = ()) -> dict:
    """Step 2 for shard i; returns its final counts {written, duplicates, num_bytes}."""
    stats_path = job.work_path("final", i, ".json")
    done = _read_json(stats_path)
    if done is not None:
        return done
    drop = set(drop)
    converted = job.work_path("converted", i, ".array_record")
    records = _read_array_record(converted)
    written = _write_array_record(job.output_path(i), (r for n, r in enumerate(records) if n not in drop))
    stats = {"written": written, "duplicates": len(drop), "num_bytes": storage.path(job.output_path(i)).stat().length}
    storage.write_text(stats_path, json.dumps(stats))
    return stats


# ----------------------------------------------------------------------------- the driver


@dataclasses.dataclass
class WebImportReport:
    """What a web import did, summed over shards (written as import_report.json)."""

    written: dict[str, int]
    dropped: dict[str, int]
    records: int
    shards: int
    unreadable_shards: list[dict]
    resumed_shards: int = 0

    def summary(self) -> str:
        written = ", ".join(f"{n} {split}" for split, n in self.written.items())
        drops = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in self.dropped.items() if n) or "none"
        text = f"Imported {written} from {self.records} records in {self.shards} shards; dropped: {drops}."
        if self.unreadable_shards:
            text += f" {len(self.unreadable_shards)} shards unreadable (part or all): "
            text += "; ".join(f"{s['shard']} ({s['error']})" for s in self.unreadable_shards[:5])
            text += " ..." if len(self.unreadable_shards) > 5 else ""
        return text


def _assign_splits(count: int, test_shards: int) -> tuple[str, ...]:
    if not 0 <= test_shards < count:
        raise ValueError(f"--test-shards must be in [0, {count}) for {count} input shards, got {test_shards}.")
    return ("train",) * (count - test_shards) + ("test",) * test_shards


def _check_columns(shards: Sequence[str], image_column: str | None, caption_column: str | None) -> None:
    """A parquet input whose first readable file lacks the columns is a user error, not a
    few hundred unreadable shards: check one file up front."""
    for shard in shards:
        if shard.lower().endswith(PARQUET_SUFFIXES) and storage.path(shard).exists():
            kwargs = {"image_column": image_column or "jpg", "caption_column": caption_column or "caption"}
            next(iter(read_parquet(shard, **kwargs)), None)  # raises KeyError naming the columns
            return


def _start(job: ShardJob, overwrite: bool) -> int:
    """Checks the destination, writes or checks the manifest; returns how many shards an
    earlier, interrupted run of the same import already converted."""
    info = storage.path(job.dataset_dir) / "dataset_info.json"
    manifest_path = storage.join(job.work_dir, "manifest.json")
    if overwrite:
        storage.rmtree(job.dataset_dir)
        storage.rmtree(job.work_dir)
    elif info.exists():
        raise FileExistsError(
            f"Dataset {job.name!r} already exists in {job.dataset_dir}; pick another name or pass --overwrite."
        )
    earlier = _read_json(manifest_path)
    if earlier is None:
        storage.write_text(manifest_path, json.dumps(job.manifest(), indent=1))
        return 0
    if earlier != job.manifest():
        raise FileExistsError(
            f"An interrupted import of {job.name!r} with other inputs or settings is in {job.work_dir}. Rerun it "
            "with the same inputs and options to resume it, or pass --overwrite to start over."
        )
    return sum(storage.path(job.work_path("converted", i, ".json")).exists() for i in range(len(job.shards)))


def _write_metadata(job: ShardJob, finals: Sequence[dict]) -> None:
    """TFDS's dataset_info.json + features.json for the written files (in a local folder,
    then copied beside them, dataset_info.json last)."""
    with tempfile.TemporaryDirectory(prefix="imagen_jax_import_") as local:
        template = naming.ShardedFileTemplate(
            data_dir=storage.path(job.dataset_dir),
            template=naming.DEFAULT_FILENAME_TEMPLATE,
            dataset_name=job.name,
            filetype_suffix="array_record",
        )
        identity = dataset_info.DatasetIdentity(
            name=job.name, version=tfds.core.Version(DATASET_VERSION), data_dir=job.dataset_dir, module_name=""
        )
        info = tfds.core.DatasetInfo(
            builder=identity,
            description="img2dataset shards imported by `imagen-jax data import`.",
            features=import_features(),
            disable_shuffling=True,
        )
        info.set_file_format("array_record")
        splits = []
        for split in dict.fromkeys(job.splits):
            members = job.split_shards(split)
            splits.append(
                tfds.core.SplitInfo(
                    name=split,
                    shard_lengths=[finals[i]["written"] for i in members],
                    num_bytes=sum(finals[i]["num_bytes"] for i in members),
                    filename_template=template,
                )
            )
        info.set_splits(tfds.core.SplitDict(splits))
        info.write_to_directory(local)
        storage.upload_tree(local, job.dataset_dir, last=("dataset_info.json",))


def _report(job: ShardJob, finals: Sequence[dict], resumed: int) -> WebImportReport:
    dropped: Counter = Counter()
    unreadable, records = [], 0
    for i in range(len(job.shards)):
        stats = _read_json(job.work_path("converted", i, ".json"))
        dropped.update(stats["dropped"])
        dropped["duplicate"] += finals[i]["duplicates"]
        records += stats["records"]
        if stats["error"]:
            unreadable.append({"shard": stats["shard"], "error": stats["error"], "records_read": stats["records"]})
    written = {split: sum(finals[i]["written"] for i in job.split_shards(split)) for split in dict.fromkeys(job.splits)}
    return WebImportReport(
        written=written,
        dropped={reason: dropped.get(reason, 0) for reason in DROP_REASONS},
        records=records,
        shards=len(job.shards),
        unreadable_shards=unreadable,
        resumed_shards=resumed,
    )


def _run_in_process(job: ShardJob, num_workers: int) -> list[dict]:
    count = len(job.shards)
    with ordered_map(functools.partial(convert_shard, job), range(count), num_workers=num_workers) as results:
        digests = list(tqdm.tqdm(results, total=count, desc="Converting shards", unit=" shards"))
    drop = duplicates_to_drop(digests) if job.filters.dedup else {}
    tasks = [(i, drop.get(i, [])) for i in range(count)]
    with ordered_map(functools.partial(_finalize_task, job), tasks, num_workers=num_workers) as results:
        return list(tqdm.tqdm(results, total=count, desc="Writing shards", unit=" shards"))


def _finalize_task(job: ShardJob, task: tuple[int, list[int]]) -> dict:
    return finalize_shard(job, *task)


def import_shards(
    sources: Sequence[str],
    *,
    name: str,
    data_dir: str | os.PathLike | None = None,
    filters: ImportFilters = ImportFilters(),
    test_shards: int = 0,
    image_column: str | None = None,
    caption_column: str | None = None,
    runner: str = "auto",
    num_workers: int | None = None,
    pipeline_options: Sequence[str] = (),
    overwrite: bool = False,
) -> tuple[tfds.core.DatasetBuilder, WebImportReport]:
    """Imports img2dataset shards (web_shards.list_shards: paths, globs, brace ranges;
    local or gs://) as TFDS dataset `name` in `data_dir` (local or gs://).

    runner: a Beam runner name ("DirectRunner" with `num_workers` processes;
    "DataflowRunner" etc. with `pipeline_options`, e.g. ["--project=P", "--region=R"]),
    "inprocess" (this process and `num_workers` worker processes, no Beam), or "auto"
    (DirectRunner if Beam is installed, else inprocess: the same bytes either way).
    test_shards: the last that many shards form a "test" split. Returns the builder and
    the report.
    """
    from imagen_jax.data.importer import check_dataset_name

    check_dataset_name(name)
    if runner == "auto":
        runner = "DirectRunner" if importlib.util.find_spec("apache_beam") else "inprocess"
        if runner == "inprocess":
            log.info(
                "Apache Beam is not installed: converting in this process's pool (`pip install -e '.[beam]'` "
                "for Beam's runners; the dataset is the same)."
            )
    if runner != "inprocess":
        try:
            import apache_beam  # noqa: F401
        except ImportError:
            raise ValueError(
                f"--runner {runner} needs Apache Beam: `pip install 'imagen-jax[beam]'` (from a checkout: "
                "`pip install -e '.[beam]'`), or import in this process with --runner inprocess."
            ) from None
    shards = list_shards(sources)
    _check_columns(shards, image_column, caption_column)
    data_dir = resolve_data_dir(data_dir)
    storage.check_access(data_dir, write=True)
    job = ShardJob(
        name=name,
        dataset_dir=storage.join(data_dir, name, DATASET_VERSION),
        work_dir=storage.join(data_dir, name, "_import"),
        shards=tuple(shards),
        splits=_assign_splits(len(shards), test_shards),
        filters=filters,
        image_column=image_column,
        caption_column=caption_column,
    )
    resumed = _start(job, overwrite)
    if resumed:
        print(f"Resuming the import of {name!r}: {resumed} of {len(shards)} shards were converted before.")
    num_workers = num_workers or os.cpu_count() or 1
    if runner == "inprocess":
        finals = _run_in_process(job, num_workers)
    else:
        from imagen_jax.data.beam_import import run_beam

        run_beam(job, runner=runner, num_workers=num_workers, pipeline_options=pipeline_options)
        finals = [_read_json(job.work_path("final", i, ".json")) for i in range(len(shards))]
    report = _report(job, finals, resumed)
    empty = [split for split, n in report.written.items() if n == 0]
    if empty:
        raise ValueError(
            f"No record was kept in split(s) {empty}; nothing was written as a dataset. {report.summary()} "
            "Loosen the filters (--min-image-side, --max-aspect-ratio, ...) or check the shards."
        )
    storage.write_text(
        storage.join(job.dataset_dir, REPORT_FILE),
        json.dumps({**dataclasses.asdict(report), "settings": job.manifest()}, indent=1),
    )
    _write_metadata(job, finals)
    storage.rmtree(job.work_dir)
    if report.unreadable_shards or any(report.dropped.values()):
        log.warning(report.summary())
    return tfds.builder_from_directory(job.dataset_dir), report
