"""Attention weights sown by every Transformer (both attention paths), and the `attention` and
`latent` plots drawn from real short runs: valid, non-blank PNGs, and one-line errors."""

import io
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import experiment_config
from fmjax.errors import UserError
from fmjax.models import transformer
from fmjax.models.bert import BERT
from fmjax.models.gpt import GPT
from fmjax.plots import PlotOptions, attention, latent

TINY_TRANSFORMER = dict(num_layers=2, num_heads=2, embed_dim=16)


def _tiny_run(workdir, path: str, variant: str, model: dict, steps: int = 2, **sections):
    """Train `path:variant` for `steps` steps (one eval, one checkpoint) in `workdir`."""
    from fmjax.train import train_and_evaluate
    config = experiment_config(path, variant)
    config.model.update(model)
    config.train.update(num_steps=steps, eval_every=steps, log_every=steps, steps_per_call=steps)
    config.checkpoint.every = steps
    for section, values in sections.items():
        config[section].update(values)
    train_and_evaluate(config, workdir, show_progress=False)
    return workdir


ONE_LAYER = dict(num_layers=1, num_heads=2, embed_dim=16)
FAST = dict(optimizer=dict(warmup_steps=1))
# family -> (experiment, variant, model overrides, other overrides given the text file's path)
RUNS = {
    "gpt": ("experiments/shakespeare/gpt_char.py", "runlocal", {**ONE_LAYER, "max_len": 32},
            lambda text: dict(data=dict(path=text, eval_windows=4, seq_len=32), **FAST)),
    "bert": ("experiments/text/bert_mlm.py", "runlocal", {**ONE_LAYER, "max_len": 32},
             lambda text: dict(data=dict(path=text, eval_windows=4, seq_len=32), **FAST)),
    "vit": ("experiments/vision/vit_cifar10.py", "runlocal", ONE_LAYER, lambda text: FAST),
    "seq2seq": ("experiments/translate/synthetic.py", "runlocal",
                {**ONE_LAYER, "num_decoder_layers": 1},
                lambda text: dict(data=dict(num_train=1000, num_eval=4),
                                  task_options=dict(beam_size=1), **FAST)),
    # Trains its own char tokenizer on train.tsv; eval.tsv's "Z" becomes [MASK].
    "bert_classify": ("experiments/text/bert_classify.py", "runlocal",
                      {**ONE_LAYER, "max_len": 32},
                      lambda text: dict(data=dict(seq_len=32, tokenizer_from="",
                                                  **_tsv_files(text)), **FAST)),
    "vae": ("experiments/mnist/vae.py", "digits,latent2", dict(hidden_size=32),
            lambda text: dict(task_options=dict(iw_samples=2))),
}


def _tsv_files(text_path: str) -> dict:
    """train_path and eval_path: two labelled sentences each, beside `text_path`."""
    folder = pathlib.Path(text_path).parent
    for name, rows in (("train", "pos\tthe cat sat\nneg\ta dog ran\n"),
                       ("eval", "pos\tZed sat\nneg\ta cat ran\n")):
        (folder / f"{name}.tsv").write_text(rows)
    return dict(train_path=str(folder / "train.tsv"), eval_path=str(folder / "eval.tsv"))


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, text_file):
    """family -> the workdir of a tiny trained run, trained when a test first asks (seconds)."""
    root, trained = tmp_path_factory.mktemp("plots"), {}

    def get(family: str):
        if family not in trained:
            path, variant, model, sections = RUNS[family]
            trained[family] = _tiny_run(root / family, path, variant, model,
                                        **sections(str(text_file)))
        return trained[family]

    return get


def _assert_picture(fig, min_side: int = 300) -> None:
    """`fig` saves as a PNG that PIL reads, of a plausible size, not one flat colour."""
    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert image.format == "PNG" and min(image.size) >= min_side, image.size
    assert np.asarray(image.convert("L"), np.float32).std() > 5.0


# ---- Capture: what the Attention layers sow. -----------------------------------------------------

def _sown(model, *inputs):
    variables = model.init(jax.random.key(0), *inputs)
    _, state = model.apply(variables, *inputs, mutable=["intermediates"])
    return [leaf for leaf in jax.tree.leaves(state["intermediates"])]


