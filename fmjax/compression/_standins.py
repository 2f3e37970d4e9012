"""STAND-IN (helper C, delete at merge): the smallest versions of helper A's `quantization` and
helper B's `pruning` functions that `fmjax compress` calls, so it can be built and tested before
those land. Same names and signatures as the lead's design."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import qwix

from fmjax.errors import UserError
from fmjax.tree_paths import path_name

METHODS = ("int8", "int4", "int8_dynamic")
_QTYPES = {"int8": jnp.int8, "int4": jnp.int4, "int8_dynamic": jnp.int8}


def _rules(qconfig):
    act = jnp.int8 if qconfig.method == "int8_dynamic" else None
    tile = qconfig.group_size if qconfig.method == "int4" else None
    return [qwix.QuantizationRule(module_path="^(?!.*embed).*",
                                  weight_qtype=_QTYPES[qconfig.method],
                                  act_qtype=act, tile_size=tile,
                                  weight_calibration_method=qconfig.calibration)]


def wrap_model(module, qconfig):
    if not qconfig.method:
        return module
    provider = qwix.PtqProvider if qconfig.converted else qwix.QtProvider
    return qwix.quantize_model(module, provider(_rules(qconfig)))


def check_supported(config) -> None:
    if config.quantization.method and config.model.name == "gru":
        raise UserError("config.quantization: the 'gru' model cannot be quantized by qwix")


def convert(task, float_params):
    abstract = jax.eval_shape(lambda: task.init(jax.random.key(0)))
    return qwix.quantize_params(float_params, abstract["params"])


def _prunable(path: str, x, exclude) -> bool:
    return x.ndim >= 2 and "embed" not in path and not any(re.search(p, path) for p in exclude)


def prune(params, sparsity: float, granularity: str, exclude=()):
    flat = {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    names = [n for n, x in flat.items() if _prunable(n, x, exclude)]
    if granularity == "global":
        mags = np.concatenate([np.abs(np.asarray(flat[n])).ravel() for n in names])
        cut = {n: np.quantile(mags, sparsity) for n in names}
    else:
        cut = {n: np.quantile(np.abs(np.asarray(flat[n])), sparsity) for n in names}
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.where(jnp.abs(x) > cut[path_name(p)], x, 0) if path_name(p) in cut
        else x, params)


def sparsity_report(params, exclude=()):
    flat = {path_name(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    layers = {n: float(np.mean(x == 0)) for n, x in flat.items() if _prunable(n, x, exclude)}
    zeros = sum(float(np.sum(flat[n] == 0)) for n in layers)
    return {"total": zeros / max(1, sum(flat[n].size for n in layers)), "layers": layers}


def wrap(tx, pconfig):
    """Masks = the nonzero pattern at init; masked weights get no gradient and no update."""
    def init(params):
        mask = jax.tree.map(lambda x: (x != 0).astype(x.dtype), params)
        return (mask, tx.init(params))

    def update(grads, state, params=None):
        mask, inner = state
        grads = jax.tree.map(jnp.multiply, grads, mask)
        updates, inner = tx.update(grads, inner, params)
        return jax.tree.map(jnp.multiply, updates, mask), (mask, inner)
    return optax.GradientTransformation(init, update)

