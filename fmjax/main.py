"""The `fmjax` command line: train | eval | inspect | sample | translate.

    fmjax train   --config experiments/mnist1d/cnn.py[:variant] --workdir runs/cnn [--config.a.b=v]
    fmjax eval    --workdir runs/cnn [--step N]
    fmjax inspect --config experiments/mnist1d/cnn.py [--config.mesh.fsdp=4]
    fmjax sample  --workdir runs/gpt --prompt "ROMEO:" [--max_new_tokens 500 --temperature 0.8
                  --top_k 40 --top_p 1.0 --seed 0 --num_samples 1 --step N]
    fmjax sample  --workdir runs/vae --num 64 --out grid.png [--interpolate] [--seed 0]
    fmjax translate --workdir runs/mt --input "olá mundo" [--beam_size 4 --length_penalty 0.6]
    fmjax launch_local --num_processes=2 --devices_per_process=4 -- train --config ... --workdir ...

Every command first joins a multi-process run when the environment asks for one
(`fmjax.distributed`: the FMJAX_* variables `launch_local` sets, or FMJAX_DISTRIBUTED=auto for
JAX's own TPU VM / SLURM / GKE detection).

Bad input (unknown key, wrong type, impossible mesh, indivisible batch, unknown name, missing
dataset, a checkpoint that does not fit) prints one line and exits with status 2 before any work.
"""

import json
import pathlib
import sys

from absl import flags
from ml_collections import config_flags

PREEMPTED_STATUS = 143
MAX_IMAGES = 4096   # sample --num: a grid, not a dataset
COMMANDS = ("train", "eval", "inspect", "sample", "translate")
USAGE = ("usage: fmjax {train|eval|inspect|sample|translate} [--config FILE[:variant]] "
         "[--workdir DIR] ... (or: fmjax launch_local --num_processes=N -- COMMAND ...)")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
