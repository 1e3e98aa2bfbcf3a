"""Set-level metrics of multi-label classification (AudioSet's): mAP, AUC and d-prime.

  average_precision(scores [N], targets [N])     -> AP of one class
  multilabel_report(scores [N, K], targets [N, K]) -> {'mAP', 'mAUC', 'd_prime', ...}

AP is the area under the step-wise precision-recall curve: sum over the distinct score
thresholds t, from high to low, of (recall(t) - recall(previous t)) * precision(t) — the
definition of sklearn.metrics.average_precision_score (ties share one threshold). mAP and
mAUC average over the classes that have at least one positive and one negative example
(others have no defined AP/AUC; their number is reported). d-prime = sqrt(2) * Phi^-1(mAUC).
"""

import numpy as np
from scipy import stats


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
  """AP of one class: scores float [N], targets {0, 1} [N] with at least one positive."""
  scores = np.asarray(scores, np.float64)
  targets = np.asarray(targets) > 0
  if scores.shape != targets.shape or scores.ndim != 1:
    raise ValueError(f'scores and targets must both be [N], got {scores.shape} and '
                     f'{targets.shape}.')
  num_pos = int(targets.sum())
  if num_pos == 0:
    raise ValueError('targets: average precision needs at least one positive.')
  order = np.argsort(-scores, kind='stable')
  scores, targets = scores[order], targets[order]
  true_pos = np.cumsum(targets)
  # The last position of each run of equal scores is one threshold.
  last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
  tp = true_pos[last]
  precision = tp / (last + 1)
  recall = tp / num_pos
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
  """Area under the ROC curve (ties count one half): P(score_pos > score_neg)."""
  targets = np.asarray(targets) > 0
  ranks = stats.rankdata(scores)  # Average ranks for ties.
  n_pos, n_neg = int(targets.sum()), int((~targets).sum())
  if n_pos == 0 or n_neg == 0:
    raise ValueError('targets: ROC AUC needs positives and negatives.')
  return float((ranks[targets].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def d_prime(auc: float) -> float:
  return float(np.sqrt(2.0) * stats.norm.ppf(auc))


def multilabel_report(scores: np.ndarray, targets: np.ndarray) -> dict:
  """scores [N, K] (any monotone score, e.g. logits), targets {0, 1} [N, K]."""
  scores, targets = np.asarray(scores), np.asarray(targets)
  if scores.shape != targets.shape or scores.ndim != 2:
    raise ValueError(f'scores and targets must both be [N, K], got {scores.shape} and '
                     f'{targets.shape}.')
  aps, aucs = [], []
  for k in range(scores.shape[1]):
    pos = int((targets[:, k] > 0).sum())
    if 0 < pos < len(targets):
      aps.append(average_precision(scores[:, k], targets[:, k]))
      aucs.append(roc_auc(scores[:, k], targets[:, k]))
  if not aps:
    raise ValueError('targets: no class has both positive and negative examples.')
  mauc = float(np.mean(aucs))
  return {'mAP': float(np.mean(aps)), 'mAUC': mauc,
          'd_prime': d_prime(min(max(mauc, 1e-12), 1 - 1e-12)),
          'num_classes_scored': len(aps),
          'num_classes_skipped': scores.shape[1] - len(aps), 'num_examples': len(scores)}
