"""A classifier's eval as pictures, from the details the train loop writes at each eval
(fmjax/metrics/eval_details.py): one-vs-rest ROC curves with their AUC, precision-recall curves
with their average precision, and the confusion matrix (counts, colours row-normalised)."""

import pathlib

import numpy as np

from fmjax.metrics import eval_details
from fmjax.metrics.classifier_images import row_normalised
from fmjax.plots import PlotOptions, one_run, workdirs
from fmjax.runtime import workdir_files

MAX_LEGEND_CLASSES = 20   # more classes: curves without a legend, and a matrix without counts
DETAILS = ("split", "step", "num_classes", "confusion", "roc", "pr")   # what the kinds read


def class_names(details: dict) -> list[str]:
    return details.get("class_names") or [str(c) for c in range(details["num_classes"])]


def figure(kind: str, paths: list[pathlib.Path], options: PlotOptions):
    """`kind` is roc, pr or confusion."""
    from matplotlib.figure import Figure

    run, _ = one_run.check(paths, kind, lambda c: c.task == "classification",
                           "a classifier (task 'classification')")
    details = eval_details.read(run, options.split, options.step, DETAILS)
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    try:
        {"roc": _roc, "pr": _pr, "confusion": _confusion}[kind](fig, ax, details)
    except (KeyError, TypeError, IndexError, ValueError) as e:   # the right keys, wrong contents
        raise workdir_files.damaged(
            eval_details.path(run, details["split"], details["step"]),
            f"the {details['split']} details of step {details['step']}",
            f"its {kind} cannot be drawn ({type(e).__name__}: {e})") from None
    ax.set_title(f"{workdirs.name(run)}, {details['split']} at step {details['step']}: "
                 f"{ax.get_title()}", fontsize="medium")
    return fig


def _curves(ax, details: dict, kind: str, x: str, y: str, score: str, score_name: str) -> float:
    """One line per class that has its curve; the mean of their `score`."""
    scores = []
    for name, curve in zip(class_names(details), details[kind]):
        if curve is not None:
            scores.append(curve[score])
            ax.plot(curve[x], curve[y], linewidth=1.2,
                    label=f"{name} ({score_name} {curve[score]:.3f})")
    if details["num_classes"] <= MAX_LEGEND_CLASSES:
        ax.legend(fontsize="small", loc="lower right" if kind == "roc" else "lower left")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    return float(np.mean(scores)) if scores else float("nan")


def _roc(fig, ax, details):
    ax.plot([0, 1], [0, 1], "--", color="0.7", linewidth=1)
    macro = _curves(ax, details, "roc", "fpr", "tpr", "auc", "AUC")
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"ROC, macro AUC {macro:.4f}")


def _pr(fig, ax, details):
    mean = _curves(ax, details, "pr", "recall", "precision", "average_precision", "AP")
    ax.set(xlabel="recall", ylabel="precision", title=f"precision-recall, mean AP {mean:.4f}")


def _confusion(fig, ax, details):
    counts_LL = np.asarray(details["confusion"])
    fractions_LL = row_normalised(counts_LL)
    image = ax.imshow(fractions_LL, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    names = class_names(details)
    num_classes = len(names)
    if num_classes <= MAX_LEGEND_CLASSES:
        ticks = np.arange(num_classes)
        ax.set_xticks(ticks, names, rotation=45 if max(map(len, names)) > 3 else 0)
        ax.set_yticks(ticks, names)
        for (row, col), count in np.ndenumerate(counts_LL):
            ax.text(col, row, str(count), ha="center", va="center", fontsize="small",
                    color="white" if fractions_LL[row, col] > 0.5 else "black")
    accuracy = np.trace(counts_LL) / max(counts_LL.sum(), 1)
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion, accuracy {accuracy:.4f}")
