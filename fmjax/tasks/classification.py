"""Classification: cross-entropy training; accuracy, macro P/R/F1 and ROC-AUC at eval."""

import jax.numpy as jnp
import numpy as np
import optax

from fmjax.models import build_model
from fmjax.tasks.base import Task
from fmjax.tasks.classification_metrics import classification_metrics


class Classification(Task):
    default_best_metric = "eval/accuracy"

    def __init__(self, config, info):
        super().__init__(config, info)
        self.model = build_model(config.model, num_classes=info.num_classes)

    def example_batch(self):
        return {"inputs": np.zeros((1, *self.info.input_shape), np.float32),
                "labels": np.zeros((1,), np.int32)}

    def loss_fn(self, params, extra, batch, rng):
        logits_BC, extra = self.apply_train(params, extra, batch["inputs"], rng)
        logits_BC = logits_BC.astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits_BC, batch["labels"]).mean()
        accuracy = (logits_BC.argmax(-1) == batch["labels"]).mean()
        return loss, ({"loss": loss, "accuracy": accuracy}, extra)

    def eval_outputs(self, params, extra, batch):
        logits_BC = self.model.apply({"params": params, **extra}, batch["inputs"], train=False)
        return {"logits": logits_BC.astype(jnp.float32), "labels": batch["labels"]}

    def eval_metrics(self, outputs):
        return classification_metrics(outputs["logits"], outputs["labels"])
