"""Quantization (fmjax/compression/quantization.py): Qwix PTQ of every family stays close to
float, the MNIST-1D CNN's convs are quantized, int8_dynamic leaves attention's activation x
activation einsums float, QAT trains and converts exactly, converted state round-trips through
checkpoints and shards on 8 devices, init_from a converted run dequantizes it, and `fmjax
train` refuses a converted run."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, read_metrics, run_cli
from fmjax.compression import quantization

_rng = np.random.RandomState(0)


def _tokens(*shape):
    return jnp.asarray(_rng.randint(1, 60, shape), jnp.int32)


# Tiny model of each family, its inputs, and how many weights int8 / int8_dynamic quantize
# (nn.Conv kernels only under int8_dynamic; embedding tables never).
FAMILIES = {
    "mlp": (dict(num_classes=10), (_rng.randn(4, 40),), 3, 3),
    "cnn1d": (dict(num_classes=10), (_rng.randn(4, 40),), 4, 4),
    "cnn2d": (dict(num_classes=10, features=(8, 16), hidden_size=32),
              (_rng.randn(4, 8, 8, 1),), 2, 4),
    "gru": (dict(num_classes=10), (_rng.randn(4, 40),), 3, 3),   # w_h (in lax.scan) stays float
    "lstm": (dict(num_classes=10), (_rng.randn(4, 40),), 3, 3),  # so does the LSTM's
    "resnet": (dict(num_classes=10, stage_sizes=(1,), features=(8,)),
               (_rng.randn(4, 8, 8, 3),), 1, 4),
    "gpt": (dict(vocab_size=64, max_len=16, num_layers=1, num_heads=2, embed_dim=64),
            (_tokens(4, 16),), 6, 6),
    "vit": (dict(num_classes=10, num_layers=1, num_heads=2, embed_dim=64, patch_size=4),
            (_rng.randn(4, 8, 8, 1),), 8, 8),
    "bert": (dict(vocab_size=64, num_classes=3, max_len=16, num_layers=1, num_heads=2,
                  embed_dim=64), (_tokens(4, 16),), 7, 7),
    "seq2seq": (dict(vocab_size=64, max_len=16, num_layers=1, num_decoder_layers=1, num_heads=2,
                     embed_dim=64), (_tokens(4, 12), _tokens(4, 10)), 16, 16),
}
# Largest |quantized - float| / max|float| of the outputs measured over the families above
# (random init): int8 0.0095, int8_dynamic 0.017, int4 (group 32) 0.27.
TOLERANCE = {"int8": 0.02, "int8_dynamic": 0.03, "int4": 0.35}


def qconfig(method: str, converted: bool) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(quantization.defaults(), method=method,
                                          converted=converted))


def with_aux_leaves(params) -> list:
    from qwix._src.providers.ptq import WithAux
    return [x for x in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, WithAux))
            if isinstance(x, WithAux)]


def ptq(module, float_params, args, method: str):
    """(converted module, its quantized params) for `float_params`."""
    import qwix
    model = quantization.wrap_model(module, qconfig(method, converted=True))
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, train=False))
    return model, jax.jit(lambda p: qwix.quantize_params(p, abstract["params"]))(float_params)


# The README's models run in the default suite; the other families (20-60 s together on 2 busy
# cores) with -m slow.
@pytest.mark.parametrize("family", [f if f in ("cnn1d", "gpt") else pytest.param(
    f, marks=pytest.mark.slow) for f in FAMILIES])
def test_ptq_close_to_float(family):
    import qwix
    from fmjax.models import MODELS
    fields, args, num_weight_only, num_dynamic = FAMILIES[family]
    args = tuple(jnp.asarray(a, jnp.float32) if a.dtype == np.float64 else a for a in args)
    module = MODELS[family](**fields)
    variables = nn.unbox(jax.jit(lambda: module.init(jax.random.key(0), *args, train=False))())
    params, extra = variables.pop("params"), variables
    float_out = jax.jit(lambda p: module.apply({"params": p, **extra}, *args, train=False))(params)
    for method in quantization.METHODS:
        model = quantization.wrap_model(module, qconfig(method, converted=True))
        abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, train=False))

        @jax.jit
        def quantized(p):
            qparams = qwix.quantize_params(p, abstract["params"])
            out = model.apply({"params": qparams, **extra}, *args, train=False)
            return out, qparams, quantization.dequantize(qparams)
        out, qparams, restored = quantized(params)
        error = float(jnp.abs(out - float_out).max() / jnp.abs(float_out).max())
        assert 0 < error < TOLERANCE[method], (method, error)
        stored = with_aux_leaves(qparams)
        assert len(stored) == (num_dynamic if method == "int8_dynamic" else num_weight_only)
        assert {str(w.array.qvalue.dtype) for w in stored} == {method[:4]}
        assert jax.tree.map(jnp.shape, restored) == jax.tree.map(jnp.shape, params)


def test_int4_tiles_fit_each_contraction_axis():
    assert [quantization.tile_size(n, 32) for n in (1, 25, 48, 125, 192, 37)] == [
        None, None, 24, 25, 32, None]


def test_qat_int4_with_small_groups_converts_exactly():
    """A group size that tiles the head (125 inputs: groups of 5) but not the conv kernels, which
    contract over window and channels and keep one scale per channel: QAT and the converted
    model compute the same logits (QAT once tiled another axis than PTQ, and failed to build)."""
    import qwix
    from fmjax import models
    module = models.build_model(ml_collections.ConfigDict(dict(name="cnn1d")), num_classes=10)
    x_BT = jnp.asarray(_rng.randn(8, 40), jnp.float32)
    config = ml_collections.ConfigDict(dict(quantization.defaults(), method="int4", group_size=8))
    qat = quantization.wrap_model(module, config)
    float_params = nn.unbox(qat.init(jax.random.key(0), x_BT)["params"])
    config.converted = True
    converted = quantization.wrap_model(module, config)
    abstract = jax.eval_shape(lambda: converted.init(jax.random.key(0), x_BT))["params"]
    qparams = qwix.quantize_params(float_params, abstract)
    assert qparams["head"]["kernel"].array.scale.shape == (25, 10)
    assert qparams["conv_1"]["kernel"].array.scale.shape == (1, 1, 25)
    qat_BL = jax.jit(lambda p: qat.apply({"params": p}, x_BT))(float_params)
    converted_BL = jax.jit(lambda p: converted.apply({"params": p}, x_BT))(qparams)
    assert float(jnp.abs(converted_BL - qat_BL).max()) < 1e-5


def test_int8_dynamic_keeps_attention_einsums_float():
    """Six int8 x int8 dots (q, k, v, out, up, down); q.k, probs.v and the tied head float."""
    from fmjax.models import MODELS
    fields, (tokens_BT,), _, _ = FAMILIES["gpt"]
    module = MODELS["gpt"](**fields)
    params = nn.unbox(jax.jit(module.init)(jax.random.key(0), tokens_BT))["params"]
    model, qparams = ptq(module, params, (tokens_BT,), "int8_dynamic")
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, tokens_BT))(qparams)
    dots = [[str(v.aval.dtype) for v in e.invars] for e in jaxpr.eqns
            if e.primitive.name == "dot_general"]
    assert sorted(map(tuple, dots)) == [("float32", "float32")] * 3 + [("int8", "int8")] * 6


def test_converted_gpt_decodes_like_the_full_forward():
    """KV-cache decoding (fmjax sample) runs on the stored int8 weights and agrees with the
    converted model's full forward pass."""
    from fmjax.models import MODELS
    from fmjax.models.transformer import empty_cache
    fields, (tokens_BT,), _, _ = FAMILIES["gpt"]
    module = MODELS["gpt"](**fields)
    params = nn.unbox(jax.jit(module.init)(jax.random.key(0), tokens_BT))["params"]
    model, qparams = ptq(module, params, (tokens_BT,), "int8")
    full_BTV = jax.jit(lambda p: model.apply({"params": p}, tokens_BT))(qparams)
    step = jax.jit(lambda p, c, t_B1: model.apply({"params": p, "cache": c}, t_B1, decode=True,
                                                  mutable=["cache"]))
    cache, steps = empty_cache(model, tokens_BT[:, :1]), []
    for t in range(4):
        logits_B1V, mutated = step(qparams, cache, tokens_BT[:, t:t + 1])
        cache = mutated["cache"]
        steps.append(logits_B1V)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full_BTV[:, :4], atol=2e-5)


