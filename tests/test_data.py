"""Data pipelines: batches are a pure function of the step, hosts split every global batch
without overlap, eval covers the split exactly once, augmentation keeps shapes."""

import functools
import re

import numpy as np
import pytest

from conftest import assert_one_line_error, generated_text, mock_tfds, run_cli
from fmjax.data import pipeline as pipeline_lib
from fmjax.data.augment import image_augmentation, random_rotate
from fmjax.data.arrays import Arrays, ArrayPipeline
from fmjax.errors import UserError


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


@pytest.mark.parametrize("crop_padding, flip, rotate_degrees", [(2, True, 0.0), (0, False, 30.0),
                                                           (2, True, 30.0)])
def test_augmentation_keeps_shape_and_does_not_depend_on_the_host_count(crop_padding, flip,
                                                                        rotate_degrees):
    x = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
    augment = image_augmentation(crop_padding, flip, rotate_degrees)
    out = augment(x, np.random.default_rng(1), slice(None), 6)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not np.array_equal(out, x)
    halves = [augment(x[rows], np.random.default_rng(1), rows, 6)
              for rows in (slice(0, 3), slice(3, 6))]             # two hosts, three rows each
    np.testing.assert_array_equal(np.concatenate(halves), out)
    assert image_augmentation(0, False, 0.0) is None


def test_rotation_by_0_and_90_degrees_is_exact_and_keeps_the_image_inside():
    """A known 5x5 image (an off-centre 'L'): 0 degrees leaves it as it is, +-90 degrees is
    np.rot90 (counter-clockwise) one way and the other; 45 degrees turns the corners of a white
    square black (filled with 0, like the crop's padding) and keeps its centre."""
    image_YX = np.zeros((5, 5), np.float32)
    image_YX[1:4, 1] = 1.0
    image_YX[3, 1:3] = 1.0
    x_BYXC = np.stack([image_YX, image_YX, image_YX, 2 * image_YX])[..., None]
    out = random_rotate(x_BYXC, np.array([0.0, 90.0, -90.0, 90.0]))
    np.testing.assert_array_equal(out[0, ..., 0], image_YX)
    np.testing.assert_allclose(out[1, ..., 0], np.rot90(image_YX, 1), atol=1e-6)
    np.testing.assert_allclose(out[2, ..., 0], np.rot90(image_YX, -1), atol=1e-6)
    np.testing.assert_allclose(out[3, ..., 0], 2 * np.rot90(image_YX, 1), atol=1e-6)
    turned_YX = random_rotate(np.ones((1, 5, 5, 1), np.float32), np.array([45.0]))[0, ..., 0]
    assert turned_YX[2, 2] == 1.0 and turned_YX[0, 0] == turned_YX[4, 4] == 0.0
    rgb_BYXC = np.random.default_rng(0).random((2, 9, 9, 3)).astype(np.float32)
    angles_B = np.array([17.0, -33.0])   # colour channels turn alike and never mix
    np.testing.assert_array_equal(random_rotate(rgb_BYXC, angles_B), np.concatenate(
        [random_rotate(rgb_BYXC[..., c:c + 1], angles_B) for c in range(3)], axis=-1))


def test_synthetic_tokens_are_a_function_of_seed_and_step():
    from fmjax.data.synthetic import SyntheticTokens
    source = SyntheticTokens(vocab_size=11, seq_len=5, eval_windows=3)
    first = next(source.pipeline(0).train_iterator(7, 4))
    again = next(source.pipeline(0).train_iterator(7, 4))
    np.testing.assert_array_equal(first["inputs"], again["inputs"])
    np.testing.assert_array_equal(first["inputs"][:, 1:], first["targets"][:, :-1])
    assert first["inputs"].shape == (4, 5) and first["inputs"].max() < 11
    evals = list(source.pipeline(0).eval_batches(2))          # what masked-LM eval needs
    assert [b["index"].tolist() for b in evals] == [[0, 1], [2, 3]]
    assert [b["mask"].tolist() for b in evals] == [[True, True], [True, False]]
    eval_batches = list(source.pipeline(0).eval_batches(2))
    assert [b["mask"].tolist() for b in eval_batches] == [[True, True], [True, False]]


def _tsv(path, rows) -> str:
    path.write_text("".join(f"{a}\t{b}\n" for a, b in rows))
    return str(path)


