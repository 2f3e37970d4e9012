"""fmjax's classification metrics equal scikit-learn's on fixed arrays."""

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn import metrics as skm

from fmjax.metrics.classification import (average_ranks, classification_metrics,
                                                 confusion_matrix)


@pytest.fixture
def logits_and_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=300)
    logits = rng.normal(size=(300, 5)) + 1.5 * np.eye(5)[labels]   # informative but imperfect
    logits[:10, 2] = logits[:10, 0]                                  # some tied scores
    return logits, labels


def test_metrics_match_sklearn(logits_and_labels):
    logits, labels = logits_and_labels
    ours = classification_metrics(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    preds = logits.argmax(1)
    kw = dict(average="macro", labels=range(5), zero_division=0)
    np.testing.assert_allclose(ours["accuracy"], skm.accuracy_score(labels, preds))
    np.testing.assert_allclose(ours["precision_macro"], skm.precision_score(labels, preds, **kw))
    np.testing.assert_allclose(ours["recall_macro"], skm.recall_score(labels, preds, **kw))
    np.testing.assert_allclose(ours["f1_macro"], skm.f1_score(labels, preds, **kw))
    np.testing.assert_allclose(ours["roc_auc_ovr"],
                               skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    np.testing.assert_allclose(ours["loss"], skm.log_loss(labels, probs, labels=range(5)))


def test_class_never_predicted_scores_zero_like_sklearn():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 0, 1, 0, 1, 1]] * 5.0       # class 2 is never predicted
    ours = classification_metrics(logits, labels)
    preds = logits.argmax(1)
    kw = dict(average="macro", labels=range(3), zero_division=0)
    np.testing.assert_allclose(ours["precision_macro"], skm.precision_score(labels, preds, **kw))
    np.testing.assert_allclose(ours["f1_macro"], skm.f1_score(labels, preds, **kw))


def test_confusion_matrix_matches_sklearn(logits_and_labels):
    logits, labels = logits_and_labels
    np.testing.assert_array_equal(confusion_matrix(labels, logits.argmax(1), 5),
                                  skm.confusion_matrix(labels, logits.argmax(1), labels=range(5)))


def test_average_ranks_match_scipy_with_ties():
    x = np.random.default_rng(1).integers(0, 7, size=200).astype(np.float64)   # many ties
    np.testing.assert_array_equal(average_ranks(x), rankdata(x))