flags.DEFINE_integer("step", None, "eval: the checkpoint step (default: the latest).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_string("prompt", "\n", "sample: the text to continue.")
flags.DEFINE_integer("max_new_tokens", 500, "sample: tokens to generate, shown as they are "
                     "generated.")
flags.DEFINE_float("temperature", 0.8, "sample: softmax temperature (0 = greedy).")
flags.DEFINE_integer("top_k", 200, "sample: keep the k most likely tokens (0 = all).")
flags.DEFINE_float("top_p", 1.0, "sample: keep the smallest set with this much mass.")
flags.DEFINE_integer("seed", 0, "sample: the same seed gives the same text.")
flags.DEFINE_integer("num_samples", 1, "sample: independent continuations of the prompt (the "
                     "first is shown as it is generated, the others at the end).")
flags.DEFINE_integer("num", 64, f"sample (images): how many images (at most {MAX_IMAGES}).")
flags.DEFINE_string("out", None, "sample (images): the PNG file to write.")
flags.DEFINE_bool("interpolate", False, "sample (images): a latent interpolation strip.")
flags.DEFINE_string("input", None, "translate: the text, one sentence per line.")
flags.DEFINE_integer("beam_size", None, "translate: beams (1 = greedy; default: the run's).")
flags.DEFINE_float("length_penalty", None, "translate: GNMT alpha (default: the run's).")


def fail(message: str, status: int = 2):
    print(f"fmjax: error: {message}", file=sys.stderr)
    sys.exit(status)


def _config_error(error: BaseException, argv: list[str]) -> str:
    """One readable line for an error raised while parsing flags or loading the config file.

    config_flags wraps errors (sometimes with a traceback inside the message), so look for the
    user-facing part: our own UserError, an unknown override key, or the innermost message.
    """
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    texts = [str(e) for e in chain]
    for text in texts:
        if "UserError: " in text:
            return text.rsplit("UserError: ", 1)[1].strip().splitlines()[0]
    overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    unknown = [str(e.args[0]) if isinstance(e, KeyError) else str(e).split("'")[1]
               for e in chain if isinstance(e, (KeyError, flags.UnrecognizedFlagError))]
    if unknown:
        key = unknown[-1]
        flag = next((o for o in overrides if key in o.split(".") or o == f"--{key}"), key)
        return f"unknown config key {flag}: the experiment's config has no such key"
    if isinstance(chain[0], flags.Error):
        return texts[0].strip().splitlines()[0]
    lines = [line.strip() for line in texts[-1].splitlines() if line.strip()]
    return lines[-1] if lines else type(chain[-1]).__name__


def _parse(argv: list[str]) -> str:
    """Parse flags and load the config file now, so every config error is reported here."""
    if len(argv) < 2 or argv[1] not in COMMANDS:
        fail(USAGE)
    config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config_arg is None and "--config" in argv[:-1]:
        config_arg = argv[argv.index("--config") + 1]
    if config_arg is not None and not pathlib.Path(config_arg.split(":")[0]).is_file():
        fail(f"config file not found: {config_arg.split(':')[0]}")
    try:
        FLAGS([argv[0]] + argv[2:])
        if FLAGS.config is not None:
            FLAGS.config.keys()   # config_flags loads the file lazily; load it now
    except Exception as e:  # flag errors, and experiment files that raise while building
        fail(_config_error(e, argv))
    return argv[1]


def _require(name: str):
    value = getattr(FLAGS, name)
    if value is None:
        fail(f"--{name} is required for this command")
    return value


def cmd_train():
    from fmjax.train import train_and_evaluate
    metrics = train_and_evaluate(_require("config"), _require("workdir"),
                                 show_progress=FLAGS.progress)
    print(json.dumps(metrics, sort_keys=True))


def cmd_eval():
    from fmjax import checkpoint, configs
    from fmjax.train import evaluate, prepare
    from fmjax.step import make_eval_step

    workdir = pathlib.Path(_require("workdir"))
    config_path = workdir / "config.json"
    if not config_path.exists():
        fail(f"{workdir} holds no fmjax run (no config.json)")
    config = configs.from_json_dict(json.loads(config_path.read_text()))
    _fit_mesh_to_devices(config)
    exp = prepare(config, workdir)
    manager = checkpoint.read_only_manager(workdir)
    steps = manager.all_steps() if manager else []
    step = FLAGS.step if FLAGS.step is not None else exp.latest_step
    if step not in steps:
        fail(f"no checkpoint at step {step} in {workdir} (have: {sorted(steps)})")
    import jax
    with jax.set_mesh(exp.mesh):
        state = checkpoint.restore(manager, step, exp.abstract_state)
        metrics = evaluate(exp, state, make_eval_step(exp.task, exp.mesh, exp.state_shardings))
    print(json.dumps({"step": step, **metrics}, sort_keys=True))


def _fit_mesh_to_devices(config) -> None:
    """A run trained on a mesh this machine cannot form (e.g. 8 devices, evaluated on 1) is
    evaluated with FSDP over every device here: the batch still splits over all of them, and the
    parameters are sharded as finely as they can be, so a model that needed model parallelism to
    fit still has the best chance to. The checkpoint is restored onto that mesh (resharded)."""
    import jax
    from fmjax import sharding
    from fmjax.errors import UserError
    try:
        sharding.mesh_shape(config.mesh, jax.device_count())
    except UserError:
        trained = {a: config.mesh[a] for a in sharding.MESH_AXES}
        config.mesh.update(data=1, fsdp=-1, tensor=1)
        print(f"fmjax: the run's mesh {trained} does not fit the devices here "
              f"({jax.device_count()}); evaluating with fsdp={jax.device_count()}",
              file=sys.stderr)


def cmd_inspect():
    from fmjax.inspect_params import param_table
    from fmjax.train import prepare
    print(param_table(prepare(_require("config"))))


def cmd_sample():
    import os
    import signal

    from fmjax import runs, sampling
    sampling.check_options(FLAGS.max_new_tokens, FLAGS.num_samples, FLAGS.temperature,
                           FLAGS.top_k, FLAGS.top_p)   # before the minutes a restore may take
    if not 1 <= FLAGS.num <= MAX_IMAGES:
        fail(f"--num must be between 1 and {MAX_IMAGES} (got {FLAGS.num})")
    run = runs.restore(_require("workdir"), FLAGS.step)
    if run.config.task != "lm":
        return sample_images(run)
    tokenizer = runs.tokenizer(run)
    prompt_P = tokenizer.encode(FLAGS.prompt)
    chunks = sampling.generate_chunks(run.task.model, run.params, prompt_P, FLAGS.max_new_tokens,
                                      FLAGS.seed, FLAGS.num_samples, FLAGS.temperature,
                                      FLAGS.top_k, FLAGS.top_p)
    try:
        sampling.write_samples(sys.stdout, tokenizer, prompt_P, chunks, FLAGS.num_samples)
    except BrokenPipeError:   # e.g. `fmjax sample ... | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no error at exit
        sys.exit(128 + signal.SIGPIPE)   # what a shell reports for `yes | head`


def sample_images(run):
    """`fmjax sample` for image generators: a grid of samples, or a latent interpolation."""
    from fmjax import image_grid
    if not hasattr(run.task, "sample_images"):
        fail(f"{run.workdir} holds a '{run.config.task}' run, which generates nothing to sample")
    out = _require("out")
    if FLAGS.interpolate:
        images = run.task.interpolate(run.params, run.extra, FLAGS.num, FLAGS.seed)
        columns = FLAGS.num
    else:
        images = run.task.sample_images(run.params, run.extra, FLAGS.num, FLAGS.seed)
        columns = None
    image_grid.save_png(out, images, columns=columns)
    what = "an interpolation strip of" if FLAGS.interpolate else "a grid of"
    print(f"wrote {out}: {what} {FLAGS.num} images from the checkpoint at step {run.step}")


def cmd_translate():
    from fmjax import runs
    run = runs.restore(_require("workdir"), FLAGS.step)
    if run.config.task != "translation":
        fail(f"{run.workdir} holds a '{run.config.task}' run, not a translation model")
    run.task.tokenizer = runs.tokenizer(run)
    options = run.task.options
    beam_size = options.beam_size if FLAGS.beam_size is None else FLAGS.beam_size
    if beam_size < 1:
        fail("--beam_size must be at least 1")
    length_penalty = (options.length_penalty if FLAGS.length_penalty is None
                      else FLAGS.length_penalty)
    lines = _require("input").splitlines() or [""]
    print("\n".join(run.task.translate(run.params, lines, beam_size, length_penalty)))


def run(argv: list[str] | None = None) -> None:
    """Entry point of the `fmjax` script."""
    from absl import logging

    from fmjax.errors import NonFiniteLoss, Preempted, UserError

    logging.set_verbosity(logging.ERROR)   # keep library chatter (orbax) off the console
    argv = sys.argv if argv is None else argv
    if argv[1:2] == ["launch_local"]:
        from fmjax import launch
        sys.exit(launch.main(argv[2:], COMMANDS))
    # Before the config file loads: importing fmjax's tasks already runs JAX code.
    from fmjax import distributed
    try:
        distributed.initialize_from_env()
    except UserError as e:
        fail(str(e))
    with distributed.failures_exit_at_once():
        command = _parse(argv)
        try:
            {"train": cmd_train, "eval": cmd_eval, "inspect": cmd_inspect, "sample": cmd_sample,
             "translate": cmd_translate}[command]()
        except UserError as e:
            fail(str(e))
        except NonFiniteLoss as e:
            fail(str(e), status=1)
        except Preempted as e:   # 128 + SIGTERM: "terminated", so schedulers restart the job
            print(f"fmjax: {e}", file=sys.stderr)
            sys.exit(PREEMPTED_STATUS)


if __name__ == "__main__":
    run()
