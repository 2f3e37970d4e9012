"""Classification metrics on host arrays: accuracy, macro precision/recall/F1, one-vs-rest AUC.

Written from the confusion matrix and rank statistics (tests check them against scikit-learn);
classes are 0..num_classes-1 whether or not they occur.
"""

import numpy as np


def confusion_matrix(labels_E: np.ndarray, preds_E: np.ndarray, num_classes: int) -> np.ndarray:
    """counts_LL[true, predicted]."""
    return np.bincount(labels_E * num_classes + preds_E,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_divide(num, den):
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def macro_precision_recall_f1(counts_LL: np.ndarray) -> tuple[float, float, float]:
    """Unweighted means over classes; a class with a zero denominator scores 0 (sklearn's rule)."""
    tp = np.diag(counts_LL).astype(np.float64)
    precision = _safe_divide(tp, counts_LL.sum(axis=0))
    recall = _safe_divide(tp, counts_LL.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def average_ranks(x_E: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank (scipy.stats.rankdata's default,
    without the 0.8 s import of scipy.stats on every run)."""
    order = np.argsort(x_E, kind="stable")
    sorted_x = x_E[order]
    starts_run = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    first = np.flatnonzero(starts_run)                  # 0-based start of each run of ties
    after_last = np.r_[first[1:], len(x_E)]
    ranks = np.empty(len(x_E))
    ranks[order] = ((first + 1 + after_last) / 2)[np.cumsum(starts_run) - 1]
    return ranks


def roc_auc_ovr(labels_E: np.ndarray, probs_EL: np.ndarray) -> float:
    """Macro one-vs-rest ROC-AUC (Mann-Whitney U with tied ranks); classes without both a
    positive and a negative example are left out."""
    aucs = []
    for c in range(probs_EL.shape[1]):
        positive = labels_E == c
        n_pos, n_neg = positive.sum(), (~positive).sum()
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = average_ranks(probs_EL[:, c])
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def log_softmax(logits_EL: np.ndarray) -> np.ndarray:
    shifted = logits_EL - logits_EL.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def classification_metrics(logits_EL: np.ndarray, labels_E: np.ndarray) -> dict[str, float]:
    """All eval metrics of a classifier from its logits and the true labels."""
    num_classes = logits_EL.shape[-1]
    logp_EL = log_softmax(logits_EL.astype(np.float64))
    preds_E = logp_EL.argmax(axis=-1)
    precision, recall, f1 = macro_precision_recall_f1(
        confusion_matrix(labels_E, preds_E, num_classes))
    return {
        "loss": float(-logp_EL[np.arange(len(labels_E)), labels_E].mean()),
        "accuracy": float((preds_E == labels_E).mean()),
        "precision_macro": precision,
        "recall_macro": recall,
        "f1_macro": f1,
        "roc_auc_ovr": roc_auc_ovr(labels_E, np.exp(logp_EL)),
    }


# Points kept per drawn curve: enough for a smooth line, few enough for a small JSON file.
MAX_CURVE_POINTS = 200


def _thin(*curves_N: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> list[list[float]]:
    """The curves at most `max_points` evenly spaced indices, first and last kept."""
    n = len(curves_N[0])
    keep = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
    return [[round(float(v), 6) for v in c[keep]] for c in curves_N]


def _cumulative_counts(positive_E: np.ndarray, scores_E: np.ndarray):
    """(true positives_T, false positives_T) above each distinct score threshold, highest first
    (sklearn's `_binary_clf_curve`)."""
    order = np.argsort(-scores_E, kind="stable")
    scores, positive = scores_E[order], positive_E[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    tp = np.cumsum(positive)[last_of_tie]
    fp = np.cumsum(~positive)[last_of_tie]
    return tp, fp


def roc_curve(positive_E: np.ndarray, scores_E: np.ndarray) -> dict:
    """{"fpr", "tpr" (thinned, from (0, 0) to (1, 1)), "auc" (of the whole curve)}; None where
    the class lacks a positive or a negative example."""
    tp, fp = _cumulative_counts(positive_E, scores_E)
    if tp[-1] == 0 or fp[-1] == 0:
        return None
    fpr, tpr = np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))   # trapezoids: ties count half
    fpr_thin, tpr_thin = _thin(fpr, tpr)
    return {"fpr": fpr_thin, "tpr": tpr_thin, "auc": auc}


def pr_curve(positive_E: np.ndarray, scores_E: np.ndarray) -> dict:
    """{"recall", "precision" (thinned, recall rising from 0), "average_precision"
    (sklearn's: the sum of precision x recall step)}; None where the class has no positive."""
    tp, fp = _cumulative_counts(positive_E, scores_E)
    if tp[-1] == 0:
        return None
    recall, precision = np.r_[0.0, tp / tp[-1]], np.r_[1.0, tp / (tp + fp)]
    average_precision = float(np.sum(np.diff(recall) * precision[1:]))
    recall_thin, precision_thin = _thin(recall, precision)
    return {"recall": recall_thin, "precision": precision_thin,
            "average_precision": average_precision}


def classification_details(logits_EL: np.ndarray, labels_E: np.ndarray) -> dict:
    """What `fmjax plot` draws of a classifier's eval, JSON-able: the confusion matrix (true x
    predicted) and one-vs-rest ROC and precision-recall curves per class (None for a class
    the eval split cannot score)."""
    num_classes = logits_EL.shape[-1]
    probs_EL = np.exp(log_softmax(logits_EL.astype(np.float64)))
    counts_LL = confusion_matrix(labels_E, probs_EL.argmax(axis=-1), num_classes)
    positive_LE = labels_E[None, :] == np.arange(num_classes)[:, None]
    return {"num_classes": num_classes,
            "confusion": counts_LL.tolist(),
            "roc": [roc_curve(positive_LE[c], probs_EL[:, c]) for c in range(num_classes)],
            "pr": [pr_curve(positive_LE[c], probs_EL[:, c]) for c in range(num_classes)]}
