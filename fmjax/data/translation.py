"""Sentence pairs for translation: TFDS (`ted_hrlr_translate/pt_to_en` by default), local TSV
files, or generated number words (offline).

One SentencePiece model is trained on the source and target sides of the training pairs together
(a shared vocabulary, so one embedding serves encoder, decoder and output), or reloaded from the
workdir when the run already has one. Text it cannot encode becomes `<unk>` (id 0), never an
error. Token arrays are padded with -1. Training pairs longer than `source_len` / `target_len`
(target + EOS) are left out; eval sources are truncated instead, so every eval pair is translated
and BLEU is scored against the raw reference text.

Batching is `ArrayPipeline`'s: shuffled epochs, the batch of step s a pure function of (seed, s),
so resume is exact; eval is the whole eval split, padded and masked. Batches are
{"inputs": source_BS, "labels": target_BT (ending in EOS)}; EOS and BOS are the two ids after the
tokenizer's vocabulary (`eos_id`, `bos_id`).
"""

import dataclasses
from typing import Annotated

import numpy as np

from fmjax.data import number_words, tfds_loader, tokenizers, validation
from fmjax.data.arrays import Arrays, ArrayPipeline
from fmjax.data.text import read_text_file
from fmjax.errors import UserError
from fmjax.ranges import NonNegativeInt, PositiveInt, Range, Seed

Pairs = list[tuple[str, str]]


def eos_id(vocab_size: int) -> int:
    return vocab_size


def bos_id(vocab_size: int) -> int:
    return vocab_size + 1


class TranslationPipeline(ArrayPipeline):
    """`ArrayPipeline` over padded token pairs, with the tokenizer (a workdir asset) and the raw
    eval references (for BLEU)."""

    def __init__(self, arrays: Arrays, seed: int, tokenizer, references: list[str]):
        super().__init__(arrays, seed)
        self.tokenizer = tokenizer
        self.references = references

    def assets(self) -> dict[str, bytes]:
        return dict([self.tokenizer.asset()])


def _padded(ids_list, length: int, eos: int | None) -> np.ndarray:
    """[N, length] int32: each id list (+ EOS), truncated to `length`, padded with PAD_ID."""
    return tokenizers.pad_ids([list(ids) + ([eos] if eos is not None else [])
                               for ids in ids_list], length)


def _tokenizer(train: Pairs, vocab_size: int, workdir) -> tokenizers.SentencePieceTokenizer:
    stored = tokenizers.load_from_workdir(workdir) if workdir else None
    if stored is None:
        return tokenizers.SentencePieceTokenizer.train_on_sentences(
            [side for pair in train for side in pair], vocab_size)
    if stored.kind != "sentencepiece" or stored.vocab_size != vocab_size:
        raise UserError(f"the workdir's tokenizer ({stored.kind}, {stored.vocab_size} tokens) does "
                        f"not match config.data.vocab_size={vocab_size}; use a new workdir")
    return stored


def build_pipeline(train: Pairs, eval_pairs: Pairs, source_len: int, target_len: int,
                   vocab_size: int, seed: int, workdir) -> TranslationPipeline:
    """Tokenize, filter (train) or truncate (eval), pad: the pipeline for the given text pairs."""
    if not train or not eval_pairs:
        raise UserError("the translation data has no training or no eval pairs")
    tokenizer = _tokenizer(train, vocab_size, workdir)
    eos = eos_id(tokenizer.vocab_size)

    def encode(pairs):
        return (tokenizer.encode_batch([s for s, _ in pairs]),
                tokenizer.encode_batch([t for _, t in pairs]))

    src, tgt = encode(train)
    keep = [i for i in range(len(train))
            if len(src[i]) <= source_len and len(tgt[i]) < target_len]
    if not keep:
        raise UserError(f"no training pair fits config.data.source_len={source_len} and "
                        f"target_len={target_len} tokens; make them longer")
    eval_src, eval_tgt = encode(eval_pairs)
    arrays = Arrays(_padded([src[i] for i in keep], source_len, None),
                    _padded([tgt[i] for i in keep], target_len, eos),
                    _padded(eval_src, source_len, None), _padded(eval_tgt, target_len, eos),
                    num_classes=tokenizer.vocab_size)
    return TranslationPipeline(arrays, seed, tokenizer, [t for _, t in eval_pairs])


