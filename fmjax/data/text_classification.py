"""Text classification: (label, text) examples -> token ids truncated or padded (-1) to `seq_len`.

Offline from local TSV files (`train_path`, `eval_path`; one `label<TAB>text` per line, labels
any strings, numbered in sorted order), or online from TFDS: `glue/sst2` (sentence, label;
train / validation) and `imdb_reviews` (text, label; train / test), or any TFDS dataset with
`text_key`, `train_split` and `eval_split` given.

Tokenizer: the one stored in this run's workdir (a resumed run), else the one stored in
`tokenizer_from` (the pre-training run, so token ids match its embedding table), else a char or
SentencePiece tokenizer trained on the training texts. Text it cannot encode never stops a run:
SentencePiece maps it to <unk> (id 0); the char tokenizer, which has no <unk>, maps unknown
characters to the [MASK] id (= its vocabulary size). [MASK] is what pre-training trained to mean
"a character that is there but not visible", and it keeps the embedding table exactly the
pre-trained one's size, so the encoder restores. Model ids are therefore < vocabulary + 1
(`DataInfo.vocab_size`), as in masked-LM pre-training.

Batches come from `ArrayPipeline` (the batch of step s is a function of (seed, s): exact resume;
eval padded and masked). The workdir keeps the tokenizer and the label names (`labels.json`), so
eval and resume read the data exactly as training did.
"""

import dataclasses
import json

import numpy as np

from fmjax.data import tfds_loader, tokenizers, validation
from fmjax.data.arrays import ArrayPipeline, Arrays
from fmjax.data.text import read_text_file
from fmjax.errors import UserError
from fmjax.ranges import Fraction, NonNegativeInt, PositiveInt, Seed
from fmjax.runtime import workdir_files

LABELS_FILE = "labels.json"
# TFDS datasets known by name: (text feature, train split, eval split).
TFDS_DATASETS = {"glue/sst2": ("sentence", "train", "validation"),
                 "imdb_reviews": ("text", "train", "test")}


