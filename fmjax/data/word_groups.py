"""An offline text-classification task that only pre-training can solve (tests, notebooks).

Two hidden groups of 30 one-character "words". Unlabelled sentences use the words of one group;
the labelled task is "which group is this sentence from", with training sentences that use only
`seen` words of each group and eval sentences that use only the others. The labels alone say
nothing about the eval words; masked-LM pre-training on the unlabelled sentences learns which
words go together, so only a pre-trained encoder can classify the eval sentences. (One character
per word makes a char-level masked LM a word-level one.)
"""

import pathlib

import numpy as np

WORDS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
LABELS = "AB"


def word_groups(seed: int = 0, per_group: int = 30) -> list[list[str]]:
    words = np.random.default_rng(seed).permutation(list(WORDS))
    return [list(words[:per_group]), list(words[per_group:2 * per_group])]


def write_task(root, seed: int = 0, num_unlabelled: int = 3000, num_train: int = 40,
               num_eval: int = 400, seen: int = 6) -> None:
    """`root`/corpus.txt (unlabelled, one sentence a line), train.tsv and eval.tsv ('A' or 'B',
    a tab, a sentence: `data.name=text_classification`'s format)."""
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed + 1)
    groups = word_groups(seed)

    def sentence(words):
        return "".join(rng.choice(words, rng.integers(8, 16)))

    lines = [sentence(groups[rng.integers(2)]) for _ in range(num_unlabelled)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    train = [f"{LABELS[i % 2]}\t{sentence(groups[i % 2][:seen])}" for i in range(num_train)]
    (root / "train.tsv").write_text("\n".join(train) + "\n")
    evals = [f"{LABELS[i % 2]}\t{sentence(groups[i % 2][seen:])}" for i in range(num_eval)]
    (root / "eval.tsv").write_text("\n".join(evals) + "\n")
