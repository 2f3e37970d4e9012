"""Sentence-per-example text from TensorFlow Datasets (lm1b by default), as a packed token stream.

Tokenizer: a unigram SentencePiece model trained on the first `tokenizer_sentences` sentences of
the training split (the whole split, in its stored order, so every host trains the same model),
or reloaded from the workdir's `tokenizer.model` when the run already has one. Unlike the `text`
source's tokenizer it has an end-of-sentence control piece, `</s>` (id 1; `<unk>` is 0), so the
model sees where sentences end. `fmjax sample` decodes `</s>` to nothing (it is a control piece).

Packing: each sentence is encoded and followed by `</s>`; the stream also starts with `</s>`, so
every sentence is predicted from the same "sentence start" context. The stream is cut into
windows of `seq_len + 1` tokens with stride `seq_len` (one token of overlap), so every token but
the first is a target exactly once: inputs = window[:-1], targets = window[1:]. Windows cross
sentence boundaries; attention is not reset at `</s>` (as in GPT-2 / nanoGPT packing).

Training: this host's shard of the split (`tfds.split_for_jax_process`), sentences shuffled by a
seeded tf.data buffer (deterministic, reshuffled every epoch), tokenized and packed in numpy; each
step takes the next `batch_size / process_count` windows of the host's stream. The stream is a
pure function of (seed, host), so resuming at step s regenerates it and drops the first s
batches: the batches after resume are bit-identical to an uninterrupted run (the cost is
re-tokenizing the skipped text, about what tf.data's `skip` costs the image source).

Eval: the windows of the whole eval split (or the first `eval_windows`), packed the same way,
read once into memory and padded + masked per global batch, so `eval/loss` is the mean over every
evaluated token and every host runs the same number of eval batches.

TensorFlow is imported only when this source is used.
"""

import dataclasses
from typing import Annotated, Iterator

import numpy as np

from fmjax.data import tfds_loader, tokenizers
from fmjax.data.pipeline import DataInfo, local_batch_size
from fmjax.data.text import TokenWindows
from fmjax.errors import UserError
from fmjax.ranges import INT32_MAX, NonNegativeInt, PositiveInt, Range

UNK_ID, EOS_ID = 0, 1
SENTENCES_PER_READ = 1024     # sentences tokenized per numpy chunk


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
    shuffle_buffer: PositiveInt = 10_000   # sentences

    def load(self, split: str, this_host_only: bool = False):
        """(the sentences of `split` as a tf.data.Dataset of strings, the dataset info)."""
        ds, info = tfds_loader.load(self.dataset, split, data_dir=self.data_dir,
                                    download=self.download, this_host_only=this_host_only,
                                    with_info=True, shuffle_files=False)
        tfds_loader.require_features(ds, self.dataset, (self.text_key,))
        return ds.map(lambda ex: ex[self.text_key]), info

    def _sentences(self, split: str, limit: int = 0) -> Iterator[str]:
        ds, _ = self.load(split)
        if limit:
            ds = ds.take(limit)
        for text in ds.as_numpy_iterator():
            yield text.decode("utf-8")

    def train_tokenizer(self) -> tokenizers.SentencePieceTokenizer:
        # Read first: the trainer calls the iterator holding the GIL, which a tf.data generator
        # (e.g. under tfds.testing.mock_data) needs too.
        sentences = list(self._sentences(self.train_split, self.tokenizer_sentences))
        return tokenizers.SentencePieceTokenizer.train_unigram(
            iter(sentences), self.vocab_size, character_coverage=0.9995, unk_id=UNK_ID,
            eos_id=EOS_ID)

    def pipeline(self, seed: int, workdir=None) -> "TFDSTextPipeline":
        tokenizer = tokenizers.load_from_workdir(workdir) if workdir else None
        if tokenizer is None:
            tokenizer = self.train_tokenizer()
        elif (tokenizer.kind != "sentencepiece" or tokenizer.eos_id != EOS_ID
              or tokenizer.vocab_size != self.vocab_size):
            raise UserError(f"the workdir's tokenizer ({tokenizer.kind}, "
                            f"{tokenizer.vocab_size} tokens) is not a {self.vocab_size}-token "
                            "SentencePiece model with </s>; use a new workdir")
        eval_ids = pack(tokenizer, self._sentences(self.eval_split),
                        self.eval_windows * self.seq_len + 1 if self.eval_windows else 0)
        eval_starts = np.arange(0, len(eval_ids) - self.seq_len, self.seq_len)
        if self.eval_windows:
            eval_starts = eval_starts[:self.eval_windows]
        if not len(eval_starts):
            raise UserError(f"config.data.seq_len={self.seq_len} is longer than the eval split "
                            f"'{self.eval_split}' ({len(eval_ids)} tokens)")
        _, info = self.load(self.train_split)
        data_info = DataInfo(num_classes=tokenizer.vocab_size, input_shape=(self.seq_len,),
                             num_train=tfds_loader.num_examples(info, self.train_split),
                             num_eval=len(eval_starts))   # num_train: sentences
        return TFDSTextPipeline(self, tokenizer, eval_ids, eval_starts, data_info, seed)


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


class TFDSTextPipeline(TokenWindows):
    """This host's packed sentence stream, consumed `batch / process_count` windows per step."""

    def __init__(self, source: TFDSText, tokenizer, eval_ids: np.ndarray,
                 eval_starts: np.ndarray, info: DataInfo, seed: int):
        self.source, self.tokenizer, self.seed, self.info = source, tokenizer, seed, info
        self.seq_len = source.seq_len
        self.eval_ids, self.eval_starts = eval_ids, eval_starts

    def _train_chunks(self) -> Iterator[np.ndarray]:
        """This host's packed training stream, in chunks (a pure function of seed and host)."""
        source = self.source
        ds, _ = source.load(source.train_split, this_host_only=True)
        ds = tfds_loader.training_stream(ds, shuffle_buffer=source.shuffle_buffer, seed=self.seed,
                                         batch_size=SENTENCES_PER_READ)
        yield np.array([EOS_ID], np.int32)
        for texts in ds.as_numpy_iterator():
            yield encode_chunk(self.tokenizer, (t.decode("utf-8") for t in texts))

    def train_iterator(self, start_step: int, global_batch_size: int) -> Iterator[dict]:
        local_batch = local_batch_size(global_batch_size)
        stride = local_batch * self.seq_len   # tokens one step consumes (windows overlap by one)
        starts = np.arange(local_batch) * self.seq_len
        buffer, step = np.zeros(0, np.int32), 0
        for chunk in self._train_chunks():
            buffer = np.concatenate([buffer, chunk])
            while len(buffer) > stride:   # a step needs stride + 1 tokens
                if step >= start_step:
                    yield self._windows(buffer, starts)
                buffer, step = buffer[stride:], step + 1
