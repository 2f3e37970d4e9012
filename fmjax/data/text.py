"""Language-model text: one long token stream, split like nanoGPT (first 90% train, rest val).

The text is a local UTF-8 file (`path`) or TFDS `tiny_shakespeare` (its train, validation and test
texts joined back into the original file, then split the same way). The tokenizer is trained on
the training part, or reloaded from the workdir when the run already has one, and saved there.
The char tokenizer has no <unk>: a validation character the training part lacks stops the run
with one line naming it (its loss would mean nothing); SentencePiece maps it to <unk>.

Training windows start at offsets drawn from `default_rng([seed, step])`, so the batch at step s
is a pure function of (seed, s) and resume is exact. Eval uses non-overlapping windows of the
validation part (all of it by default), so `eval/loss` is the loss on the whole split.
"""

import dataclasses
import pathlib
import numpy as np

from fmjax.data import tfds_loader, tokenizers
from fmjax.data.pipeline import DataInfo, Pipeline, StepPipeline, host_slice
from fmjax.errors import UserError
from fmjax.ranges import NonNegativeInt, OpenFraction, PositiveInt


@dataclasses.dataclass
class Text:
    """config.data for `name='text'`."""
    path: str = ""                      # local UTF-8 text file; "" = TFDS `tfds_name`
    tfds_name: str = "tiny_shakespeare"
    data_dir: str = ""                  # TFDS data_dir ("" = TFDS's default)
    val_fraction: OpenFraction = 0.1
    seq_len: PositiveInt = 256          # tokens per training window
    tokenizer: str = "char"             # char | sentencepiece
    vocab_size: NonNegativeInt = 0      # sentencepiece: size of the vocabulary to train
    eval_windows: NonNegativeInt = 0    # validation windows per eval (0 = the whole split)
    # The eval split is the last val_fraction of the text, held out of training (nanoGPT's
    # protocol), not a test set: model selection may read eval/* (fmjax/data/validation.py).
    eval_is_validation = True

    def read_text(self) -> str:
        if self.path:
            return read_text_file(self.path, "config.data.path")
        parts = []
        for split in ("train", "validation", "test"):   # together: the original file
            ds = tfds_loader.load(self.tfds_name, split, data_dir=self.data_dir,
                                  offline_hint="offline: set config.data.path to a local text "
                                               "file")
            parts += [ex["text"].decode("utf-8") for ex in ds.as_numpy_iterator()]
        return "".join(parts)

    def pipeline(self, seed: int, workdir=None) -> "TextPipeline":
        tokenizers.check_choice(self.tokenizer, self.vocab_size)
        text = self.read_text()
        if not text:
            raise UserError("the text is empty (config.data.path / config.data.tfds_name)")
        split = int(len(text) * (1 - self.val_fraction))
        train_text, val_text = text[:split], text[split:]
        self._check_windows_fit(len(train_text), len(val_text), "characters")   # tokens <= chars
        stored = tokenizers.load_from_workdir(workdir) if workdir else None
        if stored is not None and (stored.kind != self.tokenizer or (
                self.tokenizer == "sentencepiece" and stored.vocab_size != self.vocab_size)):
            raise UserError(f"the workdir's tokenizer ({stored.kind}, {stored.vocab_size} tokens) "
                            f"does not match config.data (tokenizer '{self.tokenizer}', "
                            f"vocab_size {self.vocab_size}); use a new workdir")
        tokenizer = stored or tokenizers.TOKENIZERS[self.tokenizer].train(train_text,
                                                                         self.vocab_size)
        if stored is not None and self.tokenizer == "char" and \
                tokenizer.chars != tokenizers.CharTokenizer.train(train_text).chars:
            raise UserError("the workdir's character vocabulary differs from this text's; "
                            "the checkpoint was trained on other data: use a new workdir")
        train_ids = tokenizer.encode_corpus(train_text)
        try:
            val_ids = tokenizer.encode_corpus(val_text)
        except tokenizers.UnknownCharacters as e:
            raise UserError(_unseen_characters(e, text, split))
        self._check_windows_fit(len(train_ids), len(val_ids), "tokens")
        return TextPipeline(train_ids, val_ids, tokenizer, self.seq_len, seed, self.eval_windows)

    def _check_windows_fit(self, train_size: int, val_size: int, unit: str) -> None:
        """UserError unless both parts hold a window of seq_len + 1 tokens (inputs + targets)."""
        for part, size in (("training", train_size), ("validation", val_size)):
            if size <= self.seq_len:
                raise UserError(
                    f"config.data.seq_len={self.seq_len} is longer than the {part} text "
                    f"({size} {unit}; a window takes seq_len + 1, val_fraction="
                    f"{self.val_fraction:g}); use a shorter window or more text")


