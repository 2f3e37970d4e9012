"""Fine-tuning a pre-trained encoder: `config.init_from` (partial restore), freezing, layer-wise
learning-rate decay, and text classification data.

The offline task (fmjax/data/word_groups.py): sentences of two hidden groups of one-character
words; 40 labelled training sentences use 6 words of each group, the eval sentences only the
other 24, so only an encoder pre-trained on the unlabelled sentences can classify them.
"""

import os
import re

import jax
import numpy as np
import pytest

from conftest import read_metrics, run_cli
from fmjax import configs, optim, runs
from fmjax.data import word_groups
from fmjax.errors import UserError
from fmjax.metrics import eval_details
from fmjax.train import prepare, restore_or_init, train_and_evaluate
from fmjax.tree_paths import path_name

SEQ_LEN = 32
ENCODER = dict(name="bert", max_len=SEQ_LEN, num_layers=2, num_heads=4, embed_dim=64)


def write_word_group_task(root, seed: int = 0) -> None:
    """The task's files (fmjax/data/word_groups.py), and text the tokenizer cannot encode (never
    in the corpus) in the first training sentence: it must not stop fine-tuning."""
    word_groups.write_task(root, seed)
    first, rest = (root / "train.tsv").read_text().split("\n", 1)
    (root / "train.tsv").write_text(f"{first} é☃\n{rest}")


def mlm_config(root, num_steps=200):
    return configs.experiment(
        task="mlm", model=dict(**ENCODER, dropout_rate=0.0),
        data=dict(name="text", path=str(root / "corpus.txt"), seq_len=SEQ_LEN, eval_windows=64),
        train=dict(num_steps=num_steps, batch_size=32, eval_batch_size=64, log_every=100,
                   eval_every=num_steps, steps_per_call=100),
        optimizer=dict(name="adamw", learning_rate=2e-3, schedule="warmup_cosine",
                       warmup_steps=20, weight_decay=0.01),
        checkpoint=dict(every=num_steps, keep=1, best_metric=""))


def finetune_config(root, init_from: str, num_steps: int = 100, **optimizer):
    """The classifier on the word-group task; the tokenizer is always the pre-training run's."""
    config = configs.experiment(
        task="classification", model=dict(**ENCODER, dropout_rate=0.1),
        data=dict(name="text_classification", train_path=str(root / "train.tsv"),
                  eval_path=str(root / "eval.tsv"), seq_len=SEQ_LEN,
                  tokenizer_from=str(root / "mlm")),
        train=dict(num_steps=num_steps, batch_size=16, eval_batch_size=200, log_every=10,
                   eval_every=num_steps, steps_per_call=10),
        optimizer={**dict(name="adamw", learning_rate=1e-3, schedule="warmup_linear",
                          warmup_steps=10, weight_decay=0.01), **optimizer},
        checkpoint=dict(every=num_steps, keep=3))
    config.init_from = init_from
    return config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The task's files and a masked-LM run on its unlabelled sentences (`root / 'mlm'`)."""
    root = tmp_path_factory.mktemp("word_groups")
    write_word_group_task(root, seed=int(os.environ.get("WORD_GROUP_SEED", "0")))
    train_and_evaluate(mlm_config(root), root / "mlm", show_progress=False)
    return root


def params_of(workdir):
    return jax.tree.map(np.asarray, runs.load(workdir).params)


