"""A sweep's trials in TensorBoard's HPARAMS tab: `tensorboard --logdir DIR/hparams`.

The hparams plugin's layout: the experiment (which params and metrics there are) in the logdir
itself, and a run per trial (`NNNN/`) holding its session (params, status) and its metrics at its
best eval. Each file is written whole with a fixed name, so writing again after every trial
replaces the previous files instead of adding event files that repeat them.
"""

import struct
import time

from fmjax.metrics.writers import summary_writer_class
from fmjax.runtime import workdir_files

EVENT_FILE = "events.out.tfevents.fmjax"   # TensorBoard reads any file named *tfevents*
# Optuna's trial states as the plugin's session statuses (a waiting trial has not started: no
# session); a pruned trial was stopped on purpose, neither a success nor a failure.
_STATUS = {"COMPLETE": "STATUS_SUCCESS", "FAIL": "STATUS_FAILURE", "PRUNED": "STATUS_UNKNOWN",
           "RUNNING": "STATUS_RUNNING"}


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    from tensorboardX.record_writer import masked_crc32c
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


def _event_file(path, summaries: list[tuple[int, object]]) -> None:
    """Writes an event file of `(step, Summary)` pairs, after the file-version event."""
    from tensorboardX.proto.event_pb2 import Event
    now = time.time()
    events = [Event(wall_time=now, file_version="brain.Event:2")]
    events += [Event(wall_time=now, step=step, summary=summary) for step, summary in summaries]
    workdir_files.write_atomic(path, b"".join(_record(e.SerializeToString()) for e in events))


def _session_end(state: str):
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    end = SessionEndInfo(status=Status.Value(_STATUS[state]))
    if state != "RUNNING":
        end.end_time_secs = time.time()
    content = HParamsPluginData(session_end_info=end)
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name="hparams", content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=metadata)])


def write(hparams_dir, table: list[dict], param_keys, metrics) -> None:
    """The trials of `table` (rows of fmjax/sweep/results.py) as hparams sessions under
    `hparams_dir`: each of `param_keys`, and each of `metrics` at the trial's best eval."""
    summary_writer_class()   # imports tensorboardX without torch or Cloud Storage
    from tensorboardX import summary

    hparams_dir = workdir_files.as_path(hparams_dir)
    examples = {key: next((row[key] for row in table if row[key] is not None), None)
                for key in param_keys}
    experiment, _, _ = summary.hparams(examples, dict.fromkeys(metrics, 0.0))
    hparams_dir.mkdir(parents=True, exist_ok=True)
    _event_file(hparams_dir / EVENT_FILE, [(0, experiment)])
    for row in table:
        if row["state"] not in _STATUS:
            continue
        _, session_start, _ = summary.hparams({k: row[k] for k in param_keys}, {})
        summaries = [(0, session_start)]
        summaries += [(row["best_step"], summary.scalar(k, row[k])) for k in metrics
                      if row.get(k) is not None]
        summaries.append((row["best_step"] or 0, _session_end(row["state"])))
        run_dir = hparams_dir / f"{row['trial']:04d}"
        run_dir.mkdir(exist_ok=True)
        _event_file(run_dir / EVENT_FILE, summaries)
