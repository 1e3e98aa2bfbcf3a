"""learner.update.with_kernels: `train.kernels` picks blocks/ops.py's implementation."""
import haiku as hk
import jax
import jax.numpy as jnp
import pytest

from perceiver_agents import kernels
from perceiver_agents.blocks import ops
from perceiver_agents.learner import config as config_lib
from perceiver_agents.learner import update


def _model(seen):
  def forward(x, is_training):
    del is_training
    seen.append(kernels.current())
    return ops.layer_norm(ops.linear(3)(x))
  return hk.transform_with_state(forward)


@pytest.mark.parametrize('choice', kernels.IMPLEMENTATIONS)
def test_init_and_apply_trace_the_chosen_implementation(choice):
  seen = []
  model = update.with_kernels(_model(seen), choice)
  x = jnp.ones((2, 4))
  params, state = model.init(jax.random.PRNGKey(0), x, is_training=True)
  jax.jit(lambda p, s: model.apply(p, s, None, x, is_training=True))(params, state)
  assert seen == [choice, choice]


def test_default_leaves_the_environment_choice_and_bad_names_are_refused():
  config = config_lib.default_config()
  assert config.train.kernels is None
  model = _model([])
  assert update.with_kernels(model, None) is model
  config_lib.apply_overrides(config, ['train.kernels=reference'])
  assert config.train.kernels == 'reference'
  with pytest.raises(ValueError, match='train.kernels'):
    update.with_kernels(model, 'slow')