def _labelled(tmp_path, split, n):
    rng = np.random.default_rng(len(split))
    rows = [("AB"[i % 2], " ".join(rng.choice(["red", "dog", "sees", "a", "cat"], 6)))
            for i in range(n)]
    return _tsv(tmp_path / f"{split}.tsv", rows)


def _number_pairs(tmp_path, split, n):
    from fmjax.data import number_words
    return _tsv(tmp_path / f"{split}.tsv", number_words.pairs(n, len(split), max_number=999))


# Every source (TFDS ones under mock data). Small sets (40 TSV examples, 20 mock TFDS examples)
# make the 12 steps of batch 8 cross epoch boundaries.
RESUMABLE_SOURCES = {
    "mnist1d": lambda tmp, text: dict(name="mnist1d"),
    "digits": lambda tmp, text: dict(name="digits", crop_padding=1, rotate_degrees=15.0),
    "diabetes": lambda tmp, text: dict(name="diabetes", validation_fraction=0.2),
    "text": lambda tmp, text: dict(name="text", path=str(text), seq_len=16),
    "synthetic_tokens": lambda tmp, text: dict(name="synthetic_tokens", vocab_size=50, seq_len=8),
    "text_classification": lambda tmp, text: dict(
        name="text_classification", train_path=_labelled(tmp, "train", 40),
        eval_path=_labelled(tmp, "eval", 10), seq_len=12),
    "translation": lambda tmp, text: dict(
        name="translation", train_path=_number_pairs(tmp, "train", 40),
        eval_path=_number_pairs(tmp, "eval", 10), vocab_size=60, source_len=12, target_len=12),
    "synthetic_translation": lambda tmp, text: dict(name="synthetic_translation", num_train=40,
                                                    num_eval=10, max_number=999,
                                                    vocab_size=60),
    "tfds": lambda tmp, text: dict(name="tfds", dataset="mnist", download=False, crop_padding=2,
                                   rotate_degrees=10.0),
    "tfds_text": lambda tmp, text: dict(name="tfds_text", download=False, vocab_size=64,
                                        seq_len=16, eval_windows=5),
}


@pytest.mark.parametrize("source", sorted(RESUMABLE_SOURCES))
def test_restarted_iterator_sees_exactly_the_batches_of_an_uninterrupted_one(
        source, tmp_path, text_file):
    """A pipeline rebuilt as a restarted run rebuilds it (from the workdir's assets, e.g. its
    tokenizer) and started at step 7 yields exactly what one started at 0 yields from step 7."""
    import contextlib

    import ml_collections

    from fmjax.data import build_pipeline
    mock = contextlib.nullcontext()
    if source.startswith("tfds"):
        pytest.importorskip("tensorflow_datasets")
        mock = mock_tfds(num_examples=20)
    data_config = ml_collections.ConfigDict(RESUMABLE_SOURCES[source](tmp_path, text_file))
    with mock:
        first = build_pipeline(data_config, seed=3)
        straight = first.train_iterator(0, 8)
        batches = [next(straight) for _ in range(12)]
        workdir = tmp_path / "run"
        workdir.mkdir()
        for name, content in first.assets().items():   # what `fmjax train` stores
            (workdir / name).write_bytes(content)
        resumed = build_pipeline(data_config, seed=3, workdir=workdir).train_iterator(7, 8)
        for step in range(7, 12):
            again = next(resumed)
            assert again.keys() == batches[step].keys()
            for key in again:
                np.testing.assert_array_equal(again[key], batches[step][key], err_msg=key)
    key = next(iter(batches[0]))
    assert not np.array_equal(batches[7][key], batches[8][key])   # the stream moves on
    _assert_eval_covers_the_split_once(first)


class CountedReads:
    """A `tfds_loader.data_source` that counts the records read from it, by split."""

    def __init__(self, source, split: str, reads: dict):
        self.source, self.split, self.reads = source, split, reads

    def __len__(self):
        return len(self.source)

    def __getattr__(self, name):   # dataset_info, ...
        return getattr(self.source, name)

    def __getitems__(self, keys):
        self.reads[self.split] = self.reads.get(self.split, 0) + len(keys)
        return self.source.__getitems__(keys)


