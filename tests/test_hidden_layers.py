"""`hidden_sizes` and `activation` build the layers they name, in the MLP and the CNN heads; a
contradictory or unknown value is one line."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from fmjax import configs, train
from fmjax.errors import UserError
from fmjax.models.cnn import CNN1D, CNN2D
from fmjax.models.mlp import MLP

# Written from their definitions, not with the functions fmjax/models/hidden.py picks.
REFERENCE = {
    "relu": lambda x: jnp.maximum(x, 0),
    "tanh": jnp.tanh,
    "sigmoid": lambda x: 1 / (1 + jnp.exp(-x)),
    "gelu": lambda x: x * (1 + jax.scipy.special.erf(x / jnp.sqrt(2))) / 2,
    "leaky_relu": lambda x: jnp.where(x > 0, x, 0.01 * x),
}


def _init(model, x):
    return nn.unbox(jax.jit(model.init)(jax.random.key(0), x))["params"]


def _shapes_of(model, x) -> dict[str, tuple]:
    """Kernel shapes without computing anything (eager init of convolutions takes seconds)."""
    return _shapes(nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x))["params"])


def _shapes(params) -> dict[str, tuple]:
    return {name: layer["kernel"].shape for name, layer in params.items() if "kernel" in layer}


def _reference_mlp(params, x_BF, activation: str):
    h_BF = x_BF
    for name in ("hidden_0", "hidden_1"):
        h_BF = REFERENCE[activation](h_BF @ params[name]["kernel"] + params[name]["bias"])
    return h_BF @ params["head"]["kernel"] + params["head"]["bias"]


def test_mlp_computes_the_stack_of_widths_and_activation_it_names():
    x_BF = jax.random.normal(jax.random.key(1), (3, 12))
    mlps = {name: MLP(10, hidden_sizes=(16, 8), activation=name, residual=False)
            for name in REFERENCE}
    params = _init(mlps["relu"], x_BF)   # the activation does not change the parameters
    assert _shapes(params) == {"hidden_0": (12, 16), "hidden_1": (16, 8), "head": (8, 10)}

    @jax.jit   # one compilation for all five
    def ours_and_reference(params):
        return {name: (mlp.apply({"params": params}, x_BF), _reference_mlp(params, x_BF, name))
                for name, mlp in mlps.items()}

    for name, (ours_BL, reference_BL) in ours_and_reference(params).items():
        np.testing.assert_allclose(ours_BL, reference_BL, rtol=1e-5, atol=1e-6, err_msg=name)


def test_cnn_heads_take_hidden_sizes_and_apply_the_activation_between_them():
    x_BYXC = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    cnn2d = CNN2D(10, features=(4,), hidden_sizes=(16, 8), activation="tanh")
    params = _init(cnn2d, x_BYXC)
    assert _shapes(params) == {"conv_0": (3, 3, 1, 4), "hidden": (64, 16), "hidden_1": (16, 8),
                               "head": (8, 10)}
    apply = jax.jit(lambda p, x: cnn2d.apply(p, x, capture_intermediates=True,
                                             mutable=["intermediates"]))
    _, captured = apply({"params": params}, x_BYXC)
    pre_BW = captured["intermediates"]["hidden"]["__call__"][0]   # before the activation
    expected_BW = jnp.tanh(pre_BW) @ params["hidden_1"]["kernel"] + params["hidden_1"]["bias"]
    np.testing.assert_allclose(captured["intermediates"]["hidden_1"]["__call__"][0],
                               expected_BW, rtol=1e-5, atol=1e-6)
    # CNN1D's head is linear unless hidden_sizes asks for hidden layers.
    x_BT = jnp.ones((2, 40))
    assert _shapes_of(CNN1D(10), x_BT)["head"] == (125, 10)
    assert {k: v for k, v in _shapes_of(CNN1D(10, hidden_sizes=(16,)), x_BT).items()
            if not k.startswith("conv")} == {"hidden_0": (125, 16), "head": (16, 10)}


def test_hidden_sizes_that_agree_with_hidden_size_and_num_layers_are_accepted():
    assert MLP(10, hidden_sizes=(64, 64), hidden_size=64, num_layers=2).widths() == (64, 64)
    assert MLP(10, hidden_size=32, num_layers=3).widths() == (32, 32, 32)
    assert CNN2D(10, hidden_sizes=(128,), hidden_size=128).widths() == (128,)


@pytest.mark.parametrize("build, message", [
    (lambda: MLP(10, activation="swish"),
     "config.model.activation='swish' is unknown (known: relu, tanh, sigmoid, gelu, leaky_relu)"),
    (lambda: CNN1D(10, activation="ReLU"),
     "config.model.activation='ReLU' is unknown (known: relu, tanh, sigmoid, gelu, leaky_relu)"),
    (lambda: MLP(10, hidden_sizes=(32, 16)),
     "config.model: residual=True needs equal widths, not hidden_sizes=(32, 16); "
     "set residual=False"),
    (lambda: MLP(10, hidden_sizes=(32, 16), num_layers=3, residual=False),
     "config.model: hidden_sizes=(32, 16) replaces hidden_size and num_layers, which disagree "
     "with it (num_layers=3); leave them at their defaults"),
    (lambda: CNN2D(10, hidden_sizes=(32,), hidden_size=64),
     "config.model: hidden_sizes=(32,) replaces hidden_size, which disagree with it "
     "(hidden_size=64); leave them at their defaults"),
])
def test_unknown_or_contradictory_values_are_one_user_error(build, message):
    with pytest.raises(UserError) as error:
        build()
    assert str(error.value) == message


def test_a_zero_width_is_refused_by_the_range_check():
    config = configs.load_experiment(f"{REPO / 'experiments/mnist/dnn.py'}:digits")
    config.model.hidden_sizes = (2048, 0)
    with pytest.raises(UserError) as error:
        configs.validate(config)
    assert str(error.value) == ("config.model.hidden_sizes[1]=0 is out of range: must be an "
                                "integer in [1, 2**31 - 1]")


def test_an_unknown_activation_stops_prepare_before_any_work():
    """`prepare` runs before the workdir is written; the CLI prints a UserError raised there as
    its one line (tests/test_lm.py checks that for the GPT's `remat`)."""
    config = configs.load_experiment(f"{REPO / 'experiments/mnist/dnn.py'}:digits")
    config.model.activation = "swish"
    with pytest.raises(UserError, match=r"^config.model.activation='swish' is unknown "):
        train.prepare(config)
