"""The `fmjax` command line: train | eval | inspect | sample | translate | compress | sweep | plot.

    fmjax train   --config experiments/mnist1d/cnn.py[:variant] --workdir runs/cnn [--config.a.b=v]
    fmjax eval    --workdir runs/cnn [--step N]
    fmjax inspect --config experiments/mnist1d/cnn.py [--config.mesh.fsdp=4]
    fmjax sample  --workdir runs/gpt --prompt "ROMEO:" [--max_new_tokens 500 --temperature 0.8
                  --top_k 40 --top_p 1.0 --seed 0 --num_samples 1 --step N]
    fmjax sample  --workdir runs/vae --num 64 --out grid.png [--interpolate] [--seed 0]
    fmjax compress --workdir runs/cnn --out runs/cnn-int8 --method int8|int4|int8_dynamic|prune
                  [--sparsity 0.8 --granularity global --finetune_steps 1000 --step N]
    fmjax translate --workdir runs/mt --input "olá mundo" [--beam_size 4 --length_penalty 0.6]
    fmjax sweep   --config experiments/mnist1d/mlp.py --sweep experiments/mnist1d/sweep_mlp.py
                  --workdir sweeps/mlp [--workers N] [--storage URL] [--vectorize]
    fmjax sweep   --workdir sweeps/mlp --report
    fmjax plot    runs/cnn [runs/mlp sweeps/mlp ...] --out curves.png [--kind curves|roc|pr|
                  confusion|attention|latent --metrics eval/loss,eval/accuracy --step N
                  --split eval|val --input TEXT --example N]
    fmjax launch_local --num_processes=2 --devices_per_process=4 -- train --config ... --workdir ...
    fmjax --help; fmjax COMMAND --help       the commands; a command's flags (fmjax/cli/usage.py)

`python -m fmjax ...` is the same command.

Every command first joins a multi-process run when the environment asks for one
(`fmjax.runtime.distributed`: the FMJAX_* variables `launch_local` sets, or FMJAX_DISTRIBUTED=auto
for JAX's own TPU VM / SLURM / GKE detection).

Bad input (unknown key, wrong type, impossible mesh, indivisible batch, unknown name, missing
dataset, a checkpoint that does not fit) prints one line and exits with status 2 before any work.
"""

import json
import os
import signal
import sys

# XLA's and JAX's C++ warnings ("SIGTERM caught", rematerialisation notes) stay off the console
# like the Python libraries' (fmjax.runtime.library_logs); set it to 0 to see them. Read when
# jaxlib loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402 (after the variable above)
from ml_collections import config_flags  # noqa: E402

from fmjax.cli import usage  # noqa: E402
from fmjax.cli.usage import Command  # noqa: E402

MAX_IMAGES = 4096   # sample --num: a grid, not a dataset
SAMPLE_FLAGS = ("workdir", "step", "prompt", "max_new_tokens", "temperature", "top_k", "top_p",
                "seed", "num_samples", "num", "out", "interpolate")
COMMANDS = {
    "train": Command("Train an experiment, or resume the run in its workdir.",
                     "--config FILE[:variant] --workdir DIR [--config.KEY=VALUE ...] [flags]",
                     ("config", "workdir", "progress")),
    "eval": Command("Evaluate a checkpoint of a run on its eval split; prints one JSON line.",
                    "--workdir DIR [--step N]", ("workdir", "step")),
    "inspect": Command("Print an experiment's parameters, shardings and memory per device.",
                       "--config FILE[:variant] [--config.KEY=VALUE ...]", ("config",)),
    "sample": Command("Generate text from a language model run, or images from a VAE or GAN run.",
                      "--workdir DIR [--prompt TEXT | --out FILE.png] [flags]", SAMPLE_FLAGS),
    "translate": Command("Translate text with a translation run.", "--workdir DIR --input TEXT "
                         "[flags]", ("workdir", "step", "input", "beam_size", "length_penalty")),
    "compress": Command("Quantize or prune a trained run into a new run directory, measured "
                        "before and after (OUT/compression.json).",
                        "--workdir RUN --out OUT --method int8|int4|int8_dynamic|prune [flags]",
                        ("workdir", "out", "method", "step", "sparsity", "granularity",
                         "finetune_steps", "group_size", "calibration")),
    "sweep": Command("Search hyper-parameters (grid, random, bayes): every trial an fmjax run "
                     "in DIR/trials/; the same command resumes.",
                     "--config FILE[:variant] --sweep SWEEP.py --workdir DIR [--workers N] "
                     "[--storage URL] [--config.KEY=VALUE ...] | --workdir DIR --report",
                     ("config", "sweep", "workdir", "workers", "storage", "report", "vectorize")),
    "plot": Command("Draw runs into a PNG: train and eval curves (of several runs or a "
                    "sweep), ROC, PR, confusion, attention maps or VAE latents.",
                    "WORKDIR [WORKDIR ...] --out FILE.png [--kind KIND] [flags]",
                    ("out", "kind", "metrics", "step", "split", "input", "example")),
}
USAGE = (f"usage: fmjax {{{'|'.join(COMMANDS)}|launch_local}} [flags]; `fmjax --help` lists the "
         "commands")


