"""Tokenizers round-trip text exactly, survive a save/load through the workdir, and treat text
they cannot encode as the tokenizer kind promises (char: a clear error; SentencePiece: <unk>)."""

import numpy as np
import pytest

from conftest import assert_one_line_error, generated_text, gpt_flags, run_cli
from fmjax.data import tokenizers
from fmjax.errors import UserError

TEXT = generated_text(400) + "Two  spaces,\n\nand an empty line.\n"


def test_char_tokenizer_round_trips_and_rejects_unknown_characters():
    tok = tokenizers.CharTokenizer.train(TEXT)
    np.testing.assert_array_equal(tok.encode_corpus(TEXT), tok.encode(TEXT))
    assert tok.decode(tok.encode(TEXT)) == TEXT
    with pytest.raises(UserError, match="'Z€'"):
        tok.encode("Zero€")


@pytest.mark.parametrize("text, unknown, first", [
    ("the %cat", ["%"], 4),            # below the vocabulary's highest code point
    ("the cat😀 é", ["é", "😀"], 7),   # above it
    ("the \udcff", ["\udcff"], 4),     # an undecodable byte of a command-line argument
])
def test_char_tokenizer_names_every_character_it_lacks(text, unknown, first):
    """Never id 0 or an IndexError: the caller learns which characters and where."""
    with pytest.raises(tokenizers.UnknownCharacters) as error:
        tokenizers.CharTokenizer.train(TEXT).encode_corpus(text)
    assert (error.value.unknown, error.value.first) == (unknown, first)


def _lm1b_style_tokenizer():
    """tfds_text's kind: default whitespace handling, an end-of-sentence control piece."""
    return tokenizers.SentencePieceTokenizer.train_unigram(
        iter(TEXT.splitlines()), 40, character_coverage=0.9995, unk_id=0, eos_id=1)


@pytest.mark.parametrize("make", [
    lambda: tokenizers.SentencePieceTokenizer.train(TEXT, vocab_size=30),      # text
    lambda: tokenizers.SentencePieceTokenizer.train_on_sentences(TEXT.splitlines(), 40),
    _lm1b_style_tokenizer,
    lambda: tokenizers.CharTokenizer.train(TEXT),
])
def test_streamed_text_is_exactly_the_decoded_text(make):
    """`fmjax sample` prints chunk after chunk; SentencePiece drops a word-start space only at
    the start of a text, so decoding chunks alone would differ. Random ids (with <unk>, </s>
    and space pieces at chunk starts), cut at random places."""
    tok, rng = make(), np.random.default_rng(0)
    for _ in range(500):
        ids = rng.integers(0, tok.vocab_size, rng.integers(1, 20))
        cuts = np.sort(rng.choice(np.arange(1, len(ids) + 1), rng.integers(0, len(ids) + 1),
                                  replace=False))
        decode = tok.stream_decoder()
        assert "".join(map(decode, np.split(ids, cuts))) == tok.decode(ids), ids


def test_sentencepiece_round_trips_newlines_and_maps_unknown_text_to_unk(tmp_path):
    tok = tokenizers.SentencePieceTokenizer.train(TEXT, vocab_size=40)
    ids = tok.encode_corpus(TEXT)
    assert tok.decode(ids) == TEXT and len(ids) < 0.7 * len(TEXT)   # subwords, not characters
    name, data = tok.asset()
    (tmp_path / name).write_bytes(data)
    reloaded = tokenizers.load_from_workdir(tmp_path)
    np.testing.assert_array_equal(reloaded.encode_corpus(TEXT), ids)
    assert 0 in tok.encode("the Zero€ sees")       # <unk>, no exception


def test_batch_encode_and_decode_match_one_text_at_a_time():
    """What translation, classification and lm1b use instead of SentencePiece's own batch call:
    the same ids, </s> on request, unknown characters to a chosen id for the char kind."""
    texts = TEXT.splitlines()[:5]
    for tok in (tokenizers.CharTokenizer.train(TEXT), _lm1b_style_tokenizer()):
        ids = tok.encode_batch(texts)
        assert [i.tolist() for i in ids] == [tok.encode(t).tolist() for t in texts]
        assert all(i.dtype == np.int32 for i in ids)
        assert tok.decode_batch(ids) == [tok.decode(i) for i in ids]
    with_eos = _lm1b_style_tokenizer().encode_batch(texts, add_eos=True)
    assert [i[-1] for i in with_eos] == [1] * len(texts)
    chars = tokenizers.CharTokenizer.train("abc")
    assert chars.encode_batch(["ab☃c"], unknown_id=3)[0].tolist() == [0, 1, 3, 2]
    with pytest.raises(tokenizers.UnknownCharacters):
        chars.encode_batch(["ab☃c"])


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


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif how == "empty":
        path.write_bytes(b"")
    else:   # "cut at a piece boundary": parses, as a smaller vocabulary with default settings
        from sentencepiece import sentencepiece_model_pb2
        model = sentencepiece_model_pb2.ModelProto.FromString(data)
        del model.pieces[10:]
        model.ClearField("trainer_spec")
        model.ClearField("normalizer_spec")
        path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("make, how", [
    (lambda: tokenizers.CharTokenizer.train(TEXT), "truncated"),
    (lambda: tokenizers.CharTokenizer.train(TEXT), "garbage"),
    (lambda: tokenizers.CharTokenizer.train(TEXT), "empty"),
    (lambda: tokenizers.SentencePieceTokenizer.train(TEXT, 30), "truncated"),
    (lambda: tokenizers.SentencePieceTokenizer.train(TEXT, 30), "garbage"),
    (lambda: tokenizers.SentencePieceTokenizer.train(TEXT, 30), "empty"),
    (lambda: tokenizers.SentencePieceTokenizer.train(TEXT, 30), "cut at a piece boundary"),
])
def test_damaged_tokenizer_file_is_named(tmp_path, make, how):
    name, data = make().asset()
    (tmp_path / name).write_bytes(data)
    _damage(tmp_path / name, how)
    with pytest.raises(UserError, match=f"^{tmp_path / name} is damaged .the run's tokenizer.: "):
        tokenizers.load_from_workdir(tmp_path)


def test_damaged_tokenizer_in_a_workdir_is_one_line_for_sample_and_resume(tmp_path, text_file):
    """Whatever reads the workdir's tokenizer (sample, the resumed training run) stops with one
    line naming the file, before any work."""
    flags = [*gpt_flags(text_file, num_steps=10), "--config.data.tokenizer=sentencepiece",
             "--config.data.vocab_size=30"]
    run_cli("train", "--workdir", tmp_path, *flags)
    path = tmp_path / tokenizers.SENTENCEPIECE_FILE
    intact = path.read_bytes()
    for how in ("truncated", "cut at a piece boundary"):
        path.write_bytes(intact)
        _damage(path, how)
        for command in (["sample", "--workdir", tmp_path],
                        ["train", "--workdir", tmp_path, *flags,
                         "--config.train.num_steps=20"]):
            assert_one_line_error(run_cli(*command, check=False), f"{path} is damaged")
