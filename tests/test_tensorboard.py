"""TensorBoard event files (`w2v_jax.run.tensorboard`), read back from disk: every
``metrics.jsonl`` row's numeric values at its step, a resumed run's purge, a sweep's points
as separate runs, and one line when tensorboardX is missing.

The event files are read with their own framing (TFRecord: length, its masked CRC, the
bytes, their masked CRC) and tensorboardX's ``Event`` protobuf, so the test needs no
TensorFlow and no tensorboard; TensorBoard's purge rule is applied as it does: a
``SessionLog.START`` at step s drops every earlier event at step >= s.
"""

from __future__ import annotations

import importlib.util
import pathlib
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from w2v_jax import errors, run_folder, settings
from w2v_jax.analysis import sweep
from w2v_jax.configs import tiny
from w2v_jax.run import tensorboard


def _events(path: pathlib.Path) -> list[event_pb2.Event]:
    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        events.append(event_pb2.Event.FromString(data[at + 12 : at + 12 + length]))
        at += 12 + length + 4
    assert at == len(data), path
    return events


def _scalars(run_dir: pathlib.Path) -> dict[tuple[int, str], float]:
    """{(step, tag): value} of a run folder's event files, as TensorBoard shows them."""
    files = sorted((run_dir / tensorboard.FOLDER).glob("events.out.tfevents.*"))
    assert files, run_dir
    seen: list[tuple[int, str, float]] = []
    for path in files:  # one file per writer, in the order they were opened
        for event in _events(path):
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                seen = [s for s in seen if s[0] < event.step]
            for value in event.summary.value:
                seen.append((event.step, value.tag, value.simple_value))
    return {(step, tag): value for step, tag, value in seen}


def _rows_as_scalars(run_dir: pathlib.Path) -> dict[tuple[int, str], float]:
    return {
        (row["step"], key): value
        for row in run_folder.read_metrics(run_dir)
        for key, value in row.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _assert_same(run_dir: pathlib.Path) -> None:
    want, got = _rows_as_scalars(run_dir), _scalars(run_dir)
    assert sorted(got) == sorted(want)
    keys = sorted(want)
    np.testing.assert_allclose(  # event files hold float32
        [got[k] for k in keys], np.float32([want[k] for k in keys]), rtol=1e-7
    )


def test_a_resumed_log_purges_the_stopped_runs_later_rows(tmp_path):
    log = run_folder.MetricsLog(tmp_path, events=True)
    for step in (10, 20, 30):
        log.write(step, {"train/loss": 1.0 / step, "note": "text is skipped", "ok": True})
    log.close()
    log = run_folder.MetricsLog(tmp_path, resume_step=20, events=True)  # back at step 20
    log.write(30, {"train/loss": 0.5, "eval/x": 3})
    log.write(40, {"train/loss": 0.25})
    log.close()
    assert [r["step"] for r in run_folder.read_metrics(tmp_path)] == [10, 20, 30, 40]
    _assert_same(tmp_path)
    assert _scalars(tmp_path)[(30, "train/loss")] == 0.5


@pytest.mark.slow
def test_a_sweeps_points_are_runs_under_its_folder_with_every_row(tmp_path):
    base = tiny.get_config()
    base.tensorboard, base.max_steps = True, 30
    points = sweep.make_points(["neg", "hs"], [2], [0])
    sweep.run_sweep(base, tmp_path, points, make_plots=False)
    runs = sorted(p.parent.parent.name for p in tmp_path.glob("*/tensorboard/events.*"))
    assert runs == sorted(p.name for p in points)  # `tensorboard --logdir=<sweep>`: one each
    for point in points:
        _assert_same(tmp_path / point.name)
        tags = {tag for _, tag in _scalars(tmp_path / point.name)}
        assert {"train/loss", "train/lr", "eval/heldout_loss"} <= tags


def test_the_switch_without_the_extra_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboardX" else real(name, *a),
    )
    config = tiny.get_config()
    config.tensorboard = True
    with pytest.raises(errors.ConfigError, match=r"pip install -e \.\[tensorboard\]$"):
        settings.resolve(config)
    config.tensorboard = False
    settings.resolve(config)  # off by default: nothing needs it