class _ExperimentFileParser(flags.ArgumentParser):
    """Loads `--config FILE[:variant]` with `configs.load_experiment`, whose errors name the file
    (config_flags' own loader names its internal module, and defers some errors)."""

    def parse(self, argument):
        from fmjax import configs
        return configs.load_experiment(argument)

    def flag_type(self):
        return "config object"


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:a,b variants], or a shipped one by name "
    "(mnist1d/cnn.py).", lock_config=True)
FLAGS["config"].parser = _ExperimentFileParser()
flags.DEFINE_string("workdir", None, "Directory (or gs:// URL) for checkpoints, metrics and "
                    "logs; compress: the trained run to compress (only read).")
flags.DEFINE_integer("step", None, "The checkpoint step to load (default: the latest); "
                     "compress: the step of RUN to compress (default: its newest intact "
                     "checkpoint); plot: the evaluated step for roc, pr and confusion, the "
                     "checkpoint for attention and latent (default: the latest).")
flags.DEFINE_bool("progress", True, "train: a progress bar on a terminal or in a notebook; "
                  "elsewhere (a log file), and with --noprogress, one line per train.log_every "
                  "steps and per eval.")
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
flags.DEFINE_string("out", None, "sample (images): the PNG file to write; compress: the new "
                    "run directory to write (must not exist); plot: the PNG file to write "
                    "(replaced if it exists; its directory must exist).")
flags.DEFINE_bool("interpolate", False, "sample (images): a latent interpolation strip.")
flags.DEFINE_string("input", None, "translate: the text, one sentence per line; plot "
                    "(attention): the text whose attention is drawn (default: an eval example).")
flags.DEFINE_integer("beam_size", None, "translate: beams (1 = greedy; default: the run's).")
flags.DEFINE_float("length_penalty", None, "translate: GNMT alpha (default: the run's).")
flags.DEFINE_string("method", None, "compress: the method: int8 (weight-only, per-channel "
                    "scales), int4 (weight-only, grouped scales), int8_dynamic (int8 weights and "
                    "activations) or prune (magnitude pruning).")
flags.DEFINE_float("sparsity", None, "compress (prune): the fraction of prunable weights "
                   "set to zero, in [0, 1).")
flags.DEFINE_string("granularity", None, "compress (prune): 'global' (one magnitude "
                    "threshold over all prunable weights; the default) or 'layer' (the same "
                    "sparsity in each).")
flags.DEFINE_integer("finetune_steps", None, "compress (prune): steps of fine-tuning with "
                     "the pruned weights held at zero (default 0).")
flags.DEFINE_integer("group_size", None, "compress (int4): weights per scale along the "
                     "contraction axis (default 32, or the QAT run's own).")
flags.DEFINE_string("calibration", None, "compress (int8, int4, int8_dynamic): how weight scales "
                    "are chosen (qwix weight_calibration_method: absmax, 'absmax,0.9', 'rms,3', "
                    "minmax, 'fixed,MIN,MAX'; default absmax, or the QAT run's own).")
flags.DEFINE_string("sweep", None, "sweep: the sweep file (get_sweep(): method, metric, "
                    "parameters, ...; experiments/mnist1d/sweep_mlp.py).")
flags.DEFINE_integer("workers", 1, "sweep: trials run at once on this machine, each on its own "
                     "share of the GPUs, TPU chips or CPU cores.")
