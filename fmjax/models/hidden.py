"""Hidden dense layers of chosen widths and activation: the MLP's body and the CNN heads.

`hidden_sizes` (widths, input side first) is the one way to give a stack of different widths,
such as the seeds' 784 -> 2048 -> 1024 -> 10 DNN; a model's older `hidden_size` (and the MLP's
`num_layers`) still describe equal widths, and stay as they were so that every shipped
experiment keeps its parameter names and numbers.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn

from fmjax.errors import UserError
from fmjax.models.layers import dense, gelu_exact

# GELU is the exact erf form, as in fmjax's Transformers and PyTorch's default; leaky ReLU has
# slope 0.01 for negative inputs (PyTorch's default too).
ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": gelu_exact,
    "leaky_relu": nn.leaky_relu,
}


def check_model(*checks: tuple[bool, str]) -> None:
    """UserError `config.model: <problem>` for the first of `checks` (ok, problem) that fails."""
    for ok, problem in checks:
        if not ok:
            raise UserError(f"config.model: {problem}")


def check_activation(name: str) -> None:
    """UserError listing the known activations unless `name` is one."""
    if name not in ACTIVATIONS:
        raise UserError(f"config.model.activation={name!r} is unknown "
                        f"(known: {', '.join(ACTIVATIONS)})")


def hidden_widths(model: nn.Module, implied: tuple[int, ...],
                  replaced: Sequence[str]) -> tuple[int, ...]:
    """`model.hidden_sizes` if set, else `implied` (what the `replaced` fields describe).

    Setting both is refused unless the `replaced` fields are at their defaults (not chosen) or
    describe the same widths, so that no width the user wrote is silently ignored.
    """
    if not model.hidden_sizes:
        return implied
    widths = tuple(model.hidden_sizes)
    fields = type(model).__dataclass_fields__
    chosen = [f"{name}={getattr(model, name)}" for name in replaced
              if getattr(model, name) != fields[name].default]
    check_model((not chosen or widths == implied,
                 f"hidden_sizes={widths} replaces {' and '.join(replaced)}, which disagree with "
                 f"it ({', '.join(chosen)}); leave them at their defaults"))
    return widths


def hidden_stack(h_BF, widths: Sequence[int], names: Sequence[str], activation: str,
                 dropout_rate: float, train: bool, dtype: Any, residual: bool = False):
    """Dense -> activation -> dropout for each width (inside a compact method): h_BF -> h_BW.

    With `residual`, every layer after the first adds its output to its input (equal widths).
    """
    act = ACTIVATIONS[activation]
    for i, (width, name) in enumerate(zip(widths, names)):
        update_BW = act(dense(width, ("embed", "mlp"), dtype, name=name)(h_BF))
        update_BW = nn.Dropout(dropout_rate, deterministic=not train)(update_BW)
        h_BF = h_BF + update_BW if (residual and i > 0) else update_BW
    return h_BF