def _unseen_characters(error: tokenizers.UnknownCharacters, text: str, split: int) -> str:
    """The line for validation characters the char vocabulary (from the training part) lacks:
    the model never saw them, so no loss on them would mean anything."""
    count, shown = len(error.unknown), ", ".join(map(repr, error.unknown[:8]))
    more = f" and {count - 8} more" if count > 8 else ""
    first = split + error.first
    line = text.count("\n", 0, first) + 1
    return (f"the validation text has {count} character{'s' * (count > 1)} the training text "
            f"lacks: {shown}{more} (first on line {line}, at character {first}); remove them or "
            "use config.data.tokenizer=sentencepiece (which maps them to <unk>)")


def read_text_file(path: str, key: str) -> str:
    """The text of the UTF-8 file `path`, named by config key `key` in the error line."""
    file = pathlib.Path(path).expanduser()
    if not file.exists():
        raise UserError(f"{key}: no such file: {path}")
    if file.is_dir():
        raise UserError(f"{key}: {path} is a directory, not a text file")
    if not file.is_file():   # reading a device or a pipe may never end
        raise UserError(f"{key}: {path} is a device or a pipe, not a text file")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:   # e.start: the file offset (read() decodes all at once)
        raise UserError(f"{key}: {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
                        f"offset {e.start}); convert it to UTF-8")
    except OSError as e:   # no permission, an I/O error
        raise UserError(f"{key}: cannot read {path}: {e.strerror or e}")


class TokenWindows(Pipeline):
    """What every token-stream pipeline shares: windows of seq_len + 1 tokens become inputs and
    targets; eval runs over fixed windows `eval_starts` of `eval_ids`; the tokenizer is the
    workdir asset."""
    tokenizer: tokenizers.CharTokenizer | tokenizers.SentencePieceTokenizer
    seq_len: int
    eval_ids: np.ndarray
    eval_starts: np.ndarray

    def assets(self) -> dict[str, bytes]:
        """Files the workdir keeps so resume, eval and sampling reload this exact tokenizer."""
        return dict([self.tokenizer.asset()])

    def _windows(self, ids: np.ndarray, starts: np.ndarray) -> dict:
        window_BT = ids[starts[:, None] + np.arange(self.seq_len + 1)]
        return {"inputs": window_BT[:, :-1], "targets": window_BT[:, 1:]}

    def eval_examples(self, index: np.ndarray) -> dict:
        return self._windows(self.eval_ids, self.eval_starts[index])


class TextPipeline(TokenWindows, StepPipeline):
    """Random training windows of one in-memory token stream; non-overlapping eval windows."""

    def __init__(self, train_ids, eval_ids, tokenizer, seq_len: int, seed: int,
                 eval_windows: int):
        self.train_ids, self.eval_ids = train_ids, eval_ids
        self.tokenizer, self.seq_len, self.seed = tokenizer, seq_len, seed
        starts = np.arange(0, len(eval_ids) - seq_len, seq_len)
        self.eval_starts = starts[:eval_windows] if eval_windows else starts
        self.info = DataInfo(num_classes=tokenizer.vocab_size, input_shape=(seq_len,),
                             num_train=len(train_ids), num_eval=len(self.eval_starts))

    def train_batch(self, step: int, global_batch_size: int) -> dict:
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.train_ids) - self.seq_len, size=global_batch_size)
        return self._windows(self.train_ids, starts[host_slice(global_batch_size)])