@pytest.mark.parametrize("source", ["tfds", "tfds_text"])
def test_tfds_resume_reads_only_the_records_of_the_steps_it_runs(source, tmp_path, text_file,
                                                                 monkeypatch):
    """Resuming at step 10^6 reads about a batch of records per step it runs, none of the steps
    before it (tf.data's `skip` read, and for text tokenized, everything before the step)."""
    import math

    import ml_collections

    from fmjax.data import build_pipeline, tfds_loader
    pytest.importorskip("tensorflow_datasets")
    reads = {}
    load = tfds_loader.data_source
    monkeypatch.setattr(tfds_loader, "data_source",
                        lambda name, split, *args, **kw: CountedReads(
                            load(name, split, *args, **kw), split, reads))
    data_config = ml_collections.ConfigDict(RESUMABLE_SOURCES[source](tmp_path, text_file))
    with mock_tfds(num_examples=200):
        pipeline = build_pipeline(data_config, seed=3)
        # Records one step reads: its batch (images), or k sentences, about its tokens (text).
        per_step = (8 if source == "tfds" else
                    math.ceil((8 * data_config.seq_len + 1) / pipeline.tokens_per_sentence))
        reads.clear()
        batches = pipeline.train_iterator(10**6, 8)
        next(batches), next(batches)
    assert set(reads) == {"train"}
    assert 2 * per_step <= reads["train"] <= 2 * 2 * per_step


