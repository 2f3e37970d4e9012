"""fmjax's classification metrics equal scikit-learn's on fixed arrays."""

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn import metrics as skm

from fmjax.metrics.classification import (MAX_CURVE_POINTS, average_ranks,
                                          classification_details, classification_metrics,
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


def test_roc_and_pr_curves_match_sklearn(logits_and_labels):
    logits, labels = logits_and_labels
    details = classification_details(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert details["confusion"] == skm.confusion_matrix(labels, logits.argmax(1)).tolist()
    for c in range(5):
        roc, pr = details["roc"][c], details["pr"][c]
        np.testing.assert_allclose(roc["auc"], skm.roc_auc_score(labels == c, probs[:, c]))
        np.testing.assert_allclose(pr["average_precision"],
                                   skm.average_precision_score(labels == c, probs[:, c]))
    few = classification_details(logits[:150], labels[:150])["roc"][0]   # under 200 points
    fpr, tpr, _ = skm.roc_curve(labels[:150] == 0, probs[:150, 0], drop_intermediate=False)
    np.testing.assert_allclose([few["fpr"], few["tpr"]], [fpr, tpr], atol=1e-6)
    assert np.mean([r["auc"] for r in details["roc"]]) == pytest.approx(
        classification_metrics(logits, labels)["roc_auc_ovr"], abs=1e-12)


def test_curves_are_thinned_and_skip_classes_without_examples():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=5000)             # class 2 never occurs
    details = classification_details(rng.normal(size=(5000, 3)), labels)
    assert details["roc"][2] is None and details["pr"][2] is None
    roc = details["roc"][0]
    assert len(roc["fpr"]) == MAX_CURVE_POINTS
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    assert 0.45 < roc["auc"] < 0.55                    # random scores
