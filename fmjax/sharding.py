"""Meshes, logical-axis rules and shardings: the one place that knows about devices.

Models only name axes: parameters ('embed', 'mlp', ...) and activations ('activation_batch',
'activation_embed', ...). `RULES` maps those names to mesh axes ('data', 'fsdp', 'tensor'), and
`config.sharding.rules` can override any of them, so data parallel, FSDP and tensor parallel are
config changes. A parameter dimension that a mesh axis does not divide is replicated instead
(`fmjax inspect` shows the sharding that was actually chosen).
"""

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fmjax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis name -> mesh axes. Parameters and activations have separate names (MaxText's
# convention): a name is placed by its own rule, never left replicated because a rule for another
# use of the same name took its mesh axis first (Flax uses each mesh axis once per array).
PARAM_RULES = (
    ("embed", "fsdp"),       # FSDP: each weight's model dimension is split
    ("mlp", "tensor"),       # Megatron: MLP columns and attention heads split, outputs summed
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("classes", None),
)
# Megatron tensor parallelism: the residual stream ('activation_embed') is whole on every tensor
# shard, and the heads, MLP columns and vocabulary between two matmuls are split. Splitting the
# residual stream too is one override (MaxText's 'activation_embed' -> 'tensor'); on the char GPT
# it traded many more collective permutes for a few percent of temporary memory (2026-11-30).
ACTIVATION_RULES = (
    ("activation_batch", BATCH_AXES),   # data parallel and FSDP both split the batch
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)
RULES = PARAM_RULES + ACTIVATION_RULES


def logical_rules(overrides=()) -> tuple[tuple[str, Any], ...]:
    """`config.sharding.rules` ahead of `RULES`: a name an override mentions takes the override's
    mesh axes, any other name keeps its default."""
    return tuple(_checked_rule(r) for r in overrides) + RULES


def _checked_rule(rule) -> tuple[str, Any]:
    """One override (logical name, mesh axis | tuple of mesh axes | None)."""
    if not (isinstance(rule, (list, tuple)) and len(rule) == 2 and isinstance(rule[0], str)):
        raise UserError(f"config.sharding.rules: {rule!r} is not a (logical name, mesh axes) pair")
    name, axes = rule
    axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
    unknown = set((axes,) if isinstance(axes, str) else axes or ()) - set(MESH_AXES)
    if unknown:
        raise UserError(f"config.sharding.rules: {name!r} -> {axes!r} names mesh axes "
                        f"{sorted(unknown)}; the mesh has {', '.join(MESH_AXES)}")
    return name, axes


def with_rules(fn, rules):
    """`fn`, binding the logical axis rules while it runs, so the `nn.with_logical_constraint`
    calls of models apply (unbound, Flax returns the array unconstrained). Wrap the function jit
    traces: jit's trace cache does not see Flax's rules context, so binding them around the call
    of a jitted function is not enough."""
    @functools.wraps(fn)
    def bound(*args, **kwargs):
        with nn.logical_axis_rules(rules):
            return fn(*args, **kwargs)
    return bound


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
    """Resolve -1 ("the remaining devices") and check the sizes multiply to `num_devices`."""
    sizes = [int(mesh_config[a]) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise UserError("at most one of config.mesh.{data,fsdp,tensor} may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise UserError(f"mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))} does not fit {num_devices} "
                            f"devices: {known} does not divide {num_devices}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices "
                        f"but {num_devices} are available; set config.mesh.* so the sizes "
                        f"multiply to {num_devices} (or use -1 for one axis)")
    return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh with axes (data, fsdp, tensor) in Auto mode, so GSPMD propagates shardings."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape(mesh_config, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "config.train.batch_size") -> None:
    """The global batch must split evenly over the data-parallel devices and the hosts."""
    dp = data_parallel_size(mesh)
    if batch_size % dp:
        raise UserError(f"{what}={batch_size} is not divisible by the data-parallel size {dp} "
                        f"(mesh data*fsdp); use a multiple of {dp}")
    if batch_size % jax.process_count():
        raise UserError(f"{what}={batch_size} is not divisible by the number of hosts "
                        f"{jax.process_count()}")


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drop mesh axes from dimensions they do not divide (those dimensions are replicated)."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[n] for n in names)
        fitted.append(axes if names and dim % size == 0 else None)
    return P(*fitted)


def logical_to_sharding(logical_spec, shape, mesh: Mesh, rules) -> NamedSharding:
    """One array's logical axis names -> a NamedSharding on `mesh` that divides its shape."""
    mesh_spec = nn.logical_to_mesh_axes(logical_spec or (), rules)
    return NamedSharding(mesh, _fit_spec(mesh_spec, tuple(shape), mesh))


def unbox(tree):
    """Strip logical-axis boxes without adding sharding constraints (the shardings are explicit)."""
    return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if isinstance(
        x, nn.LogicallyPartitioned) else x, tree,
        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def tree_shardings(abstract_boxed_tree, mesh: Mesh, rules):
    """Shardings for every array of a tree that may hold `nn.LogicallyPartitioned` boxes.

    Unannotated leaves (optimizer counters) are replicated, and so is anything inside a box whose
    rank differs from its names (e.g. Adafactor's factored second moments).
    """
    def shard_subtree(spec, subtree):
        def one(leaf):
            if len(spec) != leaf.ndim:
                return replicated(mesh)
            return logical_to_sharding(spec, leaf.shape, mesh, rules)
        return jax.tree.map(one, subtree)

    return jax.tree.map(shard_subtree, nn.get_partition_spec(abstract_boxed_tree),
                        unbox(abstract_boxed_tree), is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, leading_dims: int = 0) -> NamedSharding:
    """Arrays whose dimension `leading_dims` is the batch, split over (data, fsdp)."""
    return NamedSharding(mesh, P(*([None] * leading_dims), BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh: Mesh, leading_dims: int = 0) -> dict:
    """Per-host numpy batch -> global jax.Arrays sharded over the batch axes.

    Each host passes only its own slice of the global batch (dimension `leading_dims`).
    """
    sharding = batch_sharding(mesh, leading_dims)

    def to_global(x):
        x = np.asarray(x)
        global_shape = list(x.shape)
        global_shape[leading_dims] *= jax.process_count()
        return jax.make_array_from_process_local_data(sharding, x, tuple(global_shape))

    return jax.tree.map(to_global, local_batch)
