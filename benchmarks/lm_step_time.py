"""In-process time of fmjax's fused train call for the character GPT (no start-up, no eval).

Used for the per-change figures in benchmarks/RESULTS.md (attention on CPU, biases, fused QKV):
builds `experiments/shakespeare/gpt_char.py:cpu` on the given text, compiles the K-step train
call, runs one warm-up call and times three more.

    python benchmarks/lm_step_time.py --text input.txt [--steps_per_call 50] [--set model.use_bias=False]
"""

import argparse
import importlib.util
import pathlib
import time

import jax
import numpy as np

from fmjax import sharding, state as state_lib, train
from fmjax.step import make_train_call

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", required=True)
    parser.add_argument("--steps_per_call", type=int, default=50)
    parser.add_argument("--set", action="append", default=[], help="section.key=value override")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location(
        "gpt_char", ROOT / "experiments" / "shakespeare" / "gpt_char.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(cpu=True)
    config.data.path = args.text
    config.train.steps_per_call = args.steps_per_call
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        old = config[section][name]
        config[section][name] = value == "True" if isinstance(old, bool) else type(old)(value)
    exp = train.prepare(config)
    k = config.train.steps_per_call
    call = make_train_call(exp.task, exp.tx, exp.lr_schedule, config, exp.mesh,
                           exp.state_shardings)
    state = state_lib.init_state(exp.task, exp.tx, 0, exp.mesh, exp.rules, exp.abstract_state)
    batches = exp.pipeline.train_iterator(0, config.train.batch_size)
    with jax.set_mesh(exp.mesh):
        calls = [sharding.global_batch(jax.tree.map(lambda *x: np.stack(x),
                                                    *[next(batches) for _ in range(k)]),
                                       exp.mesh, 1) for _ in range(4)]
        state, metrics = call(state, calls[0])
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for batch in calls[1:]:
            state, metrics = call(state, batch)
        jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / (3 * k)
    tokens = config.train.batch_size * config.data.seq_len
    print(f"{' '.join(args.set) or 'defaults'}: {seconds * 1e3:.2f} ms per step, "
          f"{tokens / seconds:,.0f} tokens/s")


if __name__ == "__main__":
    main()