@pytest.mark.slow
def test_converted_seq2seq_encode_decode_like_the_full_forward():
    """encode/decode (fmjax translate, beam search) run on the stored int8 weights."""
    from fmjax.models import MODELS
    fields, (source_BS, target_BT), _, _ = FAMILIES["seq2seq"]
    module = MODELS["seq2seq"](**fields)
    params = nn.unbox(jax.jit(module.init)(jax.random.key(0), source_BS, target_BT))["params"]
    model, qparams = ptq(module, params, (source_BS, target_BT), "int8")
    @jax.jit
    def encode_decode(p):
        memory_BSD, mask_BS = model.apply({"params": p}, source_BS, method=model.encode)
        return model.apply({"params": p}, target_BT, memory_BSD, mask_BS, method=model.decode)
    full_BTV = jax.jit(lambda p: model.apply({"params": p}, source_BS, target_BT))(qparams)
    np.testing.assert_allclose(encode_decode(qparams), full_BTV, atol=2e-5)


def test_qat_trains_and_converts_exactly(small_config, tmp_path):
    """A QAT run (int8 fake quantization) lowers its loss like any run; `convert` of its float
    params gives the outputs the QAT model computes (measured max |diff| 2e-7, logits ~5); a
    float run with init_from the converted run starts from its dequantized weights."""
    from fmjax import runs, tasks
    from fmjax.train import prepare, restore_or_init, train_and_evaluate
    config = small_config
    config.quantization.method = "int8"
    train_and_evaluate(config, tmp_path / "qat", show_progress=False)
    losses = [m["train/loss"] for m in read_metrics(tmp_path / "qat") if "train/loss" in m]
    assert losses[-1] < losses[0] - 0.3, losses

    run = runs.load(tmp_path / "qat")
    float_params = jax.device_get(run.state.params)
    assert not with_aux_leaves(float_params)
    converted_config = ml_collections.ConfigDict(run.config.to_dict())
    converted_config.quantization.converted = True
    task = tasks.build_task(converted_config, run.exp.task.info)
    qparams = quantization.convert(task, float_params)
    assert len(with_aux_leaves(qparams)) == 4
    x_BT = jnp.asarray(_rng.randn(64, 40), jnp.float32)
    # jitted, as every fmjax path is (eager op-by-op XLA rounds some weights the other way)
    qat_BL = jax.jit(lambda p: run.exp.task.model.apply({"params": p}, x_BT))(float_params)
    converted_BL = jax.jit(lambda p: task.model.apply({"params": p}, x_BT))(qparams)
    assert float(jnp.abs(qat_BL).max()) > 1
    assert float(jnp.abs(converted_BL - qat_BL).max()) < 1e-5

    # init_from the converted run: a float model starts from its dequantized weights
    write_converted_run(run, converted_config, qparams, tmp_path / "int8")
    fine_tune = ml_collections.ConfigDict(run.config.to_dict())
    fine_tune.quantization.method = ""
    fine_tune.init_from = str(tmp_path / "int8")
    exp = prepare(fine_tune, tmp_path / "fine_tune", data_info=run.exp.task.info)
    assert exp.init_source.quantized and len(exp.init_source.matched) == 8
    state, _, message = restore_or_init(exp, tmp_path / "fine_tune")
    assert message.startswith("initialised 8 of 8 model arrays")
    dequantized = quantization.dequantize(qparams)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(dequantized)):
        np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(dequantized["head"]["kernel"] - float_params["head"]["kernel"]).max()) > 0


