"""Sentence-per-example text from TensorFlow Datasets (lm1b by default), as packed token windows.

Tokenizer: a unigram SentencePiece model trained on the first `tokenizer_sentences` sentences of
the training split (in its stored order, so every host trains the same model), or reloaded from
the workdir's `tokenizer.model` when the run already has one. Unlike the `text` source's
tokenizer it has an end-of-sentence control piece, `</s>` (id 1; `<unk>` is 0), so the model sees
where sentences end. `fmjax sample` decodes `</s>` to nothing (it is a control piece).

Packing, per step and host: the sentences are read by index (`tfds.data_source`, ArrayRecord
files) in seeded per-epoch permutations (record_order.py). Step s on host h of H reads the
sentences from position (s * H + h) * k on, where k (sentences per step) is the step's tokens
divided by the mean tokens per sentence of the first training sentences, rounded up. It encodes
them as `</s> s1 </s> s2 </s> ...` and cuts `batch / H` windows of `seq_len + 1` tokens with
stride `seq_len` (one token of overlap), so within a step every token but the first is a target
exactly once: inputs = window[:-1], targets = window[1:]. Windows cross sentence boundaries;
attention is not reset at `</s>` (as in GPT-2 / nanoGPT packing). The tail of the step's last
sentence is dropped; when k sentences fall short, the step reads on, about as many sentences as
are missing, into the next step's block (those are seen twice). Measured under mock data (9 tokens
a sentence): 4096 tokens a step (k = 451) drop 0.2% of the tokens read and read 0.8% of the
sentences twice; 128 tokens a step (k = 15) drop 6%.

Why per step: where one packed stream runs through the whole epoch, the window of step s starts
at a token offset that depends on the length of every sentence before it, so resuming means
tokenizing all of them again (what tf.data's `skip` did). Here the batch of step s is a pure
function of (seed, s, host count): a run resumed at step s reads and tokenizes about k sentences
per step it runs, nothing before. Resuming with another number of hosts changes the batches.

Eval: the windows of the whole eval split (or the first `eval_windows`), packed as one stream in
the stored order, read once into memory and padded + masked per global batch, so `eval/loss` is
the mean over every evaluated token and every host runs the same number of eval batches.

TensorFlow is imported only when this source is used.
"""

import dataclasses
import functools
import math
from typing import Annotated, Iterator

import jax
import numpy as np

from fmjax.data import tfds_loader, tokenizers, validation
from fmjax.data.pipeline import DataInfo, StepPipeline, local_batch_size
from fmjax.data.record_order import RecordOrder
from fmjax.data.text import TokenWindows
from fmjax.errors import UserError
from fmjax.ranges import INT32_MAX, NonNegativeInt, PositiveInt, Range

UNK_ID, EOS_ID = 0, 1
SENTENCES_PER_READ = 1024     # sentences read and tokenized at a time (eval, tokenizer, k's sample)


@dataclasses.dataclass
class TFDSText:
    """config.data for `name='tfds_text'`."""
    dataset: str = "lm1b"
    text_key: str = "text"
    train_split: str = "train"
    eval_split: str = "test"
    data_dir: str = ""               # "" = TFDS's default (~/tensorflow_datasets)
    download: bool = True            # False: fail at once when the dataset is not prepared
    seq_len: PositiveInt = 128       # tokens per window
    # SentencePiece vocabulary, <unk> and </s> included
    vocab_size: Annotated[int, Range(3, INT32_MAX, integer=True)] = 8000
    tokenizer_sentences: PositiveInt = 100_000   # training sentences the tokenizer is trained on
    eval_windows: NonNegativeInt = 0    # eval windows (0 = the whole eval split)

    @property
    def eval_is_validation(self) -> bool:
        """Model selection may read eval/* when the eval split is a validation split (lm1b has
        only train and test: its eval split is the test split)."""
        return validation.names_validation_split(self.eval_split)

    def data_source(self, split: str):
        """`split` as a random-access sequence of examples that have `text_key`."""
        return tfds_loader.data_source(self.dataset, split, (self.text_key,),
                                       data_dir=self.data_dir, download=self.download)

    def sentences(self, source, index) -> list[str]:
        """The sentences of `source` at record numbers `index`."""
        return [_as_str(ex[self.text_key]) for ex in tfds_loader.read(source, index)]

    def first_sentences(self, source, limit: int = 0) -> Iterator[str]:
        """The sentences of `source` in stored order (the first `limit`, if given)."""
        end = min(limit, len(source)) if limit else len(source)
        for first in range(0, end, SENTENCES_PER_READ):
            yield from self.sentences(source, range(first, min(first + SENTENCES_PER_READ, end)))

    def train_tokenizer(self, train) -> tokenizers.SentencePieceTokenizer:
        # Read first: the trainer pulls from the iterator while holding the GIL.
        sentences = list(self.first_sentences(train, self.tokenizer_sentences))
        return tokenizers.SentencePieceTokenizer.train_unigram(
            iter(sentences), self.vocab_size,
            character_coverage=0.9995, unk_id=UNK_ID, eos_id=EOS_ID)

    def pipeline(self, seed: int, workdir=None) -> "TFDSTextPipeline":
        train = self.data_source(self.train_split)
        tokenizer = tokenizers.load_from_workdir(workdir) if workdir else None
        if tokenizer is None:
            tokenizer = self.train_tokenizer(train)
        elif (tokenizer.kind != "sentencepiece" or tokenizer.eos_id != EOS_ID
              or tokenizer.vocab_size != self.vocab_size):
            raise UserError(f"the workdir's tokenizer ({tokenizer.kind}, "
                            f"{tokenizer.vocab_size} tokens) is not a {self.vocab_size}-token "
                            "SentencePiece model with </s>; use a new workdir")
        eval_ids = pack(tokenizer, self.first_sentences(self.data_source(self.eval_split)),
                        self.eval_windows * self.seq_len + 1 if self.eval_windows else 0)
        eval_starts = np.arange(0, len(eval_ids) - self.seq_len, self.seq_len)
        if self.eval_windows:
            eval_starts = eval_starts[:self.eval_windows]
        if not len(eval_starts):
            raise UserError(f"config.data.seq_len={self.seq_len} is longer than the eval split "
                            f"'{self.eval_split}' ({len(eval_ids)} tokens)")
        data_info = DataInfo(num_classes=tokenizer.vocab_size, input_shape=(self.seq_len,),
                             num_train=len(train), num_eval=len(eval_starts))   # train: sentences
        return TFDSTextPipeline(self, train, tokenizer, eval_ids, eval_starts, data_info, seed)


