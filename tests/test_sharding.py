"""The same experiment gives the same numbers on 1 device and on 8 devices under data-parallel,
FSDP and tensor-parallel meshes (float tolerance), FSDP really shards the state, and the models'
activation sharding constraints are in the train step."""

import re

import numpy as np
import pytest

from conftest import gpt_flags, read_metrics, run_cli

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]
SHORT = ["--config.train.num_steps=30", "--config.train.log_every=5",
         "--config.train.steps_per_call=5", "--config.train.eval_every=30",
         "--config.checkpoint.every=30", "--config.train.batch_size=64",
         "--config.train.eval_batch_size=200", "--noprogress"]


def mesh_flags(data, fsdp, tensor):
    return [f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}",
            f"--config.mesh.tensor={tensor}"]


@pytest.mark.parametrize("experiment, extra", [
    ("mlp", ["--config.model.dropout_rate=0.1"]),   # dropout: randomness must not depend on mesh
    ("cnn", []),                                    # 25 channels: some dims stay replicated
    ("gru", []),
])
def test_loss_curves_agree_across_meshes(tmp_path, experiment, extra):
    config = ["--config", f"experiments/mnist1d/{experiment}.py", *SHORT, *extra]
    run_cli("train", "--workdir", tmp_path / "one", *config)
    reference = read_metrics(tmp_path / "one")
    for mesh in MESHES:
        workdir = tmp_path / "x".join(map(str, mesh))
        run_cli("train", "--workdir", workdir, *config, *mesh_flags(*mesh), devices=8)
        records = read_metrics(workdir)
        assert [r["step"] for r in records] == [r["step"] for r in reference]
        for key in ("train/loss", "train/grad_norm"):
            np.testing.assert_allclose([r[key] for r in records], [r[key] for r in reference],
                                       rtol=2e-4, err_msg=f"{key} on mesh {mesh}")
        np.testing.assert_allclose(records[-1]["eval/loss"], reference[-1]["eval/loss"],
                                   rtol=2e-4)


def _inspect_bytes(inspect_output: str, pattern: str) -> int:
    return int(re.search(pattern, inspect_output).group(1).replace(",", ""))


def _state_bytes_per_device(inspect_output: str) -> int:
    """`fmjax inspect`'s own count: parameters + optimizer state on one device."""
    return _inspect_bytes(inspect_output, r"optimizer state [\d,]+, total ([\d,]+)")


def _compiled_argument_bytes(inspect_output: str) -> int:
    """XLA's count for the compiled train step: its arguments (state + batch) on one device."""
    return _inspect_bytes(inspect_output, r"arguments ([\d,]+)")


def test_fsdp_divides_state_bytes_per_device():
    """Parameters + optimizer state per device fall as 1/N under FSDP (N = 1, 2, 4)."""
    config = ["--config", "experiments/mnist1d/mlp.py", "--config.model.hidden_size=128",
              "--config.train.batch_size=64"]
    sizes = {n: _state_bytes_per_device(run_cli(
        "inspect", *config, *mesh_flags(8 // n, n, 1), devices=8).stdout) for n in (1, 2, 4)}
    # bytes(N) = replicated + sharded / N exactly; only the 10-way head and counters replicate.
    sharded = 2 * (sizes[1] - sizes[2])
    assert sizes[1] - sizes[4] == sharded * 3 // 4, sizes
    assert sizes[1] - sharded < 0.1 * sizes[1], sizes


# Per block: query, key and value projections, the attention output, the MLP hidden layer and
# the two residual sums; the backward pass transposes each constraint into one more.
CONSTRAINTS_PER_BLOCK = 7


@pytest.mark.parametrize("model, outside_blocks", [("gpt", 2), ("vit", 1)])
def test_inspect_counts_the_activation_constraints_of_the_train_step(text_file, model,
                                                                     outside_blocks):
    """`fmjax inspect` on mesh (2, 2, 2): every activation constraint of the models is in the
    lowered train step, forward and backward (outside the blocks: the GPT's embedding and
    logits, the ViT's embedding). Before the train step bound the logical axis rules while it
    was traced, Flax dropped every one of them and this count was 0."""
    config = {"gpt": gpt_flags(text_file)[:3],
              "vit": ["--config", "experiments/vision/vit_cifar10.py:digits"]}[model]
    num_layers = 2
    out = run_cli("inspect", *config, f"--config.model.num_layers={num_layers}",
                  "--config.train.batch_size=16", *mesh_flags(2, 2, 2), devices=8).stdout
    count = int(re.search(r"(\d+) sharding constraints", out).group(1))
    assert count == 2 * (CONSTRAINTS_PER_BLOCK * num_layers + outside_blocks), out[-500:]


def test_activations_take_their_own_rules_and_an_override_wins():
    """With one name for a parameter's and an activation's model dimension, the batch rule took
    'fsdp' first and the residual stream was replicated by accident of rule order; separate
    names place each on purpose. A rule naming a mesh axis the mesh lacks is a UserError."""
    import flax.linen as nn
    from jax.sharding import PartitionSpec as P

    from fmjax import sharding
    from fmjax.errors import UserError
    from fmjax.models.transformer import BTD_AXES, BTF_AXES

    batch = ("data", "fsdp")
    assert nn.logical_to_mesh_axes(BTD_AXES, sharding.RULES) == P(batch, None, None)
    assert nn.logical_to_mesh_axes(BTF_AXES, sharding.RULES) == P(batch, None, "tensor")
    assert nn.logical_to_mesh_axes(("embed", "mlp"), sharding.RULES) == P("fsdp", "tensor")
    overridden = sharding.logical_rules([["activation_embed", "tensor"]])   # as config.json has it
    assert nn.logical_to_mesh_axes(BTD_AXES, overridden) == P(batch, None, "tensor")
    with pytest.raises(UserError, match=r"names mesh axes \['model'\]"):
        sharding.logical_rules((("activation_embed", "model"),))
