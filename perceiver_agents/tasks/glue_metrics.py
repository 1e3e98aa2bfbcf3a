"""The official GLUE metrics, over whole evaluation sets (numpy).

Per task (GLUE's leaderboard convention): CoLA Matthews correlation; SST-2, MNLI, QNLI,
RTE, WNLI accuracy; MRPC and QQP F1 (positive class 1) and accuracy; STS-B Pearson and
Spearman correlation. A task's `score` is its metric, or the mean of its two metrics for
MRPC, QQP and STS-B; the GLUE average is the mean of the task scores. All values are in
[-1, 1] fractions (x100 for the usual percentages).

Shape letters: N examples.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

# Task -> the metrics reported for it, in table order.
TASK_METRICS = {
    'cola': ('matthews_corr',),
    'sst2': ('accuracy',),
    'mrpc': ('f1', 'accuracy'),
    'qqp': ('f1', 'accuracy'),
    'stsb': ('pearson', 'spearman'),
    'mnli': ('accuracy',),
    'qnli': ('accuracy',),
    'rte': ('accuracy',),
    'wnli': ('accuracy',),
}


def _check_pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.ndim != 1 or predictions.shape != labels.shape:
    raise ValueError(f'predictions and labels must be [N] of one length, got '
                     f'{predictions.shape} and {labels.shape}.')
  if predictions.size == 0:
    raise ValueError('predictions: no examples to score.')
  return predictions, labels


def accuracy(predictions, labels) -> float:
  """Fraction of predictions int [N] equal to labels int [N]."""
  p, y = _check_pair(predictions, labels)
  return float(np.mean(p == y))


def f1(predictions, labels) -> float:
  """Binary F1 of class 1: 2 TP / (2 TP + FP + FN); 0 when there is no positive at all."""
  p, y = _check_pair(predictions, labels)
  tp = float(np.sum((p == 1) & (y == 1)))
  fp = float(np.sum((p == 1) & (y != 1)))
  fn = float(np.sum((p != 1) & (y == 1)))
  return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def matthews_corr(predictions, labels) -> float:
  """Matthews correlation of binary predictions; 0 when a marginal is constant."""
  p, y = _check_pair(predictions, labels)
  p, y = p == 1, y == 1
  tp, tn = float(np.sum(p & y)), float(np.sum(~p & ~y))
  fp, fn = float(np.sum(p & ~y)), float(np.sum(~p & y))
  denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(predictions, labels) -> float:
  """Pearson correlation of float [N] scores; 0 when either side is constant."""
  p, y = _check_pair(predictions, labels)
  p, y = p.astype(np.float64) - p.mean(), y.astype(np.float64) - y.mean()
  denominator = np.sqrt(np.sum(p * p) * np.sum(y * y))
  return float(np.sum(p * y) / denominator) if denominator else 0.0


def spearman(predictions, labels) -> float:
  """Spearman correlation: Pearson of the ranks (ties get their average rank)."""
  p, y = _check_pair(predictions, labels)
  return pearson(stats.rankdata(p), stats.rankdata(y))


_FUNCTIONS = {'accuracy': accuracy, 'f1': f1, 'matthews_corr': matthews_corr,
              'pearson': pearson, 'spearman': spearman}


def task_scores(task: str, predictions, labels) -> dict:
  """{metric: value, ..., 'score': GLUE score} of `task` (a key of TASK_METRICS)."""
  if task not in TASK_METRICS:
    raise ValueError(f'task: unknown GLUE task {task!r}; known: {sorted(TASK_METRICS)}.')
  scores = {m: _FUNCTIONS[m](predictions, labels) for m in TASK_METRICS[task]}
  scores['score'] = float(np.mean(list(scores.values())))
  return scores


def results_table(results: dict) -> str:
  """A Markdown table of {task: task_scores(...)} with the GLUE average of the scores."""
  lines = ['| task | metrics (x100) | score (x100) |', '|---|---|---|']
  for task, scores in results.items():
    metrics = ', '.join(f'{m} {100 * scores[m]:.2f}' for m in TASK_METRICS[task])
    lines.append(f'| {task} | {metrics} | {100 * scores["score"]:.2f} |')
  average = np.mean([s['score'] for s in results.values()]) if results else float('nan')
  lines.append(f'| **GLUE average** ({len(results)} tasks) | mean of scores | '
               f'{100 * average:.2f} |')
  return '\n'.join(lines)
