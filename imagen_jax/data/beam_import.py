"""The web import as an Apache Beam pipeline (`pip install -e '.[beam]'`).

    shard indices -> Reshuffle -> Convert (web_import.convert_shard, one shard per element)
      -> (image digest, (shard, position)) -> GroupByKey -> all copies but the first
      -> CoGroupByKey with the converted shards -> Finalize (web_import.finalize_shard)

Each element is a whole shard, so a worker holds one shard's records at a time and the
driver only the shard list; duplicates across shards meet in Beam's shuffle (GroupByKey
by digest), never in one process. Both steps skip what an earlier run finished, so a
rerun after an interruption (any runner) redoes only the unfinished shards.

Runs on any Beam runner: DirectRunner in `num_workers` local processes by default
(multi_processing mode), DataflowRunner / FlinkRunner / SparkRunner with their pipeline
options (see docs/api.md "Importing web data"). No TensorFlow is needed on the workers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from imagen_jax.data.web_import import ShardJob, convert_shard, finalize_shard

_CONVERTED = "converted"
_METRICS = "imagen_jax_import"


class _Convert(beam.DoFn):
    """Shard index -> its kept records' (digest, (shard, position)); tags `converted` with
    the index once the shard's converted file is complete."""

    def __init__(self, job: ShardJob):
        self.job = job

    def process(self, i: int) -> Iterator:
        digests = convert_shard(self.job, i)
        beam.metrics.Metrics.counter(_METRICS, "shards_converted").inc()
        beam.metrics.Metrics.counter(_METRICS, "records_kept").inc(len(digests))
        if self.job.filters.dedup:
            for position, digest in enumerate(digests):
                yield digest.tobytes(), (i, position)
        yield beam.pvalue.TaggedOutput(_CONVERTED, (i, None))


def _later_copies(item: tuple[bytes, Sequence[tuple[int, int]]]) -> Iterator[tuple[int, int]]:
    """(digest, places) -> every (shard, position) but the first in input order."""
    _, places = item
    yield from sorted(places)[1:]


class _Finalize(beam.DoFn):
    def __init__(self, job: ShardJob):
        self.job = job

    def process(self, item: tuple[int, dict]) -> Iterator[dict]:
        i, groups = item
        stats = finalize_shard(self.job, i, groups["drop"])
        beam.metrics.Metrics.counter(_METRICS, "shards_written").inc()
        beam.metrics.Metrics.counter(_METRICS, "duplicates_across_shards").inc(stats["duplicates"])
        yield stats


def make_pipeline_options(runner: str, num_workers: int, extra: Sequence[str] = ()) -> PipelineOptions:
    """--runner=`runner` plus `extra`; for the DirectRunner, `num_workers` processes
    (multi_processing) unless `extra` sets --direct_num_workers itself."""
    argv = [f"--runner={runner}", *extra]
    if runner == "DirectRunner" and not any(a.startswith("--direct_num_workers") for a in extra):
        argv += [f"--direct_num_workers={num_workers}", "--direct_running_mode=multi_processing"]
    if not any(a.startswith("--default_sdk_harness_log_level") for a in extra):
        argv.append("--default_sdk_harness_log_level=WARNING")  # workers: our warnings, not Beam's start-up
    return PipelineOptions(argv)


@contextlib.contextmanager
def _quiet_beam_logs() -> Iterator[None]:
    """Beam's own INFO lines (channels, harness start and stop) at WARNING for the run."""
    logger = logging.getLogger("apache_beam")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def run_beam(job: ShardJob, *, runner: str, num_workers: int, pipeline_options: Sequence[str] = ()) -> None:
    """Runs both steps of `job` for every shard on `runner`; returns when all are written."""
    options = make_pipeline_options(runner, num_workers, pipeline_options)
    with _quiet_beam_logs(), beam.Pipeline(options=options) as pipeline:
        shards = pipeline | "Shards" >> beam.Create(range(len(job.shards))) | "Spread" >> beam.Reshuffle()
        converted = shards | "Convert" >> beam.ParDo(_Convert(job)).with_outputs(_CONVERTED, main="digests")
        if job.filters.dedup:
            drop = converted.digests | "ByImage" >> beam.GroupByKey() | "LaterCopies" >> beam.FlatMap(_later_copies)
        else:
            drop = pipeline | "NoDuplicates" >> beam.Create([])
        _ = (
            {"converted": converted[_CONVERTED], "drop": drop}
            | "WithDuplicates" >> beam.CoGroupByKey()
            | "Finalize" >> beam.ParDo(_Finalize(job))
        )
