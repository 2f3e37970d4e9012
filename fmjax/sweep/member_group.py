"""`fmjax sweep --vectorize`: trials run as groups of members of one vectorised process.

Each worker takes up to `group_size` trials of the budget at once (new ones, or ones an earlier
sweep left RUNNING) and runs them as one process,

    python -m fmjax.sweep.member_process GROUP.json

that trains them together (`vectorized.train_members`) and writes each trial's workdir as an
ordinary trial's results (config.json, metrics.jsonl); the sweep then reads each trial's outcome
from its metrics.jsonl as it does for ordinary trials. Members keep no checkpoints: a group that
is stopped or killed is run again whole by the next sweep. Members run to the end (no pruning,
no early stopping), so the method must know every member up front: grid or random.
"""

import json
import math
import pathlib

from fmjax import configs
from fmjax.errors import UserError
from fmjax.sweep import member_configs, trial_process
from fmjax.sweep import spec as spec_lib


def check(spec: spec_lib.SweepSpec) -> None:
    """UserError unless the sweep can run vectorised."""
    if spec.method not in ("grid", "random"):
        raise UserError(f"--vectorize needs method grid or random (every member known up front), "
                        f"not {spec.method}")
    if spec.early_terminate:
        raise UserError("--vectorize runs every member to its last step: remove early_terminate "
                        "from the sweep")
    for p in spec.params:
        if not member_configs.is_vectorizable(p.key):
            raise UserError(f"--vectorize: members may differ only in "
                            f"{', '.join(member_configs.VECTORIZABLE_KEYS)}, not '{p.key}' (run "
                            "the sweep without --vectorize)")


def group_size(spec: spec_lib.SweepSpec, num_workers: int) -> int:
    """Members per process: the budget shared evenly among the workers."""
    return math.ceil(spec.num_trials / num_workers)


def write_group(path: pathlib.Path, config, members: list[dict], dirs: list[pathlib.Path]):
    """The group file a member process reads: the trials' common config and each member."""
    path.write_text(json.dumps({"config": json.loads(configs.to_json(config)),
                                "members": members, "dirs": [str(d) for d in dirs]}))


def run(config, spec: spec_lib.SweepSpec, members: list[dict], dirs: list[pathlib.Path],
        sweep_dir: pathlib.Path, worker, stop) -> list:
    """Run the members' process on `worker` until it ends or `stop` is set; each member's
    `trial_process.Outcome` (all 'stopped' when stopped: the next sweep reruns the group)."""
    settings = {**spec.constants, "checkpoint.best_metric": spec.metric,
                "checkpoint.best_mode": spec.mode}
    groups = sweep_dir / "groups"
    groups.mkdir(exist_ok=True)
    name = f"{dirs[0].name}-{dirs[-1].name}"
    group_file, log = groups / f"{name}.json", groups / f"{name}.log"
    write_group(group_file, member_configs.member_config(config, settings), members, dirs)
    proc = trial_process.start(["-m", "fmjax.sweep.member_process", str(group_file)], log, worker)
    while proc.poll() is None and not stop.wait(trial_process.POLL_S):
        pass
    if proc.poll() is None:
        proc.terminate()
    returncode = proc.wait()
    if stop.is_set():
        return [trial_process.Outcome("stopped") for _ in dirs]
    return [trial_process.outcome(d, spec, returncode, False, False, log) for d in dirs]
