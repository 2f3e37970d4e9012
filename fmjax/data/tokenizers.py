"""Tokenizers for text sources, saved as a workdir asset so eval and sampling reload exactly the
vocabulary the model was trained with.

- `char`: one token per distinct character of the training text (nanoGPT's shakespeare_char).
- `sentencepiece`: a subword model trained locally on the training text.
"""

import io
import json

import numpy as np

from fmjax.errors import UserError, first_line
from fmjax.runtime import workdir_files
from fmjax.token_ids import PAD_ID
CHAR_FILE = "tokenizer_char.json"
SENTENCEPIECE_FILE = "tokenizer.model"
WHAT = "the run's tokenizer"   # how error messages name these files


class UnknownCharacters(UserError):
    """Text with characters a char vocabulary lacks (the char tokenizer has no <unk>)."""

    def __init__(self, unknown: list[str], first: int):
        self.unknown, self.first = unknown, first   # sorted distinct characters; first index
        super().__init__(f"characters not in the model's vocabulary: {''.join(unknown)!r}")


class CharTokenizer:
    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self._codes = np.array([ord(c) for c in chars], np.int64)
        self.vocab_size = len(chars)

    @classmethod
    def train(cls, text: str, vocab_size: int = 0) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    def encode(self, text: str, unknown_id: int | None = None) -> np.ndarray:
        """int32 ids, one per character, at numpy speed (whole corpora go through here);
        characters the vocabulary lacks become `unknown_id` (None: UnknownCharacters)."""
        # surrogatepass: a command-line argument with undecodable bytes holds lone surrogates.
        codes_T = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
        lookup = np.full(max(codes_T.max(initial=0), self._codes.max(initial=0)) + 1, -1, np.int32)
        lookup[self._codes] = np.arange(self.vocab_size)
        ids_T = lookup[codes_T]
        unknown_T = ids_T < 0
        if unknown_T.any():
            if unknown_id is None:
                raise UnknownCharacters(sorted(set(chr(c) for c in codes_T[unknown_T])),
                                        int(np.argmax(unknown_T)))
            ids_T[unknown_T] = unknown_id
        return ids_T

    encode_corpus = encode

    def encode_batch(self, texts: list[str], unknown_id: int | None = None) -> list[np.ndarray]:
        """`encode` of each text."""
        return [self.encode(text, unknown_id) for text in texts]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def decode_batch(self, rows) -> list[str]:
        """`decode` of each row of ids."""
        return [self.decode(ids) for ids in rows]

    def stream_decoder(self):
        """Text of successive id chunks; joined, exactly `decode` of all ids."""
        return self.decode

    def asset(self) -> tuple[str, bytes]:
        return CHAR_FILE, json.dumps({"chars": self.chars}).encode()

    @classmethod
    def from_file(cls, path) -> "CharTokenizer":
        """The tokenizer `asset()` stored in `path`; UserError naming the file if damaged."""
        stored = workdir_files.read_json(path, WHAT)
        chars = stored.get("chars") if isinstance(stored, dict) else None
        if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
            raise workdir_files.damaged(path, WHAT, 'expected {"chars": "<each vocabulary '
                                                    'character once>"}')
        return cls(chars)


def _line_chunks(text: str, lines_per_chunk: int = 64) -> list[str]:
    """`text` cut at line ends into chunks that concatenate back to exactly `text`."""
    lines = text.splitlines(keepends=True)
    return ["".join(lines[i:i + lines_per_chunk]) for i in range(0, len(lines), lines_per_chunk)]


