"""The resolved config in TensorBoard, so runs can be told apart: as text (the TEXT tab, tag
`config`) and as hparams (the HPARAMS tab: one row per run, a column per config key and per
metric named)."""

import json


def flat_hparams(config_dict: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """{"train.batch_size": 128, ...}: every leaf of the config; tuples and lists as their JSON."""
    flat = {}
    for key, value in config_dict.items():
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{prefix}{key}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix + key] = value
        else:
            flat[prefix + key] = json.dumps(value, default=str)
    return flat


def write_config(writer, config_dict: dict, metric_tags: list[str], step: int) -> None:
    """Logs `config_dict` to tensorboardX `writer` as text and as hparams whose metrics are the
    scalars `metric_tags` (e.g. "eval/loss") the run writes itself."""
    from tensorboardX import summary   # loaded by `writer`'s class already, torch hidden

    text = json.dumps(config_dict, indent=2, sort_keys=True)
    writer.add_text("config", "```\n" + text + "\n```", step)   # Markdown: keep the indent
    experiment, session_start, _ = summary.hparams(flat_hparams(config_dict),
                                                   dict.fromkeys(metric_tags, 0.0))
    writer.file_writer.add_summary(experiment, step)
    writer.file_writer.add_summary(session_start, step)
