"""Where metrics go: metrics.jsonl and TensorBoard event files in the workdir."""

import json
import os
from typing import Mapping

import numpy as np
import tensorboardX


class MetricsWriter:
  """Appends one JSON line per (step, split) and writes the same scalars to TensorBoard.

  Lines look like {"step": 100, "split": "train", "loss": 0.31, ...}; TensorBoard tags are
  '<split>/<name>'. Only process 0 should construct a writer.
  """

  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
    self._tb = tensorboardX.SummaryWriter(logdir=workdir)

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': int(step), 'split': split, **values}) + '\n')
    self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(f'{split}/{name}', value, global_step=int(step))
    self._tb.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of `workdir/metrics.jsonl`, oldest first."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