def write_converted_run(run, config, qparams, out) -> None:
    """The smallest stand-in for `fmjax compress`: `run`'s files with `config` and `qparams`."""
    import shutil
    from fmjax import checkpoint, configs, state as state_lib
    from fmjax.train import prepare
    shutil.copytree(run.workdir, out, ignore=shutil.ignore_patterns("checkpoints", "*.lock"))
    (out / "config.json").write_text(configs.to_json(config))
    exp = prepare(config, out, data_info=run.exp.task.info)
    state = state_lib.init_state(exp.task, exp.tx, 0, exp.mesh, exp.rules, exp.abstract_state)
    manager = checkpoint.open_manager(out, config.checkpoint)
    checkpoint.save(manager, run.step, state.replace(params=qparams), config.to_dict(), None)
    checkpoint.close(manager)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_converted_state_round_trips_through_a_checkpoint(small_config, tmp_path, method):
    from fmjax import checkpoint, state as state_lib
    from fmjax.data import DataInfo
    from fmjax.train import prepare
    config = small_config
    config.quantization.update(method=method, converted=True)
    exp = prepare(config, data_info=DataInfo(10, (40,), 4000, 1000))
    assert jax.tree.leaves(exp.abstract_state.opt_state) == []   # converted: no optimizer state
    state = state_lib.init_state(exp.task, exp.tx, 0, exp.mesh, exp.rules, exp.abstract_state)
    manager = checkpoint.open_manager(tmp_path, config.checkpoint)
    checkpoint.save(manager, 1, state, config.to_dict(), None)
    checkpoint.close(manager)
    manager = checkpoint.read_only_manager(tmp_path)
    restored = checkpoint.restore(manager, 1, exp.abstract_state)
    manager.close()
    stored = with_aux_leaves(restored.params)
    assert len(stored) == 4 and {str(w.array.qvalue.dtype) for w in stored} == {method}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        assert a.dtype == b.dtype and (np.asarray(a) == np.asarray(b)).all()


