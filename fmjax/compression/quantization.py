"""Quantization through Qwix: the `config.quantization` section, the model wrapper every task
builds its model through, and the conversion of float params into stored low-precision ones.

One wrapper serves both uses. `converted=False` with a method: Qwix QAT (`QtProvider`), float
params, fake quantization in the forward pass, straight-through gradients. `converted=True`: Qwix
PTQ (`PtqProvider`), the params ARE the stored quantized weights (`WithAux(QArray(qvalue,
scale))`) that `convert` wrote. The same rules drive both, so `convert` of a QAT run's params
gives the outputs the QAT model computed (tests/test_quantization.py states the bound).

Which ops are quantized: every einsum / dot_general with a weight operand (Dense, Conv1D,
attention projections, MLPs, heads); `nn.Conv` (CNN2D, ResNet) only under int8_dynamic, because
Qwix's PTQ convolution needs int activations too. Never a token-embedding table (its lookup and
its tied `attend` stay float), never an op between two activations (attention's q.k and probs.v
stay float also under int8_dynamic).
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from fmjax.errors import UserError
from fmjax.ranges import PositiveInt

METHODS = ("int8", "int4", "int8_dynamic")
# Qwix's weight_calibration_method names -> how many numbers may follow them ("rms,3").
CALIBRATIONS = {"absmax": (0, 1), "minmax": (0, 1), "rms": (1,), "fixed": (2,)}
# Model families Qwix handles here (the GRU's and LSTM's recurrent kernels, used inside
# `lax.scan`, stay float: Qwix does not see them as weights there); the generative families are
# not compression targets.
SUPPORTED_MODELS = ("logreg", "mlp", "cnn1d", "cnn2d", "gru", "lstm", "resnet", "gpt", "vit",
                    "bert", "seq2seq")
EMBED_MODULES = r"(.*/)?token_embed"   # nn.Embed modules: lookup tables stay float
_QTYPES = {"int8": jnp.int8, "int4": jnp.int4, "int8_dynamic": jnp.int8}


@dataclasses.dataclass
class QuantizationOptions:
    """config.quantization."""
    method: str = ""               # "" = off | int8 | int4 | int8_dynamic
    group_size: PositiveInt = 32   # int4: scale tile along each weight's innermost contraction axis
    calibration: str = "absmax"    # qwix weight_calibration_method, e.g. 'absmax,0.9', 'rms,3'
    converted: bool = False        # params stored quantized (written only by `fmjax compress`)


def defaults() -> dict:
    return dataclasses.asdict(QuantizationOptions())


def validate(config: ml_collections.ConfigDict) -> None:
    """UserError (one line) for a bad `config.quantization` or a model it cannot handle."""
    q = config.quantization
    if q.method not in ("",) + METHODS:
        raise UserError(f"unknown config.quantization.method '{q.method}' "
                        f"(known: {', '.join(METHODS)}; '' = off)")
    check_calibration(q.calibration, "config.quantization.calibration")
    if q.converted and not q.method:
        raise UserError("config.quantization.converted=True needs config.quantization.method")
    check_supported(config)


def check_calibration(calibration: str, key: str) -> None:
    """UserError unless `calibration` is a Qwix weight calibration whose scales are usable
    (`key`: the config key or flag it came from)."""
    name, *numbers = calibration.split(",")
    try:
        values = [float(n) for n in numbers]
        valid = len(numbers) in CALIBRATIONS.get(name, ()) and all(map(math.isfinite, values))
    except ValueError:
        valid = False
    if valid and name == "fixed":   # Qwix: the range must contain 0 and be non-empty
        valid = values[0] <= 0 <= values[1] and values[0] < values[1]
    elif valid and values:   # a scale of the absmax / minmax / rms value
        valid = values[0] > 0
    if not valid:
        raise UserError(f"{key}={calibration!r} is not one of "
                        "absmax[,SCALE], minmax[,SCALE], rms,SCALE (SCALE > 0), "
                        "fixed,MIN,MAX (MIN <= 0 <= MAX, MIN < MAX)")


def check_supported(config: ml_collections.ConfigDict) -> None:
    """UserError for a model family the method cannot handle."""
    name = config.model.name
    if config.quantization.method and name not in SUPPORTED_MODELS:
        raise UserError(f"config.quantization: the '{name}' model cannot be quantized by qwix "
                        f"(supported: {', '.join(SUPPORTED_MODELS)})")


def check_trainable(config: ml_collections.ConfigDict) -> None:
    """`fmjax train` refuses a converted run: its params are integers with scales."""
    if config.quantization.converted:
        raise UserError("this config holds weights quantized by fmjax compress "
                        "(config.quantization.converted=True); to train from them use "
                        "--config.init_from=RUN with a float config")


def rules(qconfig) -> list:
    """Qwix rules for `qconfig`: embedding tables float, every weight op quantized. int4's
    `tile_size` is only a marker here: `_provider_class` fits it to each op's contraction axis."""
    import qwix
    keep_float = [qwix.QuantizationRule(module_path=EMBED_MODULES)]
    if qconfig.method != "int8_dynamic":   # Qwix PTQ convolves only int x int (same qtypes)
        keep_float.append(qwix.QuantizationRule(op_names=("conv_general_dilated",)))
    quantize = qwix.QuantizationRule(
        module_path=".*", weight_qtype=_QTYPES[qconfig.method],
        act_qtype=jnp.int8 if qconfig.method == "int8_dynamic" else None,
        tile_size=qconfig.group_size if qconfig.method == "int4" else None,
        weight_calibration_method=qconfig.calibration)
    return keep_float + [quantize]


