"""Random tokens for throughput benchmarks: no download, no tokenizer training, any vocabulary.

The batch of step s is drawn from `default_rng([seed, s])` (resume stays exact); eval uses
`eval_windows` windows drawn with the seed alone. A model cannot learn anything here: use it
to measure speed and memory, never quality.
"""

import dataclasses
import functools

import numpy as np

from fmjax.data.pipeline import DataInfo, StepPipeline, host_slice
from fmjax.ranges import PositiveInt


@dataclasses.dataclass
class SyntheticTokens:
    """config.data for `name='synthetic_tokens'`."""
    vocab_size: PositiveInt = 50257
    seq_len: PositiveInt = 1024
    eval_windows: PositiveInt = 16
    # Fresh draws of the same random tokens: no test set to keep apart from model selection.
    eval_is_validation = True

    def pipeline(self, seed: int, workdir=None) -> "SyntheticTokensPipeline":
        return SyntheticTokensPipeline(self, seed)


class SyntheticTokensPipeline(StepPipeline):
    def __init__(self, source: SyntheticTokens, seed: int):
        self.source, self.seed = source, seed
        self.info = DataInfo(num_classes=source.vocab_size, input_shape=(source.seq_len,),
                             num_train=0, num_eval=source.eval_windows)

    def _batch(self, rng: np.random.Generator, size: int) -> dict:
        window = rng.integers(0, self.source.vocab_size, (size, self.source.seq_len + 1),
                              dtype=np.int32)
        return {"inputs": window[:, :-1], "targets": window[:, 1:]}

    def train_batch(self, step: int, global_batch_size: int) -> dict:
        # Drawn for the global batch, so the data does not depend on the host count.
        batch = self._batch(np.random.default_rng([self.seed, step, 1]), global_batch_size)
        return {k: v[host_slice(global_batch_size)] for k, v in batch.items()}

    @functools.cached_property
    def _eval_windows(self) -> dict:
        return self._batch(np.random.default_rng([self.seed, 0]), self.source.eval_windows)

    def eval_examples(self, index: np.ndarray) -> dict:
        return {k: v[index] for k, v in self._eval_windows.items()}