@dataclasses.dataclass
class Translation:
    """config.data for `name='translation'`: TFDS pairs, or local TSV files when both paths are
    set (one `source<TAB>target` pair per line)."""
    tfds_name: str = "ted_hrlr_translate/pt_to_en"
    train_split: str = "train"
    eval_split: str = "validation"
    data_dir: str = ""             # "" = TFDS's default
    download: bool = True
    train_path: str = ""
    eval_path: str = ""
    source_len: PositiveInt = 96     # tokens
    target_len: PositiveInt = 96     # tokens, EOS included
    vocab_size: PositiveInt = 8000   # the shared SentencePiece vocabulary
    eval_examples: NonNegativeInt = 0   # the first N eval pairs (0 = the whole split)

    @property
    def eval_is_validation(self) -> bool:
        """Model selection may read eval/* when the eval split is a TFDS validation split or a
        local `eval_path` (give it a validation file)."""
        return bool(self.eval_path) or validation.names_validation_split(self.eval_split)

    def _read_tsv(self, path: str, key: str) -> Pairs:
        pairs = []
        for number, line in enumerate(read_text_file(path, key).splitlines(), 1):
            if line.strip():
                parts = line.split("\t")
                if len(parts) != 2:
                    raise UserError(f"{path}:{number}: expected 'source<TAB>target'")
                pairs.append((parts[0], parts[1]))
        return pairs

    def _read_tfds(self, split: str) -> Pairs:
        ds = tfds_loader.load(self.tfds_name, split, data_dir=self.data_dir,
                              download=self.download, as_supervised=True,
                              offline_hint="offline: set config.data.train_path and eval_path "
                                           "to TSV files")
        return [(s.decode("utf-8"), t.decode("utf-8")) for s, t in ds.as_numpy_iterator()]

    def pipeline(self, seed: int, workdir=None) -> TranslationPipeline:
        if bool(self.train_path) != bool(self.eval_path):
            raise UserError("set both config.data.train_path and config.data.eval_path, or "
                            "neither (TFDS)")
        if self.train_path:
            train = self._read_tsv(self.train_path, "config.data.train_path")
            eval_pairs = self._read_tsv(self.eval_path, "config.data.eval_path")
        else:
            train, eval_pairs = self._read_tfds(self.train_split), self._read_tfds(self.eval_split)
        if self.eval_examples:
            eval_pairs = eval_pairs[:self.eval_examples]
        return build_pipeline(train, eval_pairs, self.source_len, self.target_len,
                              self.vocab_size, seed, workdir)


@dataclasses.dataclass
class SyntheticTranslation:
    """config.data for `name='synthetic_translation'`: integers written as words in one
    language -> in another (English -> Spanish by default; `fmjax/data/number_words.py`).
    The eval numbers are drawn first and never appear in training."""
    source: str = "en"
    target: str = "es"
    max_number: Annotated[int, Range(0, number_words.MAX_NUMBER, integer=True)] = 999_999
    num_train: PositiveInt = 20_000
    num_eval: PositiveInt = 500
    data_seed: Seed = 0            # which numbers (the training order is `train.seed`'s)
    source_len: PositiveInt = 16
    target_len: PositiveInt = 20
    vocab_size: PositiveInt = 100
    # Generated pairs held out of training by data_seed: no published test set to protect.
    eval_is_validation = True

    def pipeline(self, seed: int, workdir=None) -> TranslationPipeline:
        draw = dict(max_number=self.max_number, source=self.source, target=self.target)
        try:
            eval_pairs = number_words.pairs(self.num_eval, self.data_seed, **draw)
            held_out = number_words.sample_numbers(self.num_eval, self.data_seed, self.max_number)
            train = number_words.pairs(self.num_train, self.data_seed + 1, exclude=held_out,
                                       **draw)
        except ValueError as e:
            raise UserError(f"config.data: {e}")
        return build_pipeline(train, eval_pairs, self.source_len, self.target_len,
                              self.vocab_size, seed, workdir)