def tile_size(axis_size: int, group_size: int) -> int | None:
    """The int4 tile along a contraction axis of `axis_size`: the largest divisor <= group_size;
    None (one scale per output channel) when that is the whole axis or under group_size / 4
    (tiles that small would store about as many f32 scales as int4 values)."""
    tile = max(d for d in range(1, min(axis_size, group_size) + 1) if axis_size % d == 0)
    return None if tile == axis_size or tile < group_size / 4 else tile


def wrap_model(module, qconfig):
    """`module` with Qwix quantization per `qconfig` (QAT, or PTQ when converted); `module`
    itself when the method is ''. Methods `encode`/`decode` are wrapped too where they exist."""
    if not qconfig.method:
        return module
    import qwix
    base = qwix.PtqProvider if qconfig.converted else qwix.QtProvider
    provider = _provider_class(base)(rules(qconfig))
    provider.group_size = qconfig.group_size
    methods = ("__call__",) + tuple(m for m in ("encode", "decode") if hasattr(module, m))
    return qwix.quantize_model(module, provider, methods=methods)


def convert(task, float_params) -> Any:
    """Float params (plain arrays, no boxes) -> the params of `task` (whose config has
    `converted=True`): each weight stored as its quantized value and scales."""
    import qwix
    abstract = jax.eval_shape(lambda: task.init(jax.random.key(0)))["params"]
    return jax.jit(lambda p: qwix.quantize_params(p, abstract))(float_params)


def dequantize(params) -> Any:
    """Quantized params -> float params with the float model's paths and shapes."""
    import qwix
    from qwix._src.providers.ptq import WithAux
    return jax.tree.map(lambda x: qwix.dequantize(x.array) if isinstance(x, WithAux) else x,
                        params, is_leaf=lambda x: isinstance(x, WithAux))


def dequantize_stored(qvalue, scale, zero_point=None) -> jax.Array:
    """One weight from the arrays a checkpoint stores it as (for `init_from` a quantized run,
    fmjax/checkpoint.py)."""
    import qwix
    return qwix.dequantize(qwix.QArray(qvalue, scale, zero_point, qtype=qvalue.dtype))


# The arrays a weight stored as Qwix's WithAux(QArray) is saved as, under its path + "/array/".
STORED_PARTS = ("qvalue", "scale", "zero_point")
_STORED = tuple(f"/array/{part}" for part in STORED_PARTS)


def float_shapes(saved: dict[str, tuple]) -> tuple[dict[str, tuple], bool]:
    """A checkpoint's {array path: shape} with each stored quantized weight named and shaped
    like the float weight it stands for; and whether there was any."""
    out = {}
    for name, shape in saved.items():
        if name.endswith(_STORED[0]):
            out[name[:-len(_STORED[0])]] = shape
        elif not name.endswith(_STORED[1:]):
            out[name] = shape
    return out, len(out) < len(saved)


def _is_weight(x) -> bool:
    from qwix._src.providers.ptq import WithAux
    from qwix._src.utils import flax_util
    return isinstance(x, WithAux) or flax_util.find_param(x) is not None


def _last_contraction_size(einsum_str: str, operands) -> int | None:
    """Size of the weight operand's contracted axis in `einsum_str` (2 operands); None when it
    contracts over several (a conv kernel's window and channels, attention's heads and head
    width): such weights get one scale per output channel, since Qwix's QAT einsum and its PTQ
    einsum would tile different ones of those axes."""
    inputs, out = einsum_str.replace(" ", "").split("->")
    subs = inputs.split(",")
    for i, x in enumerate(operands):
        if _is_weight(x):
            other = set(subs[1 - i])
            axes = [a for a, ch in enumerate(subs[i]) if ch in other and ch not in out]
            return x.shape[axes[0]] if len(axes) == 1 else None
    return None


def _provider_class(base):
    """`base` (a Qwix provider class) that quantizes only ops with a weight operand and fits
    int4's tile to each op's contraction axis (Qwix takes one tile size per rule)."""

    class FittedProvider(base):
        group_size = 32
        _axis_size = None

        def _get_current_rule_and_op_id(self, op_name, **kwargs):
            rule, op_id = super()._get_current_rule_and_op_id(op_name, **kwargs)
            if rule is not None and rule.tile_size:
                fitted = tile_size(self._axis_size, self.group_size) if self._axis_size else None
                rule = dataclasses.replace(rule, tile_size=fitted)
            return rule, op_id

        def _with_axis(self, size, call):
            self._axis_size = size
            try:
                return call()
            finally:
                self._axis_size = None

        def einsum(self, einsum_str, *operands, **kwargs):
            if len(operands) != 2 or not any(_is_weight(x) for x in operands):
                return jnp.einsum(einsum_str, *operands, **kwargs)
            return self._with_axis(_last_contraction_size(einsum_str, operands),
                                   lambda: super(FittedProvider, self).einsum(
                                       einsum_str, *operands, **kwargs))

        def dot_general(self, lhs, rhs, dimension_numbers, *args, **kwargs):
            if not (_is_weight(lhs) or _is_weight(rhs)):
                return jax.lax.dot_general(lhs, rhs, dimension_numbers, *args, **kwargs)
            (lhs_axes, rhs_axes), _ = dimension_numbers
            weight, axes = (rhs, rhs_axes) if _is_weight(rhs) else (lhs, lhs_axes)
            size = weight.shape[axes[0]] if len(axes) == 1 else None   # as for einsum
            return self._with_axis(size, lambda: super(FittedProvider, self).dot_general(
                lhs, rhs, dimension_numbers, *args, **kwargs))

    FittedProvider.__name__ = f"Fitted{base.__name__}"
    return FittedProvider