def test_train_refuses_a_converted_run(tmp_path):
    proc = run_cli("train", "--config", "experiments/mnist1d/cnn.py:runlocal",
                   "--config.quantization.method=int8", "--config.quantization.converted=True",
                   "--workdir", tmp_path / "run", check=False)
    assert proc.stderr == (
        "fmjax: error: this config holds weights quantized by fmjax compress "
        "(config.quantization.converted=True); to train from them use --config.init_from=RUN "
        "with a float config\n")
    assert proc.returncode == 2 and not (tmp_path / "run").exists()


def test_unsupported_model_and_unknown_method_are_one_line(tmp_path):
    proc = run_cli("train", "--config", "experiments/mnist/vae.py:runlocal",
                   "--config.quantization.method=int8", "--workdir", tmp_path / "run",
                   check=False)
    assert_one_line_error(proc, "config.quantization: the 'vae' model cannot be quantized by "
                                "qwix (supported: logreg, mlp, cnn1d, cnn2d, gru, lstm, resnet, "
                                "gpt, vit, bert, seq2seq)")
    proc = run_cli("train", "--config", "experiments/mnist1d/cnn.py:runlocal",
                   "--config.quantization.method=int3", "--workdir", tmp_path / "run",
                   check=False)
    assert proc.stderr == ("fmjax: error: unknown config.quantization.method 'int3' "
                           "(known: int8, int4, int8_dynamic; '' = off)\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("calibration", ["rms", "absmax,x", "fixed,1", "max", "absmax,0",
                                         "absmax,-1", "absmax,nan", "minmax,inf", "rms,0",
                                         "fixed,1,0", "fixed,0.5,1"])
def test_bad_calibration_is_one_line(small_config, calibration):
    from fmjax import configs
    from fmjax.errors import UserError
    small_config.quantization.update(method="int8", calibration=calibration)
    with pytest.raises(UserError) as error:
        configs.validate(small_config)
    assert str(error.value) == (f"config.quantization.calibration={calibration!r} is not one of "
                                "absmax[,SCALE], minmax[,SCALE], rms,SCALE (SCALE > 0), "
                                "fixed,MIN,MAX (MIN <= 0 <= MAX, MIN < MAX)")


SHARDED = """
import jax
from fmjax import configs
from fmjax.data import DataInfo
from fmjax.train import prepare
config = configs.load_experiment("experiments/shakespeare/gpt_char.py:runlocal")
config.mesh.update(data=2, fsdp=2, tensor=2)
config.quantization.update(method="int4", converted=True)
exp = prepare(config, data_info=DataInfo(65, (64,), 1000, 100, vocab_size=65, input_dtype="int32"))
kernel = exp.abstract_state.params["block_0"]["mlp"]["up"]["kernel"]
attn = exp.abstract_state.params["block_0"]["attention"]["out_kernel"]
for w in (kernel, attn):
    q = w.array
    print(q.qvalue.shape, q.qvalue.dtype, q.qvalue.sharding.spec, q.scale.shape,
          q.scale.sharding.spec)
"""


def test_converted_abstract_state_is_sharded_on_8_devices():
    """qvalue sharded like its float kernel; scales too, but replicated on their size-1 dims."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-c", SHARDED], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.splitlines() == [
        "(128, 512) int4 P('fsdp', 'tensor') (4, 512) P('fsdp', 'tensor')",
        "(4, 32, 128) int4 P('tensor', None, 'fsdp') (1, 1, 128) P(None, None, 'fsdp')"
    ], proc.stderr[-3000:]
