"""The builder: clear configuration errors, and an exact resume with the inline backend."""

import os
import shutil
import sys

import jax
import numpy as np
import pytest

from perceiver_agents import cli, learner
from perceiver_agents.agents.impala import builder, ray_backend
from perceiver_agents.learner import data as data_lib
from perceiver_agents.tasks import agent


@pytest.mark.parametrize('overrides, message', [
    (['actors.num_actors=0'], r'actors.num_actors must be >= 1, got 0'),
    (['actors.backend=processes'], r"actors.backend must be one of \('inline', 'threads', "
                                   r"'ray'\), got 'processes'"),
    (['actors.num_actors=3'], r'train.batch_size=4 \(per process\) cannot be split evenly '
                              r'over actors.num_actors=3'),
    (['actors.envs_per_actor=3'], r'train.batch_size=4 \(per process\) is not a multiple '
                                  r'of actors.envs_per_actor=3: whole actor unrolls'),
])
def test_actor_layout_errors_name_the_field(overrides, message, tiny_config):
  with pytest.raises(ValueError, match=message):
    builder.actor_layout(tiny_config(*overrides))


def test_layout_spreads_the_batch_over_actors(tiny_config):
  layout = builder.actor_layout(tiny_config('actors.num_actors=2'))
  assert layout == builder.ActorLayout(num_actors=2, envs_per_actor=2, batch_size=4,
                                       queue_size=2)
  layout = builder.actor_layout(tiny_config('actors.num_actors=8',
                                            'actors.envs_per_actor=1'))
  assert (layout.envs_per_actor, layout.queue_size) == (1, 4)


def test_an_unreachable_ray_address_is_one_clear_error(tiny_config):
  config = tiny_config('actors.backend=ray', 'actors.ray_address=127.0.0.1:1')
  with pytest.raises(ValueError, match=r"no Ray head node reachable at '127.0.0.1:1'"):
    builder.ImpalaBuilder(config)
  config.actors.ray_address = 'nowhere'
  with pytest.raises(ValueError, match=r"actors.ray_address must be '', 'auto' or "
                                       r"HOST:PORT, got 'nowhere'"):
    builder.ImpalaBuilder(config)


def test_missing_ray_names_the_extra(tiny_config, monkeypatch, tmp_path, capsys):
  monkeypatch.setitem(sys.modules, 'ray', None)  # `import ray` now raises ImportError.
  with pytest.raises(ray_backend.MissingRayError,
                     match=r"pip install 'perceiver-agents\[distributed\]'"):
    builder.ImpalaBuilder(tiny_config('actors.backend=ray'))
  code = cli.main(['train', 'agent', '--workdir', str(tmp_path),
                   '--config.actors.backend=ray'])
  assert code == 2
  assert "needs Ray, an optional extra: pip install 'perceiver-agents[distributed]'" in (
      capsys.readouterr().err)


def _trees_equal(a, b):
  leaves_a, leaves_b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  return len(leaves_a) == len(leaves_b) and all(
      np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


def test_inline_resume_is_bit_identical(tiny_config, tmp_path):
  config = tiny_config('train.steps=4', 'checkpoint.every=2', 'actors.num_actors=2')
  task = agent.build(config)
  straight = str(tmp_path / 'straight')
  learner.train(task, config, straight)
  _, expected = learner.load_state(task, config, straight)

  # The same run stopped after step 2: its workdir as it was then.
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '4'))
  os.remove(os.path.join(resumed, data_lib.STATE_DIR, '4.pkl'))
  assert os.path.exists(os.path.join(resumed, data_lib.STATE_DIR, '2.pkl'))
  task = agent.build(config)  # New actors, as in a new process.
  learner.train(task, config, resumed)
  _, actual = learner.load_state(task, config, resumed)
  assert int(actual.step) == 4
  assert _trees_equal(expected.params, actual.params)
  assert _trees_equal(expected.opt_state, actual.opt_state)
  last = lambda wd: [r for r in learner.read_metrics(wd) if r['split'] == 'train'][-1]
  assert last(straight)['episode_return'] == last(resumed)['episode_return']
  assert last(straight)['env_steps'] == last(resumed)['env_steps']