@functools.cache
def _tiny_tfds_builder():
    """A registered TFDS dataset `fmjax_tiny_digits`: 4x4 images whose pixels are the example
    number i (20 train, 6 test), label i % 2; prepared offline in whatever data_dir is given."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class FmjaxTinyDigits(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(4, 4, 1)),
                "label": tfds.features.ClassLabel(num_classes=2)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(20), "test": self._generate_examples(6)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((4, 4, 1), i, np.uint8), "label": i % 2}
    return FmjaxTinyDigits


def test_tfds_reads_array_record_files_by_index_and_refuses_a_tfrecord_copy(tmp_path):
    """Outside mock data, real files: a dataset prepared (download=True) as ArrayRecord trains by
    index, each example with its own label, and resumes exactly; a copy prepared earlier as
    TFRecord (TFDS's default format) stops in one line that says how to convert it."""
    from fmjax.data.tfds_images import TFDSImages
    _tiny_tfds_builder()(data_dir=str(tmp_path / "tfrecord")).download_and_prepare()
    with pytest.raises(UserError, match="File format is already set to .*TFRECORD.*tfds "
                                        "convert_format") as e:
        TFDSImages("fmjax_tiny_digits", data_dir=str(tmp_path / "tfrecord"),
                   download=False).pipeline(seed=3)
    assert "\n" not in str(e.value)
    pipeline = TFDSImages("fmjax_tiny_digits", data_dir=str(tmp_path / "array_record"),
                          download=True).pipeline(seed=3)
    batches = [pipeline.train_batch(step, 4) for step in range(10)]   # two epochs
    numbers = np.concatenate([np.round(b["inputs"][:, 0, 0, 0] * 255) for b in batches])
    np.testing.assert_array_equal(np.sort(numbers[:20]), np.arange(20))   # an epoch: each once
    assert not np.array_equal(numbers[:20], numbers[20:])                 # reshuffled
    np.testing.assert_array_equal(np.concatenate([b["labels"] for b in batches]), numbers % 2)
    resumed = pipeline.train_iterator(7, 4)
    for step in (7, 8):
        np.testing.assert_array_equal(next(resumed)["inputs"], batches[step]["inputs"])


def _assert_eval_covers_the_split_once(pipeline) -> None:
    """What the `Pipeline` interface promises of eval: full global batches whose unmasked rows
    are the examples 0 .. num_eval - 1, each once, padding rows repeating a real example."""
    assert isinstance(pipeline, pipeline_lib.Pipeline)
    batches = list(pipeline.eval_batches(8))
    assert all(len(b["mask"]) == 8 and len(v) == 8 for b in batches for v in b.values())
    index = np.concatenate([b["index"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(index, np.arange(pipeline.info.num_eval))
    last, padding = batches[-1], ~batches[-1]["mask"]
    for key in last.keys() - {"index", "mask"}:
        np.testing.assert_array_equal(last[key][padding], np.repeat(
            pipeline.eval_examples(index[-1:])[key], padding.sum(), axis=0))


TEXT = generated_text()
UNSEEN_AT = int(len(TEXT) * 0.95)   # inside the validation part (the last 10%)


def _with_unseen_characters(characters: str) -> bytes:
    return (TEXT[:UNSEEN_AT] + characters + TEXT[UNSEEN_AT:]).encode()


# Text files a user may pass as config.data.path, and the line `fmjax train` answers with.
HOSTILE_TEXTS = {
    "binary": (bytes(range(256)) * 64, "is not UTF-8 text (byte 0x80 at offset 128)"),
    "utf-16": (generated_text(200).encode("utf-16"), "is not UTF-8 text (byte 0xff at offset 0)"),
    "one character": (b"a", "seq_len=64 is longer than the training text (0 characters"),
    "a few characters": (b"hello", "seq_len=64 is longer than the training text (4 characters"),
    "empty": (b"", "the text is empty"),
    "only newlines": (b"\n" * 50, "seq_len=64 is longer than the training text (45 characters"),
    "an emoji and an accent only in validation": (
        _with_unseen_characters("😀é"),
        "the validation text has 2 characters the training text lacks: 'é', '😀' (first on line "
        f"{TEXT.count(chr(10), 0, UNSEEN_AT) + 1}, at character {UNSEEN_AT});"),
    "a character id 0 would hide": (      # below 'z': it became id 0 silently
        _with_unseen_characters("%"),
        "the validation text has 1 character the training text lacks: '%'"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TEXTS))
def test_hostile_text_file_is_one_line_before_the_workdir_exists(tmp_path, name):
    content, fragment = HOSTILE_TEXTS[name]
    (tmp_path / "corpus.txt").write_bytes(content)
    proc = run_cli("train", "--config", "experiments/shakespeare/gpt_char.py:runlocal",
                   f"--config.data.path={tmp_path / 'corpus.txt'}", "--workdir",
                   tmp_path / "run", "--noprogress", check=False)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, fragment", [
    ("--config.data.path={tmp}", "is a directory, not a text file"),
    ("--config.data.path=/dev/zero", "/dev/zero is a device or a pipe, not a text file"),
    ("--config.data.val_fraction=0.0003", "seq_len=64 is longer than the validation text "
     f"({len(TEXT) - int(len(TEXT) * (1 - 0.0003))} characters"),    # text_file holds TEXT
])
def test_unreadable_text_path_or_a_split_without_a_window_is_one_line(tmp_path, text_file, flag, fragment):
    proc = run_cli("train", "--config", "experiments/shakespeare/gpt_char.py:runlocal",
                   f"--config.data.path={text_file}", flag.format(tmp=tmp_path), "--workdir",
                   tmp_path / "run", "--noprogress", check=False)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("source", ["text_classification", "translation"])
@pytest.mark.parametrize("damage, fragment", [
    (lambda path: path.write_bytes("label\tcafé\n".encode("latin-1")),
     "is not UTF-8 text (byte 0xe9 at offset 9)"),
    (lambda path: path.mkdir(), "is a directory, not a text file"),
])
def test_tsv_that_is_not_utf8_text_is_one_line(tmp_path, text_file, source, damage, fragment):
    """The TSV sources read their files as the text source does."""
    import ml_collections

    from fmjax.data import build_pipeline
    data_config = ml_collections.ConfigDict(RESUMABLE_SOURCES[source](tmp_path, text_file))
    damage(tmp_path / "bad.tsv")
    data_config.train_path = str(tmp_path / "bad.tsv")
    with pytest.raises(UserError, match=f"^config.data.train_path: .*{re.escape(fragment)}"):
        build_pipeline(data_config, seed=0)


def test_damaged_label_names_in_the_workdir_are_named(tmp_path, text_file):
    import ml_collections

    from fmjax.data import build_pipeline
    data_config = ml_collections.ConfigDict(RESUMABLE_SOURCES["text_classification"](
        tmp_path, text_file))
    (tmp_path / "labels.json").write_text('["A", "B')
    with pytest.raises(UserError, match="labels.json is damaged .the run's label names.: not "
                                        "valid JSON"):
        build_pipeline(data_config, seed=0, workdir=tmp_path)
