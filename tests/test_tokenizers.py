"""Tokenizers round-trip text exactly, survive a save/load through the workdir, and treat text
they cannot encode as the tokenizer kind promises (char: a clear error; SentencePiece: <unk>)."""

import numpy as np
import pytest

from conftest import generated_text, gpt_flags, run_cli
from fmjax.data import tokenizers
from fmjax.errors import UserError

TEXT = generated_text(400) + "Two  spaces,\n\nand an empty line.\n"


def test_char_tokenizer_round_trips_and_rejects_unknown_characters():
    tok = tokenizers.CharTokenizer.train(TEXT)
    np.testing.assert_array_equal(tok.encode_corpus(TEXT), tok.encode(TEXT))
    assert tok.decode(tok.encode(TEXT)) == TEXT
    with pytest.raises(UserError, match="'Z€'"):
        tok.encode("Zero€")


def test_sentencepiece_round_trips_newlines_and_maps_unknown_text_to_unk(tmp_path):
    tok = tokenizers.SentencePieceTokenizer.train(TEXT, vocab_size=40)
    ids = tok.encode_corpus(TEXT)
    assert tok.decode(ids) == TEXT and len(ids) < 0.7 * len(TEXT)   # subwords, not characters
    name, data = tok.asset()
    (tmp_path / name).write_bytes(data)
    reloaded = tokenizers.load_from_workdir(tmp_path)
    np.testing.assert_array_equal(reloaded.encode_corpus(TEXT), ids)
    assert 0 in tok.encode("the Zero€ sees")       # <unk>, no exception


def test_gpt_trains_and_samples_with_a_sentencepiece_vocabulary(tmp_path, text_file):
    flags = [*gpt_flags(text_file, num_steps=20), "--config.data.tokenizer=sentencepiece",
             "--config.data.vocab_size=30"]
    run_cli("train", "--workdir", tmp_path, *flags)
    assert (tmp_path / tokenizers.SENTENCEPIECE_FILE).exists()
    out = run_cli("sample", "--workdir", tmp_path, "--prompt", "the red", "--max_new_tokens",
                  "20", "--seed", "0").stdout
    assert out.startswith("the red")
    proc = run_cli("train", "--workdir", tmp_path, *flags, "--config.data.vocab_size=32",
                   check=False)
    assert proc.returncode == 2 and "use a new workdir" in proc.stderr, proc.stderr
