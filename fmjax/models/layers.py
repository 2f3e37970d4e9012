"""Layers whose parameters carry logical axis names, so `fmjax.sharding` can place them."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def partitioned(init, axes: Sequence[str | None]):
    """An initializer whose parameter is boxed with logical axis names."""
    return nn.with_logical_partitioning(init, tuple(axes))


def dense(features: int, axes: tuple[str | None, str | None], dtype: Dtype = jnp.float32,
          name: str | None = None, use_bias: bool = True) -> nn.Dense:
    """nn.Dense with kernel axes `axes` (in, out) and bias axis `axes[1]`."""
    return nn.Dense(features, dtype=dtype, use_bias=use_bias, name=name,
                    kernel_init=partitioned(nn.initializers.lecun_normal(), axes),
                    bias_init=partitioned(nn.initializers.zeros_init(), axes[1:]))


def conv(features: int, kernel_size: Sequence[int], strides: Sequence[int] | int = 1,
         padding: Any = "SAME", dtype: Dtype = jnp.float32, use_bias: bool = True,
         name: str | None = None) -> nn.Conv:
    """nn.Conv with kernel axes (window..., embed, mlp): input channels FSDP, output channels TP."""
    axes = (None,) * len(kernel_size) + ("embed", "mlp")
    return nn.Conv(features, tuple(kernel_size), strides=strides, padding=padding, dtype=dtype,
                   use_bias=use_bias, name=name,
                   kernel_init=partitioned(nn.initializers.lecun_normal(), axes),
                   bias_init=partitioned(nn.initializers.zeros_init(), ("mlp",)))


def batch_norm(train: bool, dtype: Dtype = jnp.float32, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm over the global batch (under jit the mean is taken across all shards)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        name=name,
                        scale_init=partitioned(nn.initializers.ones_init(), ("mlp",)),
                        bias_init=partitioned(nn.initializers.zeros_init(), ("mlp",)))


def constrain_batch(x):
    """Keep activations split over the batch axes (other dimensions left to the compiler)."""
    return nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1))
