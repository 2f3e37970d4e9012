"""STAND-IN (helper C, delete at merge): the smallest versions of helper A's `quantization`
functions that `fmjax compress` calls, so it can be built and tested before they land. Same
names and signatures as the lead's design."""

import jax
import jax.numpy as jnp
import qwix

from fmjax.errors import UserError

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