flags.DEFINE_string("storage", None, "sweep: a database URL (postgresql://, mysql://, sqlite:///) "
                    "shared by hosts that run the same sweep (default: a journal file in DIR).")
flags.DEFINE_bool("report", False, "sweep: print the trials of --workdir sorted by objective.")
flags.DEFINE_string("kind", "curves", "plot: what to draw: curves, roc, pr, confusion, "
                    "attention or latent.")
flags.DEFINE_string("metrics", None, "plot (curves): the metric keys to draw, comma-separated "
                    "(default: train/loss and every eval/ and val/ metric).")
flags.DEFINE_string("split", "eval", "plot: the split whose eval is drawn: eval or val.")
flags.DEFINE_integer("example", 0, "plot (attention, without --input): the index of the "
                     "example of --split drawn.")
flags.DEFINE_bool("vectorize", False, "sweep: train the trials of a grid or random sweep over "
                  "seeds and optimizer numbers as members of one process per worker.")


def fail(message: str, status: int = 2):
    print(f"fmjax: error: {message}", file=sys.stderr)
    sys.exit(status)


def _config_error(error: BaseException, argv: list[str]) -> str:
    """One readable line for an error raised while parsing flags or loading the config file:
    our own UserError (a bad experiment file), an unknown override key, or the flag error."""
    from fmjax.errors import UserError, first_line
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for e in chain:
        if isinstance(e, UserError):
            return first_line(e)
        if isinstance(e, flags.UnrecognizedFlagError) and not e.flagname.startswith("config."):
            return usage.unknown_flag(e.flagname, argv[1], COMMANDS[argv[1]].flags)
    overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    unknown = [str(e.args[0]) if isinstance(e, KeyError) else str(e).split("'")[1]
               for e in chain if isinstance(e, (KeyError, flags.UnrecognizedFlagError))]
    if unknown:
        key = unknown[-1]
        flag = next((o for o in overrides if key in o.split(".") or o == f"--{key}"), key)
        if flag.endswith(".data.validation_fraction"):
            from fmjax.data.validation import NO_VALIDATION_FRACTION
            return f"unknown config key {flag}: {NO_VALIDATION_FRACTION}"
        return f"unknown config key {flag}: the experiment's config has no such key"
    lines = [line.strip() for line in str(chain[0]).splitlines() if line.strip()]
    return lines[0] if lines else type(chain[0]).__name__


def _parse(argv: list[str]) -> tuple[str, list[str]]:
    """Parse flags and load the config file now, so every config error is reported here;
    (the command, its positional arguments)."""
    if len(argv) < 2 or argv[1].startswith("-"):
        fail(USAGE)
    if argv[1] not in COMMANDS:
        fail(f"unknown command '{argv[1]}'; {USAGE}")
    try:
        positional = FLAGS([argv[0]] + argv[2:])[1:]
    except Exception as e:  # flag errors, and experiment files that raise while building
        fail(_config_error(e, argv))
    return argv[1], positional


# Flags naming a path: an empty or blank one would mean the current directory.
PATH_FLAGS = ("out",)   # --workdir: checkpoint.check_workdir, for every caller


def _require(name: str):
    """The value of flag --`name`; one line if it is missing, or blank where it names a path."""
    value = getattr(FLAGS, name)
    if value is None:
        fail(f"--{name} is required for this command")
    if name in PATH_FLAGS and not value.strip():
        fail(f"--{name} is empty; give a path (fmjax would otherwise write into the current "
             "directory)")
    return value


def cmd_train():
    from fmjax.train import train_and_evaluate
    metrics = train_and_evaluate(_require("config"), _require("workdir"),
                                 show_progress=FLAGS.progress)
    print(json.dumps(metrics, sort_keys=True))


def cmd_eval():
    import jax
    from fmjax import runs
    from fmjax.step import make_eval_step
    from fmjax.train import evaluate

    run = runs.load(_require("workdir"), FLAGS.step, with_data=True)
    with jax.set_mesh(run.exp.mesh):
        metrics = evaluate(run.exp, run.state, make_eval_step(run.task, run.exp.mesh,
                                                              run.exp.state_shardings))
    print(json.dumps({"step": run.step, **metrics}, sort_keys=True))


