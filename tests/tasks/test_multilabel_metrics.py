"""mAP, AUC and d-prime against hand-computed cases and scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from perceiver_agents.tasks import multilabel_metrics as mm


def test_average_precision_hand_computed():
  # Ranked: +, -, +, -. Precision at the two positives: 1/1 and 2/3.
  ap = mm.average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
  assert ap == pytest.approx((1.0 + 2 / 3) / 2)
  # A tie between a positive and a negative at the top: one threshold, precision 1/2.
  ap = mm.average_precision(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0]))
  assert ap == pytest.approx(0.5)


def test_report_hand_computed():
  scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.7, 0.2], [0.6, 0.9]])
  targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
  report = mm.multilabel_report(scores, targets)
  # Class 0: AP 5/6 (as above), AUC 3/4. Class 1: ranked +, +, -, -: AP 1, AUC 1.
  assert report['mAP'] == pytest.approx((5 / 6 + 1.0) / 2)
  assert report['mAUC'] == pytest.approx((0.75 + 1.0) / 2)
  assert report['num_classes_scored'] == 2


def test_d_prime():
  assert mm.d_prime(0.5) == pytest.approx(0.0)
  # AUC = Phi(d' / sqrt 2) for equal-variance Gaussians.
  assert mm.d_prime(0.7602499389065233) == pytest.approx(1.0, abs=1e-6)


def test_matches_sklearn_with_ties_and_skips_undefined_classes():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, size=(50, 6)).astype(np.float64)  # Many ties.
  targets = (rng.uniform(size=(50, 6)) < 0.3).astype(int)
  targets[:, 5] = 0  # No positives: skipped.
  report = mm.multilabel_report(scores, targets)
  aps = [sk_metrics.average_precision_score(targets[:, k], scores[:, k]) for k in range(5)]
  aucs = [sk_metrics.roc_auc_score(targets[:, k], scores[:, k]) for k in range(5)]
  assert report['mAP'] == pytest.approx(np.mean(aps))
  assert report['mAUC'] == pytest.approx(np.mean(aucs))
  assert report['num_classes_skipped'] == 1
  with pytest.raises(ValueError, match='at least one positive'):
    mm.average_precision(np.zeros(3), np.zeros(3))
  with pytest.raises(ValueError, match=r'\[N, K\]'):
    mm.multilabel_report(np.zeros((3, 2)), np.zeros((3, 3)))
