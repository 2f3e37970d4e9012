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
