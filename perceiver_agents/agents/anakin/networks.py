"""Feed-forward policy-value networks for pure-JAX environments (no core state).

Shape letters: E environments, A agents, K actions, N units, F unit features.

    apply(params, obs {key: [E, A, ...] or [E, ...]}) -> (logits [E, A, K], value [E, A])

SMAX observations ('entities' / 'units', see agents/envs/jax_envs/smax.py) go through
the unit controller (agents/unit_controller.py):
  view 'local'   decentralised, as IPPO: every ally acts on its own observation, all
                 allies share the parameters; a value per ally.
  view 'global'  centralised: one pass over all units of the battle per environment, one
                 decoder query per ally; one value per environment (the team's).
Other observations ('scalars', 'spatial', e.g. gymnax) go through an MLP or the agents'
conv encoder, then a torso MLP.
"""

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections

from perceiver_agents.agents import encoders as encoders_lib
from perceiver_agents.agents import unit_controller
from perceiver_agents.agents.heads import mask_logits

VIEWS = ('local', 'global')


def network_config() -> ml_collections.ConfigDict:
  """The `agent` section of an Anakin run config."""
  c = ml_collections.ConfigDict()
  c.encoder = 'perceiver_io'   # perceiver_io | transformer | mlp | package.module:factory
  c.view = 'local'             # local (each ally on its own obs) | global (centralised)
  c.embedding_size = 32        # D: the summary embedding (value input)
  c.entity_size = 16           # E: per-unit features (action and pointer heads)
  c.num_latents = 4            # Perceiver IO latents M (SMAX maps have 6-60 units)
  c.num_channels = 32          # attention width C (MLP encoder width)
  c.num_layers = 1             # latent self-attention layers (Transformer layers)
  c.num_heads = 4
  c.hidden_size = 64           # action / value MLPs, and the torso of non-unit inputs
  return c


def make_network(config: ml_collections.ConfigDict, env) -> hk.Transformed:
  """The network for `env`'s observations (a jax_envs environment)."""
  spec = env.observation_spec
  num_actions, num_agents = env.num_actions, env.num_agents
  if config.view not in VIEWS:
    raise ValueError(f'agent.view: expected one of {VIEWS}, got {config.view!r}.')

  def controller():
    return unit_controller.UnitController(
        encoder=config.encoder, embedding_size=config.embedding_size,
        entity_size=config.entity_size, hidden_size=config.hidden_size,
        encoder_kwargs=unit_controller.encoder_kwargs(
            config.encoder, num_latents=config.num_latents,
            num_channels=config.num_channels, num_layers=config.num_layers,
            num_heads=config.num_heads))

  def units_forward(obs):
    action_mask = obs['action_mask']                                     # [E, A, K]
    batch = action_mask.shape[0]
    if config.view == 'local':
      entities = obs['entities'].astype(jnp.float32)                     # [E, A, N, F]
      flat = lambda x: jnp.reshape(x, (batch * num_agents,) + x.shape[2:])
      logits, value = controller()(
          flat(entities), flat(obs['entity_mask']), flat(action_mask)[:, None],
          enemy_offset=num_agents)                                       # [EA, 1, K], [EA]
      return (jnp.reshape(logits, (batch, num_agents, num_actions)),
              jnp.reshape(value, (batch, num_agents)))
    logits, value = controller()(obs['units'].astype(jnp.float32), obs['unit_mask'],
                                 action_mask, enemy_offset=num_agents)   # [E, A, K], [E]
    return logits, jnp.broadcast_to(value[:, None], (batch, num_agents))

  def flat_forward(obs):
    action_mask = obs['action_mask']
    batch = action_mask.shape[0]
    merge = lambda x: jnp.reshape(x, (batch * num_agents,) + x.shape[2:])
    if 'spatial' in obs:
      x = encoders_lib.ConvSpatialEncoder(output_size=config.hidden_size, cell_size=1)(
          merge(obs['spatial'].astype(jnp.float32)), is_training=False).embedding
    else:
      x = merge(obs['scalars'].astype(jnp.float32))
    torso = hk.nets.MLP([config.hidden_size, config.hidden_size], activate_final=True,
                        name='torso')(x)                                 # [EA, H]
    logits = hk.Linear(num_actions, name='logits',
                       w_init=hk.initializers.VarianceScaling(0.01))(torso)
    value = hk.Linear(1, name='value')(torso)[:, 0]
    logits = mask_logits(jnp.reshape(logits, (batch, num_agents, num_actions)),
                         action_mask)
    return logits, jnp.reshape(value, (batch, num_agents))

  forward = units_forward if ('entities' in spec or 'units' in spec) else flat_forward
  return hk.without_apply_rng(hk.transform(forward))


def sample(key: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Actions int32 [E, A] from logits [E, A, K], and their log-probabilities [E, A]."""
  action = jax.random.categorical(key, logits).astype(jnp.int32)
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], -1)[..., 0]
  return action, logp
