"""Subword LM on TFDS text (lm1b) under `tfds.testing.mock_data`: never downloads.

mock_data patches TFDS in this process only, so training runs in-process (as in test_tfds.py).
"""


import numpy as np
import pytest

from conftest import experiment_config, mock_tfds, read_metrics
from fmjax.data import tfds_text, tokenizers
from fmjax.errors import UserError
from fmjax.train import train_and_evaluate
from test_train import model_metrics

MOCK_VOCAB = 128   # the mock sentences (letters a-j and spaces) cannot fill lm1b's 8000


def runlocal_config(num_steps: int):
    config = experiment_config("experiments/lm1b/gpt_small.py", "runlocal")
    config.data.update(vocab_size=MOCK_VOCAB, seq_len=32, eval_windows=32, download=False)
    config.model.max_len = 32
    config.train.update(num_steps=num_steps, batch_size=8, eval_batch_size=16, log_every=5,
                        eval_every=10, steps_per_call=5)
    # A schedule that does not depend on num_steps, so a 10-step run is a prefix of a 20-step one.
    config.optimizer.update(schedule="constant", warmup_steps=0)
    config.checkpoint.every = 5
    return config


@pytest.fixture
def mock_lm1b():
    with mock_tfds(num_examples=200):
        yield


def test_packed_stream_resumes_exactly(mock_lm1b):
    """</s> starts every step's stream and ends every sentence; a step's windows overlap by one
    token; starting at step s gives exactly the batches from step s of a run started at 0."""
    pipeline = tfds_text.TFDSText(vocab_size=MOCK_VOCAB, seq_len=16, eval_windows=5,
                                  download=False).pipeline(seed=3)
    assert pipeline.tokenizer.eos_id == tfds_text.EOS_ID
    straight = pipeline.train_iterator(0, 4)
    batches = [next(straight) for _ in range(6)]
    resumed = pipeline.train_iterator(4, 4)
    for batch in (batches[4], batches[5]):
        again = next(resumed)
        for key in ("inputs", "targets"):
            np.testing.assert_array_equal(batch[key], again[key])
    first = batches[0]
    assert first["inputs"].shape == (4, 16) and first["inputs"].dtype == np.int32
    assert first["inputs"][0, 0] == tfds_text.EOS_ID
    np.testing.assert_array_equal(first["inputs"][:, 1:], first["targets"][:, :-1])
    np.testing.assert_array_equal(first["inputs"][1:, 0], first["targets"][:-1, -1])
    assert all(b["inputs"][0, 0] == tfds_text.EOS_ID for b in batches)
    assert (np.concatenate([b["inputs"] for b in batches]) == tfds_text.EOS_ID).sum() > 6
    evals = list(pipeline.eval_batches(4))
    assert [b["mask"].tolist() for b in evals] == [[True] * 4, [True, False, False, False]]
    assert pipeline.info.num_classes == MOCK_VOCAB and pipeline.info.num_eval == 5


def test_lm1b_trains_saves_tokenizer_and_resumes_exactly(tmp_path, mock_lm1b, monkeypatch):
    final = train_and_evaluate(runlocal_config(20), tmp_path / "straight", show_progress=False)
    records = read_metrics(tmp_path / "straight")
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert all(np.isfinite(r["train/loss"]) for r in records)
    assert records[0]["train/loss"] == pytest.approx(np.log(MOCK_VOCAB), rel=0.2)
    assert np.isfinite(final["eval/loss"]) and final["eval/loss"] < records[0]["train/loss"]
    tokenizer = tokenizers.load_from_workdir(tmp_path / "straight")
    assert tokenizer.kind == "sentencepiece" and tokenizer.vocab_size == MOCK_VOCAB

    train_and_evaluate(runlocal_config(10), tmp_path / "resumed", show_progress=False)

    def no_retraining(self, train):
        raise AssertionError("the resumed run must reload workdir/tokenizer.model")
    monkeypatch.setattr(tfds_text.TFDSText, "train_tokenizer", no_retraining)
    train_and_evaluate(runlocal_config(20), tmp_path / "resumed", show_progress=False)
    assert model_metrics(tmp_path / "straight") == model_metrics(tmp_path / "resumed")
    assert ((tmp_path / "straight" / "tokenizer.model").read_bytes()
            == (tmp_path / "resumed" / "tokenizer.model").read_bytes())


def test_errors_are_one_line(tmp_path, mock_lm1b):
    with pytest.raises(UserError, match="Vocabulary size too high") as e:
        tfds_text.TFDSText(vocab_size=100_000, download=False).pipeline(seed=0)
    assert "\n" not in str(e.value)
    (tmp_path / "tokenizer_char.json").write_text('{"chars": "ab"}')
    with pytest.raises(UserError, match="use a new workdir"):
        tfds_text.TFDSText(vocab_size=MOCK_VOCAB, download=False).pipeline(0, tmp_path)


def test_missing_dataset_is_a_user_error(tmp_path):
    """Outside mock_data: an unprepared dataset with download=False fails in one line."""
    with pytest.raises(UserError, match="cannot load TFDS dataset 'lm1b'") as e:
        tfds_text.TFDSText(data_dir=str(tmp_path), download=False).pipeline(seed=0)
    assert "\n" not in str(e.value)
