"""metrics.jsonl across a restart: the lines a killed run logged after its last checkpoint
(and a line torn by the kill) are dropped, so the resumed run's log has one line per step."""

import json

from imagen_jax.train.metrics import MetricsWriter, drop_lines_after


def write_log(path, steps, torn=False):
    text = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps)
    text += '{"step": 9, "lo' if torn else ""
    path.write_text(text)


def test_lines_after_the_checkpoint_and_a_torn_line_are_dropped(tmp_path):
    log = tmp_path / "metrics.jsonl"
    write_log(log, range(1, 9), torn=True)
    assert drop_lines_after(str(log), 5) == 4  # steps 6, 7, 8 and the torn line
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    before = log.stat().st_mtime_ns
    assert drop_lines_after(str(log), 5) == 0 and log.stat().st_mtime_ns == before  # nothing to drop: untouched
    assert drop_lines_after(str(tmp_path / "none.jsonl"), 5) == 0
    log.write_text(log.read_text() + '{"step": 6, "loss": 0.1}')  # whole, but cut before its newline
    assert drop_lines_after(str(log), 6) == 0 and log.read_text().endswith(
        '"loss": 0.1}\n'
    )  # the next line starts anew


def test_a_resumed_writer_continues_the_log_as_one_run(tmp_path):
    write_log(tmp_path / "metrics.jsonl", range(1, 8))
    (tmp_path / "tensorboard").mkdir()
    writer = MetricsWriter(str(tmp_path), start_step=4)
    for step in (5, 6):
        writer.scalars(step, {"loss": 0.5})
    writer.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert writer.tb.purge_step == 5  # TensorBoard hides the earlier run's events from step 5 on
