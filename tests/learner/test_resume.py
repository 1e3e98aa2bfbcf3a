"""A killed run, resumed, ends bit-identical to an uninterrupted one."""

import os
import signal
import time

import jax
import numpy as np

from perceiver_agents import learner

# checkpoint.every=10 of 20 steps; log often so the run's pieces all take part.
OVERRIDES = ('train.steps=20', 'checkpoint.every=10', 'train.log_every=5', 'eval.every=0',
             'optimizer.warmup_steps=5')


def _trees_equal(a, b):
  leaves_a, leaves_b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  assert len(leaves_a) == len(leaves_b)
  return all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


def test_kill_and_resume_is_bit_identical(tmp_path, toy, child):
  task, config = toy(*OVERRIDES)
  straight = str(tmp_path / 'straight')
  learner.train(task, config, straight)
  _, expected = learner.load_state(task, config, straight)

  # The same run in another process, slowed down, SIGKILLed once step 10 is saved.
  resumed = str(tmp_path / 'resumed')
  proc = child.start({'mode': 'train', 'workdir': resumed,
                      'overrides': list(OVERRIDES) + ['data.sleep_s=0.25']})
  saved = os.path.join(resumed, 'checkpoints', '10')
  deadline = time.time() + 90
  while not os.path.isdir(saved) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert os.path.isdir(saved), 'the child never saved step 10'
  assert not os.path.exists(os.path.join(resumed, 'checkpoints', '20'))

  result = learner.train(task, config, resumed)
  assert result.step == 20
  _, actual = learner.load_state(task, config, resumed)
  assert int(actual.step) == 20
  assert _trees_equal(expected.params, actual.params)
  assert _trees_equal(expected.opt_state, actual.opt_state)
  assert _trees_equal(expected.state, actual.state)
  assert _trees_equal(expected.rng, actual.rng)