@dataclasses.dataclass
class TextClassification:
    """config.data for `name='text_classification'`."""
    train_path: str = ""             # local TSV 'label<TAB>text' per line; "" = TFDS `tfds_name`
    eval_path: str = ""
    tfds_name: str = "glue/sst2"
    text_key: str = ""               # TFDS: "" = from TFDS_DATASETS
    train_split: str = ""
    eval_split: str = ""
    data_dir: str = ""               # TFDS data_dir ("" = TFDS's default)
    download: bool = True
    seq_len: PositiveInt = 128       # tokens per example (longer texts are truncated)
    tokenizer_from: str = ""         # a workdir whose tokenizer to use (the pre-training run)
    tokenizer: str = "char"          # without tokenizer_from: char | sentencepiece, trained here
    vocab_size: NonNegativeInt = 0   # sentencepiece trained here: its vocabulary size
    # Of the training examples, held out as the validation split (val/*), stratified and fixed
    # by validation_seed (fmjax/data/validation.py): for datasets whose eval split is a test
    # split (IMDB). A tokenizer trained here sees their text, never their labels.
    validation_fraction: Fraction = 0.0
    validation_seed: Seed = 0

    @property
    def eval_is_validation(self) -> bool:
        """Model selection may read eval/* when the eval split is a TFDS validation split (SST-2:
        yes; IMDB's is its test split) or a local `eval_path` (give it a validation file)."""
        eval_split = self.eval_split or TFDS_DATASETS.get(self.tfds_name, ("", "", ""))[2]
        return bool(self.eval_path) or validation.names_validation_split(eval_split)

    def read(self) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
        """(train texts, train labels, eval texts, eval labels, label names)."""
        if self.train_path or self.eval_path:
            if not (self.train_path and self.eval_path):
                raise UserError("set both config.data.train_path and config.data.eval_path "
                                "(local TSV files) or neither (TFDS)")
            train_texts, train_labels = read_tsv(self.train_path, "config.data.train_path")
            eval_texts, eval_labels = read_tsv(self.eval_path, "config.data.eval_path")
            names = sorted(set(train_labels))
            unknown = sorted(set(eval_labels) - set(names))
            if unknown:
                raise UserError(f"config.data.eval_path has label {unknown[0]!r}, which no "
                                f"training example has (training labels: {', '.join(names)})")
            return train_texts, train_labels, eval_texts, eval_labels, names
        return self._read_tfds()

    def _read_tfds(self):
        text_key, train_split, eval_split = TFDS_DATASETS.get(self.tfds_name, ("", "", ""))
        text_key, train_split, eval_split = (self.text_key or text_key,
                                             self.train_split or train_split,
                                             self.eval_split or eval_split)
        if not (text_key and train_split and eval_split):
            raise UserError(f"TFDS dataset '{self.tfds_name}' is not one of "
                            f"{', '.join(TFDS_DATASETS)}; set config.data.text_key, train_split "
                            "and eval_split")
        out = []
        for split in (train_split, eval_split):
            ds, info = tfds_loader.load(
                self.tfds_name, split, data_dir=self.data_dir, download=self.download,
                with_info=True, offline_hint="offline: set config.data.train_path and "
                                             "config.data.eval_path to local TSV files")
            tfds_loader.require_features(ds.element_spec, self.tfds_name, (text_key, "label"))
            names = list(info.features["label"].names)
            rows = [(ex[text_key].decode("utf-8"), names[ex["label"]])
                    for ex in ds.as_numpy_iterator()]
            out += [[r[0] for r in rows], [r[1] for r in rows]]
        return (*out, names)

    def tokenizer_for(self, train_texts: list[str], workdir):
        """This run's stored tokenizer, else `tokenizer_from`'s, else one trained here."""
        stored = tokenizers.load_from_workdir(workdir) if workdir else None
        if stored is None and self.tokenizer_from:
            if not workdir_files.as_path(self.tokenizer_from).is_dir():
                raise UserError(f"config.data.tokenizer_from: no such directory "
                                f"{self.tokenizer_from}")
            stored = tokenizers.load_from_workdir(self.tokenizer_from)
            if stored is None:
                raise UserError(f"config.data.tokenizer_from: {self.tokenizer_from} holds no "
                                "tokenizer (not a text run's workdir)")
        if stored is not None:
            return stored
        tokenizers.check_choice(self.tokenizer, self.vocab_size)
        return tokenizers.TOKENIZERS[self.tokenizer].train("\n".join(train_texts),
                                                           self.vocab_size)

    def pipeline(self, seed: int, workdir=None) -> "TextClassificationPipeline":
        if self.seq_len <= 0:
            raise UserError(f"config.data.seq_len must be positive, got {self.seq_len}")
        train_texts, train_labels, eval_texts, eval_labels, names = self.read()
        if not train_texts or not eval_texts:
            raise UserError("the training or eval split has no examples")
        stored_names = _stored_label_names(workdir)
        if stored_names is not None and stored_names != names:
            raise UserError(f"the workdir's labels ({', '.join(stored_names)}) differ from the "
                            f"data's ({', '.join(names)}); use a new workdir")
        tokenizer = self.tokenizer_for(train_texts, workdir)
        number = {name: i for i, name in enumerate(names)}
        arrays = Arrays(encode_padded(tokenizer, train_texts, self.seq_len),
                        np.array([number[y] for y in train_labels], np.int32),
                        encode_padded(tokenizer, eval_texts, self.seq_len),
                        np.array([number[y] for y in eval_labels], np.int32), len(names))
        arrays = arrays.hold_out(self.validation_fraction, self.validation_seed)
        return TextClassificationPipeline(arrays, seed, tokenizer, names)


class TextClassificationPipeline(ArrayPipeline):
    """ArrayPipeline over token ids; keeps the tokenizer and the label names as assets."""

    def __init__(self, arrays: Arrays, seed: int, tokenizer, label_names: list[str]):
        super().__init__(arrays, seed)
        self.tokenizer = tokenizer
        self.label_names = label_names
        self.info = dataclasses.replace(self.info, vocab_size=tokenizer.vocab_size + 1,
                                        input_dtype="int32")

    def assets(self) -> dict[str, bytes]:
        return dict([self.tokenizer.asset(),
                     (LABELS_FILE, json.dumps(self.label_names).encode())])


def read_tsv(path: str, key: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of a 'label<TAB>text' file; blank lines are skipped."""
    texts, labels = [], []
    for number, line in enumerate(read_text_file(path, key).splitlines(), 1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise UserError(f"{path}:{number}: expected 'label<TAB>text', found no tab")
        labels.append(label)
        texts.append(text)
    return texts, labels


def encode_padded(tokenizer, texts: list[str], seq_len: int) -> np.ndarray:
    """[N, seq_len] int32 token ids, truncated, padded with PAD_ID; unknown text -> <unk> or
    [MASK] (see the module docstring), never an error."""
    if tokenizer.kind == "char":
        texts = [text[:seq_len] for text in texts]   # one character, one token: encode no more
        return tokenizers.pad_ids(tokenizer.encode_batch(texts, unknown_id=tokenizer.vocab_size),
                                  seq_len)
    return tokenizers.pad_ids(tokenizer.encode_batch(texts), seq_len)


def _stored_label_names(workdir) -> list[str] | None:
    path = workdir_files.as_path(workdir) / LABELS_FILE if workdir else None
    if path is None or not path.exists():
        return None
    names = workdir_files.read_json(path, "the run's label names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise workdir_files.damaged(path, "the run's label names", "expected a list of strings")
    return names