class SentencePieceTokenizer:
    """Unigram SentencePiece that keeps text as it is: newlines are a piece of their own,
    whitespace is not normalised, so decode(encode(text)) == text for every character the
    training text contains; other characters become <unk> (id 0), never an error."""
    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self.sp.get_piece_size()

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "SentencePieceTokenizer":
        return cls.train_unigram(iter(_line_chunks(text)), vocab_size,
                                 user_defined_symbols=["\n"], normalization_rule_name="identity",
                                 remove_extra_whitespaces=False, add_dummy_prefix=False,
                                 max_sentence_length=1 << 20)

    @classmethod
    def train_on_sentences(cls, sentences: list[str], vocab_size: int) -> "SentencePieceTokenizer":
        """For one-line sentences (translation): SentencePiece's usual whitespace handling (runs
        collapsed, a word-start marker on the first word too), so a word is the same piece
        wherever it stands; decode gives the sentence with its whitespace normalised."""
        return cls.train_unigram(iter(sentences), vocab_size, normalization_rule_name="identity")

    @classmethod
    def train_unigram(cls, sentences, vocab_size: int, **options) -> "SentencePieceTokenizer":
        """A unigram model; `options` (SentencePieceTrainer's) override the defaults here."""
        import sentencepiece as spm
        model = io.BytesIO()
        defaults = dict(model_type="unigram", character_coverage=1.0, num_threads=1,
                        minloglevel=2, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0)
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=sentences, model_writer=model,
                                           vocab_size=vocab_size, **{**defaults, **options})
        except RuntimeError as e:   # e.g. "Vocabulary size too high (8000). Please set it to ..."
            raise UserError(f"cannot train a {vocab_size}-piece SentencePiece model on this text: "
                            f"{first_line(e)} (config.data.vocab_size)")
        return cls(model.getvalue())

    @property
    def eos_id(self) -> int:
        """The id of the `</s>` control piece (-1: the model has none)."""
        return self.sp.eos_id()

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.sp.encode(text), np.int32)

    def encode_batch(self, texts: list[str], add_eos: bool = False) -> list[np.ndarray]:
        """int32 ids of each text (followed by `eos_id` with `add_eos`); text outside the
        vocabulary becomes <unk>."""
        return [np.array(ids, np.int32) for ids in self.sp.encode(list(texts), add_eos=add_eos)]

    def encode_corpus(self, text: str) -> np.ndarray:
        ids = self.sp.encode(_line_chunks(text))
        return np.fromiter((i for chunk in ids for i in chunk), np.int32)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    def decode_batch(self, rows) -> list[str]:
        """`decode` of each row of ids."""
        return self.sp.decode([[int(i) for i in ids] for ids in rows])

    def stream_decoder(self):
        """Text of successive id chunks; joined, exactly `decode` of all ids.

        Decoding is per piece except at the start: SentencePiece drops the word-start space of
        the first pieces until one shows text. So after text has appeared, a chunk is decoded
        behind an anchor piece that shows text, and the anchor's own text is cut off."""
        anchor = next(i for i in range(self.vocab_size)
                      if not self.sp.is_unknown(i) and self.sp.decode([i]).strip())
        anchor_text = self.sp.decode([anchor])
        started = False

        def decode_chunk(ids) -> str:
            nonlocal started
            if started:
                return self.decode([anchor, *ids])[len(anchor_text):]
            text = self.decode(ids)
            started = bool(text)
            return text
        return decode_chunk

    def asset(self) -> tuple[str, bytes]:
        return SENTENCEPIECE_FILE, self.proto

    @classmethod
    def from_file(cls, path) -> "SentencePieceTokenizer":
        """The model `asset()` stored in `path`; UserError naming the file unless it is a whole
        SentencePiece model. One cut at a piece boundary still parses, as a smaller vocabulary
        with the default text normalisation, so whole means: both specs there, every piece."""
        from google.protobuf.message import DecodeError
        from sentencepiece import sentencepiece_model_pb2
        data = workdir_files.read_bytes(path, WHAT)
        model = sentencepiece_model_pb2.ModelProto()
        try:
            model.ParseFromString(data)
        except DecodeError:
            raise workdir_files.damaged(path, WHAT, "not a SentencePiece model")
        if not (model.HasField("trainer_spec") and model.HasField("normalizer_spec")
                and len(model.pieces) == model.trainer_spec.vocab_size > 0):
            raise workdir_files.damaged(path, WHAT, "an incomplete SentencePiece model "
                                        f"({len(model.pieces)} pieces)")
        return cls(data)


TOKENIZERS = {"char": CharTokenizer, "sentencepiece": SentencePieceTokenizer}


def pad_ids(rows, length: int) -> np.ndarray:
    """[N, length] int32: each row of token ids truncated to `length`, padded with PAD_ID."""
    out = np.full((len(rows), length), PAD_ID, np.int32)
    for out_row, ids in zip(out, rows):
        ids = list(ids)[:length]
        out_row[:len(ids)] = ids
    return out


def check_choice(kind: str, vocab_size: int) -> None:
    """UserError for an unknown `config.data.tokenizer`, or SentencePiece without a size."""
    if kind not in TOKENIZERS:
        raise UserError(f"unknown config.data.tokenizer '{kind}' "
                        f"(known: {', '.join(TOKENIZERS)})")
    if kind == "sentencepiece" and vocab_size <= 0:
        raise UserError("config.data.vocab_size must be set (> 0) for the sentencepiece "
                        "tokenizer")


def load_from_workdir(workdir) -> CharTokenizer | SentencePieceTokenizer | None:
    """The tokenizer a run stored in `workdir`, or None."""
    for file, cls in ((CHAR_FILE, CharTokenizer), (SENTENCEPIECE_FILE, SentencePieceTokenizer)):
        path = workdir_files.as_path(workdir) / file
        if path.exists():
            return cls.from_file(path)
    return None