def flat(params) -> dict:
    return {path_name(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_pretrained_encoder_beats_random_init(pretrained, tmp_path):
    """Same data, tokenizer, seed and 100 steps. Measured eval accuracy, task seeds 0 / 1 / 2 / 3
    (`WORD_GROUP_SEED=S pytest -s ...`; the default is 0): pre-trained 1.000 every time,
    random init 0.383 / 0.485 / 0.445 / 0.525 (chance: 0.5). Asserted: pre-trained >= 0.9 and
    >= random init + 0.3."""
    scores = {}
    for name, init_from in (("pretrained", str(pretrained / "mlm")), ("scratch", "")):
        final = train_and_evaluate(finetune_config(pretrained, init_from), tmp_path / name,
                                   show_progress=False)
        scores[name] = final["eval/accuracy"]
    print(f"word-group task, eval accuracy: {scores}")
    assert scores["pretrained"] >= 0.9, scores
    assert scores["pretrained"] >= scores["scratch"] + 0.3, scores
    # `fmjax plot` names the classes by the labels of train.tsv
    assert eval_details.read(tmp_path / "pretrained")["class_names"] == ["A", "B"]


def test_init_from_copies_the_encoder_and_keeps_a_fresh_head(pretrained, tmp_path):
    source = flat(runs.load(pretrained / "mlm").params)
    exp = prepare(finetune_config(pretrained, str(pretrained / "mlm")), tmp_path / "ft")
    assert exp.init_source.new == ("params/classifier/bias", "params/classifier/kernel")
    with jax.set_mesh(exp.mesh):
        state, step, note = restore_or_init(exp, tmp_path / "ft")
    fresh = flat(restore_or_init(prepare(finetune_config(pretrained, ""), tmp_path / "new"),
                                 tmp_path / "new")[0].params)
    restored = flat(state.params)
    assert len(restored) == 38 and set(restored) - set(source) == {"classifier/bias",
                                                                  "classifier/kernel"}
    for name, value in restored.items():
        expected = fresh[name] if name.startswith("classifier/") else source[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
    assert not np.array_equal(restored["token_embed/embedding"], fresh["token_embed/embedding"])
    assert step == 0 and note == (f"initialised 36 of 38 model arrays from {pretrained / 'mlm'} "
                                  "(step 200); new: classifier/bias, classifier/kernel")
    assert not (tmp_path / "ft").exists()


def test_frozen_parameters_do_not_move(pretrained, tmp_path):
    """Frozen embeddings and first block stay bit-identical to the pre-trained values over 20
    steps, have no optimizer state, and everything else trains."""
    config = finetune_config(pretrained, str(pretrained / "mlm"), num_steps=20,
                             freeze=("^token_embed/", "^position_embed", "^block_0/"))
    exp = prepare(config, tmp_path)
    state_paths = [path_name(p) for p, _ in
                   jax.tree_util.tree_flatten_with_path(exp.abstract_state.opt_state)[0]]
    assert state_paths and not [p for p in state_paths if "block_0/" in p or "embed" in p]
    train_and_evaluate(config, tmp_path, show_progress=False)
    before, after = flat(runs.load(pretrained / "mlm").params), flat(params_of(tmp_path))
    frozen = [n for n in after if n.startswith(("token_embed", "position_embed", "block_0/"))]
    assert len(frozen) == 18
    for name in after:
        if name in frozen:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
        elif not name.startswith("classifier/"):
            assert not np.array_equal(after[name], before[name]), name


def test_layer_decay_scales_each_layers_updates():
    """decay ** (L + 1 - depth): embeddings depth 0, block_i depth i + 1, the rest L + 1."""
    f32 = np.float32
    params = {"token_embed": {"embedding": np.ones((5, 2), f32)},
              "position_embed": np.ones((3, 2), f32),
              "block_0": {"mlp": {"up": {"kernel": np.ones((2, 2), f32)}}},
              "block_1": {"ln_mlp": {"scale": np.ones(2, f32)}},
              "ln_final": {"scale": np.ones(2, f32)},
              "classifier": {"kernel": np.ones((2, 3), f32)}}
    expected = {"token_embed/embedding": 0.125, "position_embed": 0.125,
                "block_0/mlp/up/kernel": 0.25, "block_1/ln_mlp/scale": 0.5,
                "ln_final/scale": 1.0, "classifier/kernel": 1.0}
    assert flat(optim.layer_decay_multipliers(params, 0.5)) == expected
    opt = configs.base_config().optimizer
    opt.update(name="sgd", learning_rate=1.0, momentum=0.0, layer_decay=0.5)
    tx = optim.build(opt, 10)
    updates, _ = tx.update(jax.tree.map(np.ones_like, params), tx.init(params), params)
    for name, value in flat(updates).items():
        np.testing.assert_allclose(value, -expected[name], err_msg=name)


@pytest.mark.parametrize("key, value, fragment", [
    ("layer_decay", 0.0, "config.optimizer.layer_decay=0.0 is out of range: must be in (0, 1]"),
    ("layer_decay", 1.5, "config.optimizer.layer_decay=1.5 is out of range: must be in (0, 1]"),
    ("freeze", ("block_(",), "bad regular expression 'block_('"),
])
def test_bad_optimizer_keys_are_user_errors(key, value, fragment):
    opt = configs.base_config().optimizer
    opt[key] = value
    with pytest.raises(UserError, match=re.escape(fragment)):
        optim.validate(opt)


def test_freeze_pattern_that_matches_nothing(pretrained, tmp_path):
    config = finetune_config(pretrained, "", freeze=("^encoder/",))
    with pytest.raises(UserError, match="'\\^encoder/' matches no parameter"):
        prepare(config, tmp_path)


def test_unknown_text_maps_to_an_unknown_id():
    """Char tokenizer: unseen characters -> the [MASK] id (its vocabulary size); SentencePiece:
    <unk> (0). Both truncate to seq_len and pad with -1."""
    from fmjax.data import tokenizers
    from fmjax.data.text_classification import encode_padded
    chars = tokenizers.CharTokenizer.train("abc ")
    ids = encode_padded(chars, ["ab☃c", "cabbage and more"], 6)
    np.testing.assert_array_equal(ids, [[1, 2, 4, 3, -1, -1], [3, 1, 2, 2, 1, 4]])
    pieces = tokenizers.SentencePieceTokenizer.train("the cat sat on the mat\n" * 50, 12)
    ids = encode_padded(pieces, ["the ☃ cat"], 12)
    assert 0 in ids[0] and ids[0, -1] == -1 and ids.min() == -1


@pytest.mark.parametrize("name, labels", [("glue/sst2", ["negative", "positive"]),
                                          ("imdb_reviews", ["neg", "pos"])])
def test_tfds_text_classification_under_mock_data(name, labels, tmp_path):
    """The online sources (TFDS never downloads here): label names from TFDS, ids padded with
    -1; a dataset that is not there is one UserError."""
    import tensorflow_datasets as tfds
    from fmjax.data.text_classification import TextClassification
    with tfds.testing.mock_data(num_examples=30):
        pipeline = TextClassification(tfds_name=name, download=False, seq_len=16).pipeline(0)
    assert pipeline.label_names == labels and pipeline.info.num_classes == 2
    assert pipeline.arrays.x_train.shape == (30, 16) and pipeline.arrays.x_train.min() >= -1
    assert pipeline.arrays.x_train.max() < pipeline.info.vocab_size
    with pytest.raises(UserError, match=f"cannot load TFDS dataset '{name}'"):
        TextClassification(tfds_name=name, download=False, data_dir=str(tmp_path)).pipeline(0)


def test_resumed_finetune_restores_its_own_checkpoint(pretrained, tmp_path):
    """Stopped at 20 steps and resumed to 40: bit-identical to 40 steps straight (dropout on);
    the resumed start takes its own checkpoint and does not read init_from again. (A constant
    schedule, so that stopping early is the only difference between the 20- and 40-step runs.)"""
    def config(num_steps):
        c = finetune_config(pretrained, str(pretrained / "mlm"), num_steps, schedule="constant",
                            layer_decay=0.8)
        c.train.eval_every = 20
        return c

    train_and_evaluate(config(40), tmp_path / "straight", show_progress=False)
    train_and_evaluate(config(20), tmp_path / "resumed", show_progress=False)
    resumed = prepare(config(40), tmp_path / "resumed")
    assert resumed.latest_step == 20 and resumed.init_source is None
    train_and_evaluate(config(40), tmp_path / "resumed", show_progress=False)
    jax.tree.map(np.testing.assert_array_equal, params_of(tmp_path / "straight"),
                 params_of(tmp_path / "resumed"))
    drop_perf = [{k: v for k, v in r.items() if not k.startswith("perf/")}
                 for r in read_metrics(tmp_path / "straight")]
    assert drop_perf == [{k: v for k, v in r.items() if not k.startswith("perf/")}
                         for r in read_metrics(tmp_path / "resumed")]


def classify_cli_flags(root, workdir) -> list:
    """experiments/text/bert_classify.py shrunk to the word-group encoder, 20 steps."""
    return ["--config", "experiments/text/bert_classify.py", f"--config.init_from={root / 'mlm'}",
            f"--config.data.train_path={root / 'train.tsv'}",
            f"--config.data.eval_path={root / 'eval.tsv'}", "--config.model.num_layers=2",
            f"--config.model.max_len={SEQ_LEN}", f"--config.data.seq_len={SEQ_LEN}",
            "--config.model.embed_dim=64", "--config.train.num_steps=20",
            "--config.train.steps_per_call=10", "--config.train.log_every=10",
            "--config.train.eval_every=20", "--config.checkpoint.every=20",
            "--config.train.batch_size=16", "--config.train.eval_batch_size=200",
            "--config.optimizer.warmup_steps=5", "--config.optimizer.layer_decay=0.8",
            "--noprogress", "--workdir", workdir]


def test_finetune_shards_like_the_rest(pretrained, tmp_path):
    """The encoder saved on one device restores onto mesh (2, 2, 2) of 8 devices; losses and
    gradient norms agree with one device to 2e-4."""
    run_cli("train", *classify_cli_flags(pretrained, tmp_path / "one"))
    run_cli("train", *classify_cli_flags(pretrained, tmp_path / "mesh"), "--config.mesh.data=2",
            "--config.mesh.fsdp=2", "--config.mesh.tensor=2", devices=8)
    one, mesh = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "mesh")
    for key in ("train/loss", "train/grad_norm", "eval/loss"):
        np.testing.assert_allclose([r[key] for r in mesh if key in r],
                                   [r[key] for r in one if key in r], rtol=2e-4, err_msg=key)


def test_encoder_of_another_width_fails_before_any_work(pretrained, tmp_path):
    """The CLI: one line naming the first parameter whose shape differs, with both shapes; exit
    status 2; the new workdir is not created."""
    workdir = tmp_path / "ft"
    proc = run_cli("train", *classify_cli_flags(pretrained, workdir),
                   "--config.model.embed_dim=32", check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "block_0/attention/key_bias has shape (4, 16)" in lines[0], lines
    assert "but (4, 8) in this config's model" in lines[0], lines
    assert not workdir.exists()


def test_init_from_a_run_with_nothing_in_common(pretrained, tmp_path):
    config = configs.experiment(model=dict(name="logreg"), data=dict(name="digits"))
    config.init_from = str(pretrained / "mlm")
    with pytest.raises(UserError, match="no parameter in common"):
        prepare(config, tmp_path)




def digits_mlp(num_classes: int, init_from: str = "", reinit: tuple = ()):
    """An MLP on the first `num_classes` digits, 4 steps."""
    config = configs.experiment(
        model=dict(name="mlp", hidden_size=32), data=dict(name="digits", num_classes=num_classes),
        train=dict(num_steps=4, batch_size=8, eval_batch_size=400, log_every=4, eval_every=4),
        checkpoint=dict(every=4, keep=1))
    config.update(init_from=init_from, init_from_reinit=reinit)
    return config


def test_reinit_gives_another_number_of_classes_a_fresh_head(tmp_path):
    """A 10-class digits MLP fine-tuned into a 5-class one (digits 0-4, tested on images of the
    10-class run's test split only): without `init_from_reinit` one line that says how to ask
    for a fresh head; with it the head keeps its fresh init and the hidden layers come from the
    10-class run."""
    source = tmp_path / "ten"
    train_and_evaluate(digits_mlp(10), source, show_progress=False)
    with pytest.raises(UserError) as refused:
        prepare(digits_mlp(5, str(source)), tmp_path / "five")
    assert str(refused.value) == (
        f"config.init_from: head/bias has shape (10,) in {source} (step 4) but (5,) in this "
        "config's model; use the model config it was trained with, or start it afresh with "
        """--config.init_from_reinit='("^head/",)'""")
    exp = prepare(digits_mlp(5, str(source), ("^head/",)), tmp_path / "five")
    five, ten = exp.pipeline.arrays, prepare(digits_mlp(10)).pipeline.arrays
    assert sorted(np.unique(five.y_train)) == [0, 1, 2, 3, 4]   # 901 of the 1797 digits:
    assert len(five.y_train) + len(five.y_eval) == 901         # the 10-class run's split, cut
    np.testing.assert_array_equal(five.x_eval, ten.x_eval[ten.y_eval < 5])
    with jax.set_mesh(exp.mesh):
        state, _, note = restore_or_init(exp, tmp_path / "five")
    assert note == (f"initialised 4 of 6 model arrays from {source} (step 4); new: none; "
                    "re-initialised: head/bias, head/kernel")
    fresh = flat(restore_or_init(prepare(digits_mlp(5), tmp_path / "new"), tmp_path / "new")[0]
                 .params)
    before, after = flat(runs.load(source).params), flat(state.params)
    assert after["head/kernel"].shape == (32, 5) and len(after) == 6
    for name, value in after.items():
        expected = fresh[name] if name.startswith("head/") else before[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
    with pytest.raises(UserError) as refused:
        prepare(digits_mlp(5, str(source), ("^classifier/",)), tmp_path / "five")
    assert str(refused.value) == ("config.init_from_reinit: '^classifier/' matches no "
                                  "parameter (parameters look like 'head/bias')")


def test_bad_reinit_pattern_is_a_user_error():
    config = digits_mlp(5, "run", ("head(",))
    with pytest.raises(UserError, match=re.escape(
            "config.init_from_reinit: bad regular expression 'head('")):
        configs.validate(config)
