"""Data pipelines: batches are a pure function of the step, hosts split every global batch
without overlap, eval covers the split exactly once, augmentation keeps shapes."""

import numpy as np
import pytest

from fmjax.data import pipeline as pipeline_lib
from fmjax.data.augment import crop_and_flip
from fmjax.data.pipeline import Arrays, ArrayPipeline


@pytest.fixture
def arrays():
    x = np.arange(50, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    return Arrays(x, np.arange(50) % 10, x[:23], np.arange(23) % 10, 10)


def test_epochs_are_permutations_and_batches_depend_only_on_the_step(arrays):
    p = ArrayPipeline(arrays, seed=3)
    seen = np.concatenate([p.train_batch(s, 10)["inputs"][:, 0] for s in range(5)])
    assert sorted(seen) == list(range(50))          # one epoch = each example exactly once
    again = ArrayPipeline(arrays, seed=3)
    np.testing.assert_array_equal(again.train_batch(7, 10)["inputs"], p.train_batch(7, 10)["inputs"])
    assert not np.array_equal(ArrayPipeline(arrays, seed=4).train_batch(0, 10)["inputs"],
                              p.train_batch(0, 10)["inputs"])


def test_hosts_take_disjoint_slices_of_the_global_batch(arrays, monkeypatch):
    global_batch = ArrayPipeline(arrays, seed=0).train_batch(2, 12)["inputs"]
    parts = []
    for host in range(4):
        monkeypatch.setattr(pipeline_lib.jax, "process_count", lambda: 4)
        monkeypatch.setattr(pipeline_lib.jax, "process_index", lambda host=host: host)
        parts.append(ArrayPipeline(arrays, seed=0).train_batch(2, 12)["inputs"])
    np.testing.assert_array_equal(np.concatenate(parts), global_batch)


def test_eval_batches_cover_the_split_once_with_padding_masked(arrays):
    batches = list(ArrayPipeline(arrays, seed=0).eval_batches(10))
    assert len(batches) == 3 and all(len(b["inputs"]) == 10 for b in batches)
    kept = np.concatenate([b["inputs"][b["mask"], 0] for b in batches])
    np.testing.assert_array_equal(kept, np.arange(23))


def test_crop_and_flip_keep_shape_and_content():
    x = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
    out = crop_and_flip(crop_padding=2, flip=True)(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not np.array_equal(out, x)
    assert crop_and_flip(0, False) is None


def test_synthetic_tokens_are_a_function_of_seed_and_step():
    from fmjax.data.synthetic import SyntheticTokens
    source = SyntheticTokens(vocab_size=11, seq_len=5, eval_windows=3)
    first = next(source.pipeline(0).train_iterator(7, 4))
    again = next(source.pipeline(0).train_iterator(7, 4))
    np.testing.assert_array_equal(first["inputs"], again["inputs"])
    np.testing.assert_array_equal(first["inputs"][:, 1:], first["targets"][:, :-1])
    assert first["inputs"].shape == (4, 5) and first["inputs"].max() < 11
    eval_batches = list(source.pipeline(0).eval_batches(2))
    assert [b["mask"].tolist() for b in eval_batches] == [[True, True], [True, False]]
