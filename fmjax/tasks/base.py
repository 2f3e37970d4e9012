"""What a model family provides to the one train loop.

The loop never branches on the family: it asks the task to init variables, build its optimizer,
take one update (by default the gradient of `loss_fn`, with metrics and updated non-parameter
collections such as batch statistics; a GAN steps two parameter trees in turn), produce
per-example eval outputs on the device, reduce those on the host to eval metrics (and to the
details that plots draw), and render any eval images.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from fmjax import optim
from fmjax.compression import pruning, quantization
from fmjax.data import DataInfo

Batch = dict[str, Any]


@dataclasses.dataclass
class NoOptions:
    """config.task_options of a task that has none."""


class Task:
    """Base class; subclasses set `self.model` and implement the methods below."""

    # Its fields (with defaults) are the keys of config.task_options for this task; numeric
    # fields declare their valid range as their type (fmjax/ranges.py).
    Options = NoOptions
    # The keys of `eval_metrics` (logged as eval/<name>), known without running an eval, so that
    # config keys naming a metric (checkpoint.best_metric) are checked before training starts.
    EVAL_METRICS: tuple[str, ...] = ()
    # Those of EVAL_METRICS where higher is better (the rest: lower), for selection modes "auto".
    MAXIMISED: tuple[str, ...] = ()

    def __init__(self, config, info: DataInfo):
        self.config = config
        self.info = info
        self.options = self.Options(**config.task_options)

    @property
    def model(self) -> nn.Module:
        return self._model

    @model.setter
    def model(self, module: nn.Module) -> None:
        """Every task's model goes through `config.quantization` (QAT, or stored quantized
        weights), so training, eval, sampling and translation all run the quantized model."""
        self._model = quantization.wrap_model(module, self.config.quantization)

    def optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
        """(optimizer over all parameters, pruned by `config.pruning` if set, the learning-rate
        schedule to log). A converted (quantized) run is never trained: its optimizer keeps no
        state."""
        c = self.config
        lr_schedule = optim.schedule(c.optimizer, c.train.num_steps)
        if c.quantization.converted:
            return optax.set_to_zero(), lr_schedule
        tx = optim.build(c.optimizer, c.train.num_steps, c.train.clip_grad_norm)
        if c.pruning.sparsity > 0:
            tx = pruning.wrap(tx, c.pruning)
        return tx, lr_schedule

    def update(self, state, batch, rng, tx, grads_fn):
        """One optimizer step -> (state, metrics). `grads_fn(params, extra, batch, rng)` gives
        the mean gradient of `loss_fn` over the step's micro-batches, its metrics and the new
        extra collections. Tasks that step several parameter trees in turn (GANs) override it."""
        grads, metrics, extra = grads_fn(state.params, state.extra, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        if self.config.pruning.sparsity > 0:   # logged as train/sparsity
            metrics["sparsity"] = pruning.measured_sparsity(params, self.config.pruning.exclude)
        return state.replace(params=params, opt_state=opt_state, extra=extra), metrics

    def bind_data(self, pipeline) -> None:
        """Called once the data pipeline exists (tasks that measure samples against real data
        keep it); a no-op by default."""

    def bind_tokenizer(self, tokenizer) -> None:
        """Called with a trained run's tokenizer when the run is loaded without its data (tasks
        that turn text into tokens at inference keep it); a no-op by default."""

    def eval_images(self, params, extra) -> dict[str, np.ndarray]:
        """Images to write at each eval (name -> NHWC floats in [0, 1]); none by default."""
        return {}

    def example_batch(self) -> Batch:
        """A batch of one with the right shapes and dtypes, for `init` and `eval_shape`."""
        raise NotImplementedError

    def init(self, rng: jax.Array) -> dict:
        """All variables: {'params': ..., plus any collection the model keeps (batch_stats)}."""
        batch = self.example_batch()
        params_rng, dropout_rng = jax.random.split(rng)
        return self.model.init({"params": params_rng, "dropout": dropout_rng}, batch["inputs"],
                               train=False)

    def loss_fn(self, params, extra: dict, batch: Batch, rng: jax.Array):
        """Training loss -> (loss, (metrics: dict of scalars, new extra collections))."""
        raise NotImplementedError

    def eval_outputs(self, params, extra: dict, batch: Batch) -> dict:
        """Per-example arrays (leading batch axis) that `eval_metrics` reduces on the host."""
        raise NotImplementedError

    def eval_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """Host-side reduction of the concatenated, unpadded eval outputs."""
        raise NotImplementedError

    def eval_details(self, outputs: dict[str, np.ndarray]) -> dict | None:
        """What plots of an eval need beyond its scalars (a classifier's confusion matrix, ROC
        and precision-recall points), JSON-able, from the same outputs as `eval_metrics`;
        None (nothing to write) by default."""
        return None

    def tokens_per_step(self) -> int | None:
        """Tokens in one global batch, for tokens/s (None: not a token model)."""
        return None

    def flops_per_step(self, num_params: int) -> float | None:
        """Model FLOPs of one training step (forward + backward), for TFLOP/s and MFU."""
        return None

    def apply_train(self, params, extra: dict, inputs, rng: jax.Array):
        """model.apply in training mode: -> (outputs, new extra collections)."""
        variables = {"params": params, **extra}
        out, updates = self.model.apply(variables, inputs, train=True, rngs={"dropout": rng},
                                        mutable=list(extra))
        return out, {**extra, **updates}


class GeneratesImages(Task):
    """A task whose eval measures generated images against the real eval images
    (`eval/feature_distance`, in the features of fmjax's classifier for the dataset)."""

    def __init__(self, config, info):
        super().__init__(config, info)
        self.pipeline = None
        self._feature_net = None

    def bind_data(self, pipeline):
        self.pipeline = pipeline

    def feature_distance(self, generated_BYXC, real_BYXC) -> float:
        if self._feature_net is None:   # trained once per dataset and cached on disk
            from fmjax.metrics import feature_distance
            self._feature_net = feature_distance.load_or_train(self.config.data.name,
                                                               self.pipeline.arrays)
        return self._feature_net.distance(generated_BYXC, real_BYXC)
