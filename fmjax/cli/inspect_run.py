"""`fmjax inspect`: the parameter table of an experiment on the chosen mesh, and what the
compiler makes of its train step."""

import math
import re

import jax
import numpy as np

from fmjax.tree_paths import path_name


def _bytes_per_device(leaf) -> int:
    return math.prod(leaf.sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize


def _row(path, leaf, logical):
    return (path_name(path), str(tuple(leaf.shape)),
            str(tuple(logical) if logical is not None else ()), str(tuple(leaf.sharding.spec)),
            f"{_bytes_per_device(leaf):,}")


def lowered_train_step(exp):
    """One train step (`steps_per_call=1`) lowered ahead of time from shapes: nothing is
    allocated, so compiling it answers "will this fit?" before a run."""
    from fmjax.step import make_train_call
    config = exp.config.copy_and_resolve_references()
    config.train.steps_per_call = 1
    call = make_train_call(exp.task, exp.tx, exp.lr_schedule, config, exp.mesh,
                           exp.state_shardings)
    batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((1, config.train.batch_size, *x.shape[1:]), x.dtype),
        exp.task.example_batch())
    with jax.set_mesh(exp.mesh):
        return call.lower(exp.abstract_state, batch)


def sharding_constraint_count(lowered) -> int:
    """Sharding constraints in the lowered step, forward and backward (Shardy or GSPMD form):
    the models' activation constraints, and the micro-batches' under grad_accum_steps > 1."""
    return len(re.findall(r"sdy\.sharding_constraint|custom_call @Sharding\(", lowered.as_text()))


def compiled_step_memory(lowered) -> dict[str, int]:
    """XLA's own per-device accounting of the compiled step."""
    analysis = lowered.compile().memory_analysis()
    names = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
             "temp_size_in_bytes")
    return {n.removesuffix("_size_in_bytes"): int(getattr(analysis, n)) for n in names}


def param_table(exp) -> str:
    """One row per parameter, per-module counts, and per-device bytes of params and optimizer."""
    import flax.linen as nn

    from fmjax import state as state_lib
    with nn.logical_axis_rules(exp.rules):
        boxed = jax.eval_shape(lambda: state_lib.init_boxed(exp.task, exp.tx, 0))
    logical = nn.get_partition_spec(boxed.params)
    params = exp.abstract_state.params
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_logical = jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    rows = [("parameter", "shape", "logical axes", "mesh sharding", "bytes/device")]
    rows += [_row(p, leaf, spec) for (p, leaf), spec in zip(flat, flat_logical)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))

    per_module: dict[str, int] = {}
    for path, leaf in flat:
        module = path_name(path[:1])
        per_module[module] = per_module.get(module, 0) + math.prod(leaf.shape)
    total = sum(per_module.values())
    param_bytes = sum(_bytes_per_device(x) for x in jax.tree.leaves(params))
    opt_bytes = sum(_bytes_per_device(x) for x in jax.tree.leaves(exp.abstract_state.opt_state))
    lines += ["", "parameters per module: " + ", ".join(f"{m}={n:,}" for m, n in per_module.items()),
              f"total parameters: {total:,}",
              f"mesh: {dict(exp.mesh.shape)} on {exp.mesh.devices.size} {jax.devices()[0].platform} "
              f"device(s)",
              f"bytes per device: params {param_bytes:,}, optimizer state {opt_bytes:,}, "
              f"total {param_bytes + opt_bytes:,}"]
    lowered = lowered_train_step(exp)
    lines.append(f"lowered train step: {sharding_constraint_count(lowered)} sharding constraints "
                 "(activations, forward and backward)")
    m = compiled_step_memory(lowered)
    lines.append(f"compiled train step, bytes per device: arguments {m['argument']:,} (state + "
                 f"batch), temporaries {m['temp']:,} (activations, gradients, workspace), "
                 f"outputs {m['output']:,} of which {m['alias']:,} reuse donated arguments")
    return "\n".join(lines)
