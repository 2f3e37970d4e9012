"""Classification: cross-entropy training; accuracy, macro P/R/F1 and ROC-AUC at eval.

Inputs are features (float32) or, for text, token ids (`DataInfo.vocab_size` > 0, int32, -1 =
padding), which the model embeds itself.

Optional mixup (Zhang et al. 2018) for feature inputs: each training batch is blended with a
shuffled copy of itself, x = lam x + (1 - lam) x[perm] and the same for one-hot labels, with
lam ~ Beta(alpha, alpha) per step; `train/accuracy` is then against the label with the larger
weight.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmjax.errors import UserError
from fmjax.metrics.classification import classification_details, classification_metrics
from fmjax.models import build_model
from fmjax.ranges import NonNegativeFloat
from fmjax.tasks.base import Task


@dataclasses.dataclass
class ClassificationOptions:
    mixup_alpha: NonNegativeFloat = 0.0   # 0 = no mixup; 0.2-1.0 is usual for images


class Classification(Task):
    Options = ClassificationOptions
    EVAL_METRICS = ("loss", "accuracy", "precision_macro", "recall_macro", "f1_macro",
                    "roc_auc_ovr")
    MAXIMISED = EVAL_METRICS[1:]

    def __init__(self, config, info):
        super().__init__(config, info)
        if not info.num_classes:
            raise UserError(f"task 'classification' needs class labels, but data "
                            f"'{config.data.name}' has real-valued targets; use task='regression'")
        self.class_names = None   # the dataset's label names, where it has them (text)
        tokens = {"vocab_size": info.vocab_size} if info.vocab_size else {}
        self.model = build_model(config.model, num_classes=info.num_classes, **tokens)
        if self.options.mixup_alpha and info.vocab_size:
            raise UserError("config.task_options.mixup_alpha must be 0 for token inputs (ids "
                            "cannot be blended)")

    def bind_data(self, pipeline):
        self.class_names = getattr(pipeline, "label_names", None)

    def mixup_loss(self, params, extra, inputs, labels_B, rng):
        """(mean cross-entropy against blended one-hot labels, logits_BL, the label with the
        larger weight_B, extra)."""
        lam_key, perm_key, rng = jax.random.split(rng, 3)
        lam = jax.random.beta(lam_key, self.options.mixup_alpha, self.options.mixup_alpha)
        perm_B = jax.random.permutation(perm_key, labels_B.shape[0])
        targets_BL = jax.nn.one_hot(labels_B, self.info.num_classes)
        mixed = lam * inputs + (1 - lam) * inputs[perm_B]
        logits_BL, extra = self.apply_train(params, extra, mixed, rng)
        logits_BL = logits_BL.astype(jnp.float32)
        targets_BL = lam * targets_BL + (1 - lam) * targets_BL[perm_B]
        loss = optax.softmax_cross_entropy(logits_BL, targets_BL).mean()
        return loss, logits_BL, jnp.where(lam >= 0.5, labels_B, labels_B[perm_B]), extra

    def example_batch(self):
        return {"inputs": np.zeros((1, *self.info.input_shape), self.info.input_dtype),
                "labels": np.zeros((1,), np.int32)}

    def loss_fn(self, params, extra, batch, rng):
        labels_B = batch["labels"]
        if self.options.mixup_alpha:
            loss, logits_BL, labels_B, extra = self.mixup_loss(params, extra, batch["inputs"],
                                                               labels_B, rng)
        else:
            logits_BL, extra = self.apply_train(params, extra, batch["inputs"], rng)
            logits_BL = logits_BL.astype(jnp.float32)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits_BL, labels_B).mean()
        accuracy = (logits_BL.argmax(-1) == labels_B).mean()
        return loss, ({"loss": loss, "accuracy": accuracy}, extra)

    def eval_outputs(self, params, extra, batch):
        logits_BL = self.model.apply({"params": params, **extra}, batch["inputs"], train=False)
        return {"logits": logits_BL.astype(jnp.float32), "labels": batch["labels"]}

    def eval_metrics(self, outputs):
        return classification_metrics(outputs["logits"], outputs["labels"])

    def eval_details(self, outputs):
        return {**classification_details(outputs["logits"], outputs["labels"]),
                "class_names": self.class_names}