def _as_str(text) -> str:
    """A decoded text feature (bytes from ArrayRecord files, str from some sources) as str."""
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)


def encode_chunk(tokenizer, texts) -> np.ndarray:
    """Sentences -> one int32 stream, each sentence followed by </s>."""
    return np.concatenate([np.zeros(0, np.int32),
                           *tokenizer.encode_batch(list(texts), add_eos=True)])


def pack(tokenizer, sentences: Iterator[str], max_tokens: int = 0) -> np.ndarray:
    """</s> s1 </s> s2 </s> ... as one array (stops once it holds `max_tokens`, if given)."""
    chunks, total, batch = [np.array([EOS_ID], np.int32)], 1, []
    for text in sentences:
        batch.append(text)
        if len(batch) == SENTENCES_PER_READ:
            chunks.append(encode_chunk(tokenizer, batch))
            total, batch = total + len(chunks[-1]), []
            if max_tokens and total >= max_tokens:
                break
    if batch:
        chunks.append(encode_chunk(tokenizer, batch))
    ids = np.concatenate(chunks)
    return ids[:max_tokens] if max_tokens else ids


class TFDSTextPipeline(TokenWindows, StepPipeline):
    """Per step and host, `batch / process_count` windows packed from the sentences the step
    reads by index (see the module docstring)."""

    def __init__(self, source: TFDSText, train, tokenizer, eval_ids: np.ndarray,
                 eval_starts: np.ndarray, info: DataInfo, seed: int):
        self.source, self.train, self.tokenizer, self.info = source, train, tokenizer, info
        self.order = RecordOrder(len(train), seed)
        self.seq_len = source.seq_len
        self.eval_ids, self.eval_starts = eval_ids, eval_starts

    @functools.cached_property
    def tokens_per_sentence(self) -> float:
        """Mean tokens (</s> included) of the first training sentences in stored order: the
        same on every host and after every restart, so k is too."""
        sample = self.source.first_sentences(self.train, SENTENCES_PER_READ)
        return len(encode_chunk(self.tokenizer, sample)) / min(SENTENCES_PER_READ, len(self.train))

    def _step_tokens(self, step: int, num_tokens: int) -> np.ndarray:
        """</s> s1 </s> s2 ... from this host's first position of `step` on, `num_tokens` long."""
        per_step = math.ceil(num_tokens / self.tokens_per_sentence)   # k
        position = (step * jax.process_count() + jax.process_index()) * per_step
        chunks, total, count = [np.array([EOS_ID], np.int32)], 1, per_step
        while total < num_tokens:   # k sentences fell short: read on, about as many as missing
            index = self.order[np.arange(position, position + count)]
            chunks.append(encode_chunk(self.tokenizer, self.source.sentences(self.train, index)))
            total, position = total + len(chunks[-1]), position + count
            count = math.ceil((num_tokens - total) / self.tokens_per_sentence)
        return np.concatenate(chunks)[:num_tokens]

    def train_batch(self, step: int, global_batch_size: int) -> dict:
        local_batch = local_batch_size(global_batch_size)
        ids = self._step_tokens(step, local_batch * self.seq_len + 1)   # windows overlap by one
        return self._windows(ids, np.arange(local_batch) * self.seq_len)