@pytest.mark.parametrize("method", ["", "int8"])
def test_gpt_weights_are_causal_distributions(method):
    """Also through Qwix's int8 quantization (which wraps the model)."""
    import ml_collections
    from fmjax.compression import quantization
    qconfig = ml_collections.ConfigDict({**quantization.defaults(), "method": method})
    model = quantization.wrap_model(GPT(vocab_size=11, max_len=8, **TINY_TRANSFORMER), qconfig)
    tokens_BT = jax.random.randint(jax.random.key(1), (2, 7), 0, 11)
    probs = _sown(model, tokens_BT)
    assert len(probs) == 2 and all(p.shape == (2, 2, 7, 7) and p.dtype == jnp.float32
                                   for p in probs)
    for p in probs:
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
        past_TS = jnp.tril(jnp.ones((7, 7), bool))
        assert float(jnp.where(past_TS, 0, p).max()) == 0.0   # no weight on future tokens
        assert float(jnp.where(past_TS, p, 1).min()) > 0.0


def test_bert_weights_give_padding_keys_nothing():
    tokens_BT = jnp.array([[3, 4, 5, -1, -1], [1, 2, 3, 4, 5]])
    probs = _sown(BERT(vocab_size=8, num_classes=2, max_len=8, dropout_rate=0.0,
                       **TINY_TRANSFORMER), tokens_BT)
    for p in probs:
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
        assert float(p[0, :, :, 3:].max()) == 0.0 and float(p[1].min()) > 0.0


@pytest.mark.parametrize("causal, masked", [(True, False), (False, True), (True, True)])
def test_both_paths_return_the_same_weights_and_outputs(causal, masked):
    q_BTNH, k_BSNH, v_BSNH = jax.random.normal(jax.random.key(2), (3, 2, 6, 2, 4))
    mask_B1TS = (jnp.arange(6) < jnp.array([[6], [3]]))[:, None, None] if masked else None
    einsum = transformer.attention(q_BTNH, k_BSNH, v_BSNH, mask_B1TS, causal, "einsum", True)
    fused = transformer.attention(q_BTNH, k_BSNH, v_BSNH, mask_B1TS, causal, "fused", True)
    allowed_BNTS = jnp.ones((2, 2, 6, 6), bool)
    if causal:
        allowed_BNTS &= jnp.tril(allowed_BNTS)
    if masked:
        allowed_BNTS &= mask_B1TS
    logits_BNTS = jnp.einsum("btnh,bsnh->bnts", q_BTNH, k_BSNH) / 2.0   # sqrt(H) = 2
    reference = jax.nn.softmax(jnp.where(allowed_BNTS, logits_BNTS, -jnp.inf), axis=-1)
    for out_BTNH, probs_BNTS in (einsum, fused):
        np.testing.assert_allclose(probs_BNTS, reference, atol=1e-6)
        np.testing.assert_allclose(out_BTNH, einsum[0], atol=1e-5)


def test_weights_are_computed_only_when_asked(monkeypatch):
    """Without a mutable 'intermediates' collection the fused path traces no softmax of its own
    (the weights' function is never called), and the sown weights equal the einsum path's."""
    model = GPT(vocab_size=11, max_len=8, **TINY_TRANSFORMER)
    tokens_BT = jnp.arange(14).reshape(2, 7) % 11
    variables = model.init(jax.random.key(0), tokens_BT)
    einsum_probs = _sown(model, tokens_BT)
    monkeypatch.setattr(transformer, "default_implementation", lambda: "fused")
    fused_probs = _sown(model, tokens_BT)
    for a, b in zip(einsum_probs, fused_probs):
        np.testing.assert_allclose(a, b, atol=1e-6)

    def refuse(*args):
        raise AssertionError("attention weights computed without being asked for")

    monkeypatch.setattr(transformer, "attention_probs", refuse)
    jax.make_jaxpr(lambda v: model.apply(v, tokens_BT, train=False))(variables)


# ---- Pictures from trained runs. ----------------------------------------------------------------

SLOW = pytest.mark.slow   # each trains a run of its own: ~2-4 s on an idle 2-core machine


