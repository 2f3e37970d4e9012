"""Train and eval curves of one or several runs on shared axes: one panel per metric name, where
`train/loss`, `eval/loss` and `val/loss` share the panel "loss"; a colour per run, a line style
per split. Losses get a log-scale y axis. The machine's `perf/*` numbers are left out unless
asked for."""

import math
import pathlib

from fmjax.errors import UserError
from fmjax.metrics.writers import PERF_PREFIX, read_jsonl
from fmjax.plots import PlotOptions, workdirs

SPLIT_STYLES = {"train": "-", "eval": "--", "val": ":"}
COLUMNS = 3   # panels per row, at most


def read_runs(paths: list[pathlib.Path]) -> dict[str, list[dict]]:
    """{run name: its metrics.jsonl records}; UserError for a run without any."""
    records = {}
    for name, run in workdirs.named_runs(paths).items():
        if not (run / "metrics.jsonl").exists():
            raise UserError(f"{run} has no metrics.jsonl: the run has logged nothing yet")
        records[name] = read_jsonl(run / "metrics.jsonl")
    return records


def chosen_metrics(records: dict[str, list[dict]], asked: tuple[str, ...] | None) -> list[str]:
    """The keys to draw: `asked` (each logged by some run), or train/loss and every eval/ and
    val/ key."""
    logged = sorted({k for rs in records.values() for r in rs for k, v in r.items()
                     if k != "step" and isinstance(v, (int, float))}, key=_split_first)
    if asked is None:
        return [k for k in logged if k == "train/loss" or k.startswith(("eval/", "val/"))]
    unknown = [k for k in asked if k not in logged]
    if unknown:
        # The perf/* keys only for a perf/ key asked for: else they would crowd the list.
        perf = unknown[0].startswith(PERF_PREFIX)
        shown = [k for k in logged if k.startswith(PERF_PREFIX) == perf]
        if not perf and any(k.startswith(PERF_PREFIX) for k in logged):
            shown = shown + [f"{PERF_PREFIX}..."]
        raise UserError(f"no run logged the metric {unknown[0]}; they logged: "
                        f"{', '.join(shown) or 'none'}")
    return list(dict.fromkeys(asked))   # a key named twice is drawn once


def _split_first(key: str) -> tuple:
    """Train before eval before val, then by name."""
    split, _, name = key.partition("/")
    return (list(SPLIT_STYLES).index(split) if split in SPLIT_STYLES else len(SPLIT_STYLES),
            name, split)


def panel_name(key: str) -> str:
    """'eval/loss' -> 'loss': a panel shows one metric in every split."""
    split, _, name = key.partition("/")
    return name if split in SPLIT_STYLES else key


def _log_scale(ax) -> None:
    """A log y axis labelled in plain numbers (0.3, not 3x10^-1), its minor ticks too where the
    curves span less than a decade (else the labels would overlap)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    low, high = ax.dataLim.intervaly
    plain = FuncFormatter(lambda y, _: f"{y:.3g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if high < 10 * low else NullFormatter())


def figure(paths: list[pathlib.Path], options: PlotOptions):
    """The curves of the runs in `paths` (a sweep directory: its trials), a panel per metric."""
    from matplotlib.figure import Figure

    records = read_runs(paths)
    keys = chosen_metrics(records, options.metrics)
    if not keys:
        raise UserError(f"{', '.join(records)}: no train/loss or eval metric logged yet")
    panels: dict[str, list[str]] = {}
    for key in keys:
        panels.setdefault(panel_name(key), []).append(key)
    columns = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(records))]
    for ax, (title, panel_keys) in zip(axes, panels.items()):
        positive = True
        for color, (run, rs) in zip(colors, records.items()):
            for key in panel_keys:
                points = [(r["step"], r[key]) for r in rs if isinstance(r.get(key), (int, float))]
                if not points:
                    continue
                steps, values = zip(*points)
                positive &= min(values) > 0
                split = key.partition("/")[0]
                ax.plot(steps, values, SPLIT_STYLES.get(split, "-"), color=color,
                        marker="o" if split in ("eval", "val") else None, markersize=3,
                        label=f"{run} {split}" if len(records) > 1 else key)
        if "loss" in title and positive:
            _log_scale(ax)
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return fig