def config_args(argv: list[str]) -> tuple[str, list[str]]:
    """The `--config FILE[:variant]` value and the `--config.KEY=VALUE` overrides, as typed."""
    spec, overrides = "", []
    args = iter(argv[2:])
    for arg in args:
        name, has_value, value = arg.partition("=")
        if name in ("--config", "-config"):
            spec = value if has_value else next(args, "")
        elif name.startswith(("--config.", "-config.")):
            overrides.append(f"--{name.lstrip('-')}={value if has_value else next(args, '')}")
    return spec, overrides


def cmd_sweep(argv: list[str]):
    from fmjax.sweep import command
    workdir = _require("workdir")
    if FLAGS.report:
        try:
            print(command.report(workdir), flush=True)
        except BrokenPipeError:
            _reader_gone()
        return
    experiment, overrides = config_args(argv)
    status = command.main(experiment, overrides, _require("config"), _require("sweep"), workdir,
                          FLAGS.workers, FLAGS.storage, FLAGS.vectorize)
    sys.exit(status)


def cmd_inspect():
    from fmjax.cli.inspect_run import param_table
    from fmjax.train import prepare
    print(param_table(prepare(_require("config"))))


def cmd_sample():
    from fmjax import runs
    from fmjax.decoding import sampling
    sampling.check_options(FLAGS.max_new_tokens, FLAGS.num_samples, FLAGS.temperature,
                           FLAGS.top_k, FLAGS.top_p)   # before the minutes a restore may take
    if not 1 <= FLAGS.num <= MAX_IMAGES:
        fail(f"--num must be between 1 and {MAX_IMAGES} (got {FLAGS.num})")
    run = runs.load(_require("workdir"), FLAGS.step, one_device=True)
    if run.config.task != "lm":
        return sample_images(run)
    tokenizer = run.tokenizer
    prompt_P = tokenizer.encode(FLAGS.prompt)
    chunks = sampling.generate_chunks(run.task.model, run.params, prompt_P, FLAGS.max_new_tokens,
                                      FLAGS.seed, FLAGS.num_samples, FLAGS.temperature,
                                      FLAGS.top_k, FLAGS.top_p)
    try:
        sampling.write_samples(sys.stdout, tokenizer, prompt_P, chunks, FLAGS.num_samples)
    except BrokenPipeError:
        _reader_gone()


