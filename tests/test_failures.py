"""Training never continues on NaN, and fmjax trains without TensorFlow installed."""

import subprocess
import sys

from conftest import REPO, read_metrics, run_cli
from fmjax import checkpoint


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    # From step 20 the learning rate is multiplied by 1e15: the parameters blow up within steps.
    proc = run_cli("train", "--config", "experiments/mnist1d/mlp.py", "--workdir", tmp_path,
                   "--config.optimizer.name=sgd", "--config.optimizer.schedule=step",
                   "--config.optimizer.decay_boundaries=(20,)",
                   "--config.optimizer.decay_factor=1e15", "--config.train.num_steps=60",
                   "--config.train.steps_per_call=1", "--config.train.log_every=1",
                   "--config.train.eval_every=10", "--config.checkpoint.every=10", "--noprogress",
                   check=False)
    assert proc.returncode == 1, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "non-finite loss" in message and "at step 2" in message, message
    bad_step = int(message.split("at step ")[1].split(";")[0])
    assert 20 < bad_step < 30
    assert checkpoint.read_only_manager(tmp_path).all_steps() == [10, 20]
    logged = [r["step"] for r in read_metrics(tmp_path)]
    assert logged[-1] < bad_step and logged[:3] == [1, 2, 3]


def test_trains_without_tensorflow(tmp_path):
    """TensorFlow is needed only for TFDS: block its import and train an MNIST-1D model."""
    script = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"          # any `import tensorflow` now fails
        "sys.modules['tensorflow_datasets'] = None\n"
        "from fmjax import configs\n"
        "from fmjax.train import train_and_evaluate\n"
        "c = configs.experiment(model=dict(name='mlp'), data=dict(name='mnist1d'),\n"
        "    train=dict(num_steps=20, batch_size=32, log_every=10, eval_every=20,\n"
        "               steps_per_call=10), checkpoint=dict(every=20))\n"
        f"m = train_and_evaluate(c, {str(tmp_path)!r}, show_progress=False)\n"
        "assert m['eval/accuracy'] > 0.1, m\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
