"""A sweep's PNG plots, drawn by Optuna's matplotlib backend: the optimisation history, the
objective against each parameter (a slice plot) and the parallel coordinates of all parameters.

They are drawn from completed trials only, so they wait for two of them; until then, and without
matplotlib, the sweep goes on without them.
"""

import io
import sys
import warnings

from fmjax.runtime import workdir_files

MIN_COMPLETE_TRIALS = 2   # one point makes no history, no slice, no line between axes
INSTALL_NOTE = "plots skipped: they need matplotlib (an fmjax dependency): pip install matplotlib"


def _save_png(axes, path) -> None:
    """The figure of `axes` (an Axes, or an array of them for several parameters) to `path`."""
    import matplotlib.pyplot as plt
    import numpy as np

    figure = np.ravel(axes)[0].figure
    try:
        out = io.BytesIO()
        figure.savefig(out, format="png", dpi=100, bbox_inches="tight")   # labels stay whole
        workdir_files.write_atomic(path, out.getvalue())
    finally:
        plt.close(figure)


def write(study, plots_dir, metric_name: str, param_keys) -> list[str]:
    """Writes `optimization_history.png`, `slice.png` and `parallel_coordinate.png` of `study`
    under `plots_dir` once it has `MIN_COMPLETE_TRIALS` completed trials; returns notes for the
    user (why plots were skipped), empty when none."""
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if not optuna_plots.is_available():
            return [INSTALL_NOTE]
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_COMPLETE_TRIALS:
        return []
    params = [k for k in param_keys if any(k in t.params for t in complete)]
    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:   # never a window; a notebook keeps its backend
        matplotlib.use("Agg")
    plots_dir = workdir_files.as_path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    draw = {"optimization_history": lambda: optuna_plots.plot_optimization_history(
                study, target_name=metric_name)}
    if params:
        draw["slice"] = lambda: optuna_plots.plot_slice(study, params, target_name=metric_name)
        draw["parallel_coordinate"] = lambda: optuna_plots.plot_parallel_coordinate(
            study, params, target_name=metric_name)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():   # "experimental" and constant-axis warnings, per call
            warnings.simplefilter("ignore")
            for name, plot in draw.items():
                with matplotlib.rc_context():   # Optuna sets a style for all later figures
                    _save_png(plot(), plots_dir / f"{name}.png")
    finally:
        optuna.logging.set_verbosity(verbosity)
    return []