def _reader_gone():
    """`fmjax ... | head`: the reader has all it wants; end quietly."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no error at exit
    sys.exit(128 + signal.SIGPIPE)   # what a shell reports for `yes | head`


def sample_images(run):
    """`fmjax sample` for image generators: a grid of samples, or a latent interpolation."""
    from fmjax.metrics import image_grid
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


def cmd_compress():
    from fmjax.compression import command
    options = command.Options(_require("method"), FLAGS.sparsity, FLAGS.granularity,
                              FLAGS.finetune_steps, FLAGS.group_size, FLAGS.calibration)
    record = command.compress(_require("workdir"), _require("out"), options, FLAGS.step)
    print(json.dumps(command.summary(record)))


def cmd_translate():
    from fmjax import runs
    run = runs.load(_require("workdir"), FLAGS.step, one_device=True)
    if run.config.task != "translation":
        fail(f"{run.workdir} holds a '{run.config.task}' run, not a translation model")
    options = run.task.options
    beam_size = options.beam_size if FLAGS.beam_size is None else FLAGS.beam_size
    if beam_size < 1:
        fail("--beam_size must be at least 1")
    length_penalty = (options.length_penalty if FLAGS.length_penalty is None
                      else FLAGS.length_penalty)
    lines = _require("input").splitlines() or [""]
    print("\n".join(run.task.translate(run.params, lines, beam_size, length_penalty)))


def cmd_plot(workdirs: list[str]):
    from fmjax import plots
    out = plots.check_out(_require("out"))   # before the runs are read
    metrics = FLAGS.metrics and tuple(m.strip() for m in FLAGS.metrics.split(",") if m.strip())
    options = plots.PlotOptions(metrics=metrics or None, step=FLAGS.step, split=FLAGS.split,
                                input=FLAGS.input, example=FLAGS.example)
    plots.save(plots.figure(FLAGS.kind, workdirs, options), out)
    print(f"wrote {out}: {FLAGS.kind} of {' '.join(workdirs)}")


def run(argv: list[str] | None = None) -> None:
    """Entry point of the `fmjax` script."""
    from fmjax.errors import Interrupted
    argv = sys.argv if argv is None else argv
    if argv[1:2] == ["sweep"]:   # before JAX is imported: the accelerators are the trials'
        from fmjax.sweep import devices, signals
        devices.pin_sweep_to_cpu()
        if not any(a.startswith(("--report", "-report")) for a in argv):
            signals.catch()   # a Ctrl-C while importing must not be lost
    if usage.requested(argv):
        print(_help(argv[1] if len(argv) > 1 else ""))
        return
    try:
        _run(argv)
    except (KeyboardInterrupt, Interrupted) as e:   # importing JAX, joining the other processes
        _stopped(e)


def _help(command: str) -> str:
    """`fmjax --help`, `fmjax COMMAND --help` or `fmjax launch_local --help`."""
    from fmjax.runtime import launch
    if command == "launch_local":
        return launch.HELP
    if command in COMMANDS:
        return usage.command_help(command, COMMANDS[command], FLAGS)
    return usage.main_help(COMMANDS, launch.SUMMARY)


# The commands that run the model: their backend starts before any other work.
ON_DEVICES = ("train", "eval", "sample", "translate", "compress")


def _start_backend() -> None:
    """Start JAX's backend, so that a JAX_PLATFORMS naming a platform this machine cannot start
    (no GPU, or its JAX plugin not installed: JAX raises a bare AssertionError) is one line."""
    import jax
    try:
        jax.devices()
    except (RuntimeError, AssertionError) as e:
        from fmjax.errors import first_line
        platforms = os.environ.get("JAX_PLATFORMS", "")
        why = (str(e) and first_line(e)) or "its plugin is not installed or finds no device"
        fail(f"JAX cannot start the backend of JAX_PLATFORMS={platforms!r}: {why}"
             if platforms else f"JAX cannot start a backend: {why}")


def _stopped(e: BaseException):
    """Ctrl-C or SIGTERM outside the train loop, where there is nothing to save: one line."""
    from fmjax.errors import stopped_by
    signum = getattr(e, "signum", signal.SIGINT)
    print(f"fmjax: {stopped_by(signum)}", file=sys.stderr)
    sys.exit(128 + signum)


def _run(argv: list[str]) -> None:
    from absl import logging

    from fmjax.runtime import library_logs
    from fmjax.errors import Interrupted, NonFiniteLoss, Preempted, UserError

    logging.set_verbosity(logging.WARNING)
    library_logs.silence()   # library chatter (Orbax, TensorStore) stays off the console
    if argv[1:2] == ["launch_local"]:
        from fmjax.runtime import launch
        sys.exit(launch.main(argv[2:], tuple(COMMANDS)))
    from fmjax.runtime import compilation_cache, preemption
    preemption.take_over_signals()
    # Before the config file loads: it may run JAX code, and JAX must start knowing its processes.
    from fmjax.runtime import distributed
    try:
        if argv[1:2] != ["sweep"]:   # its trials are runs of their own; the sweep joins none
            distributed.initialize_from_env()
    except UserError as e:
        fail(str(e))
    with distributed.failures_exit_at_once():
        try:
            command, positional = _parse(argv)
            # A run that compiles what an earlier one did loads it instead; enabled once the flags
            # and config are read, and nothing compiles on import, so bad input writes nothing.
            compilation_cache.enable()
            if command in ON_DEVICES:
                _start_backend()
            if command == "sweep":
                cmd_sweep(argv)
            elif command == "plot":
                cmd_plot(positional)
            else:
                {"train": cmd_train, "eval": cmd_eval, "inspect": cmd_inspect,
                 "sample": cmd_sample, "translate": cmd_translate,
                 "compress": cmd_compress}[command]()
        except UserError as e:
            fail(str(e))
        except NonFiniteLoss as e:
            fail(str(e), status=1)
        except Preempted as e:   # 128 + the signal: "terminated", so schedulers restart the job
            print(f"fmjax: {e}", file=sys.stderr)
            sys.exit(e.exit_status)
        except (KeyboardInterrupt, Interrupted) as e:   # a peer stuck in a collective: exit now
            _stopped(e)


if __name__ == "__main__":
    run()