@pytest.mark.parametrize("family, options", [
    ("gpt", PlotOptions(input="the quick cat")),
    pytest.param("gpt", PlotOptions(example=1), marks=SLOW),
    pytest.param("bert", PlotOptions(example=2), marks=SLOW),
    pytest.param("vit", PlotOptions(example=3), marks=SLOW),
    pytest.param("seq2seq", PlotOptions(input="forty two"), marks=SLOW),
    pytest.param("seq2seq", PlotOptions(example=2), marks=SLOW),
])
def test_attention_figure(run_dirs, family, options):
    fig = attention.figure([run_dirs(family)], options)
    rows = 3 if family == "seq2seq" else 1   # seq2seq: encoder, decoder self, cross
    columns = 2 + (family == "vit")                                  # heads (+ the ViT's image)
    assert len(fig.axes) == rows * columns
    _assert_picture(fig)
    if family == "gpt" and options.input:   # tick labels are the characters
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list("the␣quick␣cat")


def test_a_classifiers_unknown_characters_show_as_mask(run_dirs):
    workdir = run_dirs("bert_classify")
    fig = attention.figure([workdir], PlotOptions(example=0))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        "[MASK]", "e", "d", "␣", "s", "a", "t"]
    _assert_picture(fig)


def test_latent_figure(run_dirs):
    fig = latent.figure([run_dirs("vae")], PlotOptions())
    assert fig.axes[0].get_xlabel() == "z1" and len(fig.axes[0].collections[0].get_offsets()) \
        == 360   # every digits test image
    _assert_picture(fig)


@pytest.mark.parametrize("plot, family, options, message", [
    (attention, "vae", PlotOptions(), "{vae} holds a 'vae' run with model 'vae'; attention plots "
     "need a Transformer (model gpt, bert, vit, seq2seq)"),
    (latent, "gpt", PlotOptions(), "{gpt} holds a 'lm' run with model 'gpt'; latent plots need "
     "a VAE (task 'vae')"),
    (attention, "gpt", PlotOptions(input="the Zed"),
     "characters not in the model's vocabulary: 'Z'"),
    (attention, "gpt", PlotOptions(example=4),
     "example 4 is out of range: the eval split holds 4 examples (0 to 3)"),
    pytest.param(attention, "vit", PlotOptions(input="a cat"), "a ViT reads images, not text: "
                 "choose an eval image with --example instead of --input", marks=SLOW),
    pytest.param(attention, "seq2seq", PlotOptions(input="   "), "the input text holds no "
                 "tokens (only spaces?)", marks=SLOW),
    (attention, "gpt", PlotOptions(split="val"), "{gpt} holds no val split: "
     "config.data.validation_fraction holds out a validation split for mnist1d, digits, "
     "diabetes, tfds and text_classification only; a text source's eval split already is one "
     "(its size: config.data.val_fraction); use --split eval"),
    (latent, "vae", PlotOptions(split="val"), "{vae} holds no val split "
     "(config.data.validation_fraction)"),
])
def test_bad_requests_are_one_line_user_errors(run_dirs, plot, family, options, message):
    with pytest.raises(UserError) as error:
        plot.figure([run_dirs(family)], options)
    assert str(error.value) == message.format(**{family: str(run_dirs(family))})


def test_a_vae_with_one_latent_is_one_error_line(run_dirs, tmp_path):
    """Checked in the config, before the run is restored (the copy's checkpoint has 2)."""
    workdir = shutil.copytree(run_dirs("vae"), tmp_path / "vae1")
    config = json.loads((workdir / "config.json").read_text())
    config["model"]["latent_dim"] = 1
    (workdir / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as error:
        latent.figure([workdir], PlotOptions())
    assert str(error.value) == (f"{workdir}: a latent plot draws a plane and needs at least 2 "
                                "latents; this VAE has 1 (config.model.latent_dim)")


def test_one_run_per_attention_or_latent_plot(run_dirs, tmp_path):
    """The same checks as every one-run kind (fmjax/plots/workdirs.py), before any restore."""
    (tmp_path / "file").write_text("not a run")
    (tmp_path / "sweep" / "trials").mkdir(parents=True)
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    for kind, plot in (("attention", attention), ("latent", latent)):
        for paths, message in [
                ([run_dirs("gpt"), run_dirs("vae")], f"--kind {kind} draws one run; got 2 "
                 "directories"),
                ([tmp_path / "file"], f"{tmp_path / 'file'} is not a directory (give a run's "
                 "workdir)"),
                ([tmp_path / "sweep"], f"{tmp_path / 'sweep'} holds a sweep, not a run: give one "
                 f"of its trials ({tmp_path / 'sweep' / 'trials'}/NNNN)")]:
            with pytest.raises(UserError) as error:
                plot.figure(paths, PlotOptions())
            assert str(error.value) == message
