"""Language models: the GPT learns text, resumes exactly, shards, and samples with a KV cache
exactly as recomputation would."""

import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, gpt_flags, read_metrics, run_cli
from fmjax.decoding import sampling
from fmjax.errors import UserError
from fmjax.models.gpt import GPT


def test_gpt_learns_generated_text(tmp_path, text_file):
    """200 steps take the char model from ln(vocab) (~3.3 nats) to under 1.0 nats/char on
    held-out text; the grammar's true entropy is about 0.5 nats/char. With 2 of its 4 layers
    (13 CPU s): eval/loss 0.572 / 0.583 / 0.593 for seeds 0 / 1 / 2."""
    run_cli("train", "--workdir", tmp_path, *gpt_flags(text_file, num_steps=200),
            "--config.train.eval_every=100", "--config.model.num_layers=2")
    evals = [r["eval/loss"] for r in read_metrics(tmp_path) if "eval/loss" in r]
    assert len(evals) == 2 and evals[-1] < 1.0, evals
    record = read_metrics(tmp_path)[-1]
    assert record["eval/bits_per_token"] == pytest.approx(record["eval/loss"] / np.log(2))
    assert record["perf/tokens_per_sec"] == pytest.approx(
        record["perf/steps_per_sec"] * 16 * 64)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, 0, 1.0), (1.0, 10, 0.9)])
@pytest.mark.parametrize("chunk_size", [sampling.CHUNK_SIZE, 4])
def test_cached_decoding_equals_recomputing(positions, temperature, top_k, top_p, chunk_size):
    """In one decoding chunk (the default size) or several (the cache carried over)."""
    model = GPT(vocab_size=23, max_len=32, num_layers=2, num_heads=2, embed_dim=32,
                positions=positions)
    params = nn.unbox(model.init(jax.random.key(0), np.zeros((1, 32), np.int32)))["params"]
    prompt = np.array([3, 1, 4, 1, 5], np.int32)
    kwargs = dict(seed=7, num_samples=3, temperature=temperature, top_k=top_k, top_p=top_p)
    cached = sampling.generate(model, params, prompt, 27, chunk_size=chunk_size, **kwargs)
    recomputed = sampling.generate_without_cache(model, params, prompt, 27, **kwargs)
    np.testing.assert_array_equal(cached, recomputed)
    assert cached.shape == (3, 32) and (cached[:, :5] == prompt).all()


@pytest.mark.parametrize("chunk_size", [sampling.CHUNK_SIZE, 7, 1])
def test_generation_continues_past_the_context(chunk_size):
    """Past max_len the cache is refilled with the last max_len / 2 tokens: sampling equals
    recomputing, at every step, the model on the tokens since the last refill (same keys),
    whether refills fall inside a decoding chunk or at its edges."""
    model = GPT(vocab_size=11, max_len=16, num_layers=1, num_heads=2, embed_dim=16)
    params = nn.unbox(model.init(jax.random.key(0), np.zeros((1, 16), np.int32)))["params"]
    tokens = sampling.generate(model, params, np.array([1, 2]), 40, seed=0, temperature=1.0,
                               chunk_size=chunk_size)
    assert tokens.shape == (1, 42) and len(set(tokens[0].tolist())) > 3

    expected, start, in_cache, keep = [1, 2], 0, 2, model.max_len // 2
    logits_of = jax.jit(lambda t: model.apply({"params": params}, t[None])[:, -1])
    for i in range(40):
        key = jax.random.fold_in(jax.random.key(0), i)
        logits = logits_of(np.array(expected[start:]))
        expected.append(int(sampling.next_token(logits, key, 1.0, 0, 1.0)[0]))
        if in_cache >= model.max_len:          # full: re-encode the newest `keep` tokens
            start, in_cache = len(expected) - keep, keep
        else:
            in_cache += 1
    np.testing.assert_array_equal(tokens[0], expected)


def test_chunked_decoding_compiles_once_per_request():
    """Chunks are equal in length (the last one's extra steps are dropped): one compilation of
    the decoding step serves all of them. 50 = 4 chunks of 13 steps, 2 past the end."""
    model = GPT(vocab_size=11, max_len=16, num_layers=1, num_heads=2, embed_dim=16)
    params = nn.unbox(model.init(jax.random.key(0), np.zeros((1, 16), np.int32)))["params"]
    sampling._decode_chunk.clear_cache()
    chunks = list(sampling.generate_chunks(model, params, np.array([1, 2]), 50, chunk_size=16))
    assert [c.shape for c in chunks] == [(1, 13)] * 3 + [(1, 11)]
    assert sampling._decode_chunk._cache_size() == 1


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    kept = lambda **kw: np.isfinite(np.asarray(sampling.filter_logits(logits, 1.0, **kw)))[0]
    np.testing.assert_array_equal(kept(top_k=2, top_p=1.0), [True, True, False, False])
    np.testing.assert_array_equal(kept(top_k=0, top_p=0.8), [True, True, False, False])
    np.testing.assert_array_equal(kept(top_k=0, top_p=0.81), [True, True, True, False])
    np.testing.assert_array_equal(kept(top_k=0, top_p=0.1), [True, False, False, False])


def dropout_gpt_flags(text_file) -> list[str]:
    """10 steps of the small character GPT with dropout on (its randomness must not depend on
    the mesh), 2 of its 4 layers: every layer is the same code, and an 8-device run of 2 layers
    takes 13 CPU s instead of 21."""
    return [*gpt_flags(text_file, num_steps=10), "--config.model.dropout_rate=0.1",
            "--config.model.num_layers=2"]


@pytest.fixture(scope="module")
def gpt_workdir(tmp_path_factory, text_file):
    """A trained character GPT: what `fmjax sample` needs (a checkpoint), and the one-device
    reference of the cross-mesh test."""
    workdir = tmp_path_factory.mktemp("gpt") / "run"
    run_cli("train", "--workdir", workdir, *dropout_gpt_flags(text_file))
    return workdir


def test_sample_cli_is_reproducible_and_rejects_bad_input(gpt_workdir):
    sample = ["sample", "--workdir", gpt_workdir, "--prompt", "the ", "--max_new_tokens", "80",
              "--temperature", "0.8", "--top_k", "5", "--seed", "3"]
    first, again = run_cli(*sample).stdout, run_cli(*sample).stdout
    assert first == again and first.startswith("the ") and len(first) == 4 + 80 + 1
    assert run_cli(*sample[:-1], "4").stdout != first
    for extra, fragment in [(["--prompt", "Zebra"], "not in the model's vocabulary"),
                            (["--prompt", "the " * 20], "context is 64"),
                            (["--step", "7"], "no checkpoint at step 7")]:
        proc = run_cli(*sample, *extra, check=False)
        assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_samples_print_as_today_with_the_first_streamed(gpt_workdir):
    """Several samples: the output is each sample's text, separated by a dashed line."""
    out = run_cli("sample", "--workdir", gpt_workdir, "--prompt", "a", "--max_new_tokens",
                  "300", "--num_samples", "3", "--seed", "1").stdout
    samples = out.split(sampling.SEPARATOR)
    assert len(samples) == 3 and all(s.startswith("a") for s in samples)
    assert [len(s) for s in samples] == [301, 301, 302] and len(set(samples)) == 3


@pytest.mark.parametrize("options, fragment", [
    (dict(max_new_tokens=-1), "max_new_tokens must be between 1 and 1,000,000 (got -1)"),
    (dict(max_new_tokens=5000000000), "max_new_tokens must be between 1 and 1,000,000"),
    (dict(num_samples=-3), "num_samples must be between 1 and 1024 (got -3)"),
    (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
    (dict(top_p=0.0), "top_p must be in (0, 1]"),
    (dict(top_k=-1), "top_k must be >= 0"),
])
def test_bad_sample_options(options, fragment):
    request = dict(max_new_tokens=10, num_samples=1, temperature=1.0, top_k=0, top_p=1.0)
    with pytest.raises(UserError, match=re.escape(fragment)):
        sampling.check_options(**{**request, **options})


@pytest.mark.parametrize("flags, fragment", [
    (["--max_new_tokens", "100000000"], "max_new_tokens must be between 1 and 1,000,000"),
    (["--num_samples", "0"], "num_samples must be between 1 and 1024 (got 0)"),
    (["--num", "0"], "--num must be between 1 and 4096 (got 0)"),     # image generators' flag
])
def test_bad_sample_request_is_one_line_before_the_run_is_read(gpt_workdir, flags, fragment):
    """Checked before the checkpoint is read (so whatever the run generates): the request's
    error wins over a missing step. (Every bound: `test_bad_sample_options`.)"""
    assert_one_line_error(run_cli("sample", "--workdir", gpt_workdir, *flags, "--step", "7",
                                  check=False), fragment)


def test_sample_streams_and_stops_quietly_when_the_reader_closes(gpt_workdir):
    """`fmjax sample --max_new_tokens 1000000 | head -c 100`: text arrives while the model is
    still generating; closing the pipe ends the run without a traceback (status 141, like
    `yes | head`)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.Popen([sys.executable, "-m", "fmjax", "sample", "--workdir",
                             gpt_workdir, "--max_new_tokens", "1000000"], cwd=REPO,
                            env={**env, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    head = proc.stdout.read(100)
    still_generating = proc.poll() is None
    proc.stdout.close()
    stderr = proc.communicate(timeout=300)[1]
    assert len(head) == 100 and still_generating
    assert proc.returncode == 141 and stderr == b"", stderr.decode()[-2000:]


def test_loss_agrees_across_meshes(tmp_path, text_file, gpt_workdir):
    """Dropout on, vocabulary not divisible by the tensor axis: loss and gradient norm agree."""
    reference = read_metrics(gpt_workdir)
    for data, fsdp, tensor in [(2, 4, 1), (2, 2, 2)]:   # pure data parallel: test_sharding
        workdir = tmp_path / f"{data}x{fsdp}x{tensor}"
        run_cli("train", "--workdir", workdir, *dropout_gpt_flags(text_file),
                f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}",
                f"--config.mesh.tensor={tensor}", devices=8)
        records = read_metrics(workdir)
        for key in ("train/loss", "train/grad_norm", "eval/loss"):
            np.testing.assert_allclose([r[key] for r in records if key in r],
                                       [r[key] for r in reference if key in r], rtol=2e-4,
                                       err_msg=f"{key} on mesh {(data, fsdp, tensor)}")
    # A host with several devices (a TPU v4-8 has 4 chips) samples the one-device text.
    sample = ["sample", "--workdir", tmp_path / "2x2x2", "--prompt", "the ", "--seed", "3",
              "--max_new_tokens", "40"]
    assert run_cli(*sample, devices=4).stdout == run_cli(*sample).stdout


def test_fsdp_divides_gpt_state_bytes_per_device_as_the_compiler_sees_it(text_file):
    """`fmjax inspect`: parameter + optimizer bytes per device = replicated + sharded / N, and
    XLA's compiled train step takes exactly those bytes plus this device's batch as arguments.
    (2 of the model's 4 layers: the same layers, compiled in less time.)"""
    from test_sharding import _compiled_argument_bytes, _state_bytes_per_device
    batch_size, seq_len = 16, 64
    outputs = {n: run_cli("inspect", *gpt_flags(text_file)[:3], "--config.model.num_layers=2",
                          f"--config.train.batch_size={batch_size}",
                          f"--config.mesh.data={8 // n}", f"--config.mesh.fsdp={n}",
                          devices=8).stdout for n in (1, 2, 4)}
    sizes = {n: _state_bytes_per_device(out) for n, out in outputs.items()}
    sharded = 2 * (sizes[1] - sizes[2])
    assert sizes[1] - sizes[4] == sharded * 3 // 4, sizes
    assert sizes[1] - sharded < 0.05 * sizes[1], sizes
    batch_bytes = 2 * (batch_size // 8) * seq_len * 4      # inputs + targets, int32, per device
    counter_bytes = 2 * 4                  # the state's step and skipped_steps, int32 scalars
    for n, out in outputs.items():
        assert _compiled_argument_bytes(out) == sizes[n] + batch_bytes + counter_bytes, \
            (n, out.splitlines()[-1])


@pytest.mark.parametrize("flag, fragment", [
    ("--config.model.num_heads=5", "not divisible by num_heads=5"),
    ("--config.model.remat=sometimes", "remat: none | full | save_dots"),
    ("--config.data.seq_len=100000", "seq_len=100000 is longer than the validation text"),
    ("--config.model.max_len=32", "max_len=32 is shorter than config.data.seq_len=64"),
])
def test_bad_language_model_config_is_one_line(tmp_path, text_file, flag, fragment):
    proc = run_cli("train", "--workdir", tmp_path / "run", *gpt_flags(text_file), flag,
                   check=False)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def _loss_and_grads(model, tokens):
    import optax
    params = nn.unbox(GPT(**{**model, "remat": "none"}).init(jax.random.key(0), tokens))["params"]

    def loss(params, remat):
        logits = GPT(**{**model, "remat": remat}).apply({"params": params}, tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    return {remat: jax.value_and_grad(loss)(params, remat)
            for remat in ("none", "full", "save_dots")}


@pytest.mark.parametrize("options", [dict(), dict(positions="rotary", activation="swiglu",
                                                  use_bias=False, tie_embeddings=False)])
def test_remat_policies_give_the_same_loss_and_gradients(options):
    model = dict(vocab_size=17, max_len=16, num_layers=2, num_heads=2, embed_dim=16, **options)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 17)
    results = _loss_and_grads(model, tokens)
    for remat in ("full", "save_dots"):
        np.testing.assert_allclose(results[remat][0], results["none"][0], rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                     results[remat][1], results["none"][1])


def test_tiny_shakespeare_from_tfds_under_mock_data():
    """With no `data.path`, the text comes from TFDS tiny_shakespeare (here: mock text)."""
    import tensorflow_datasets as tfds

    from fmjax.data.text import Text
    with tfds.testing.mock_data(num_examples=20):   # per split, about 17 characters each
        pipeline = Text(seq_len=16, eval_windows=4).pipeline(seed=0)
    batch = next(pipeline.train_iterator(0, 4))
    assert batch["inputs"].shape == (4, 16) and batch["targets"].shape == (4, 16)
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    assert sum(len(b["inputs"]) for b in pipeline.eval_batches(4)) == 4
