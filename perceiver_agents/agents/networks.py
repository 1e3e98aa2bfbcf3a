"""The agent network: observation encoders -> torso -> LSTM core -> policy and value heads.

Shape letters: B batch, T time, N entities, F entity features, H x W map, C channels,
S scalars, A action types, D widths.

    entities [B, N, F] + mask ──entity encoder──┐ (perceiver_io | transformer | mlp | yours)
    spatial  [B, H, W, C] ─────spatial encoder──┼─▶ concat ─▶ torso MLP ─▶ LSTM ─▶ heads
    scalars  [B, S] ───────────scalar encoder───┘                              └─▶ value

Per-entity features feed the pointer heads, per-cell features the point heads.
`step` acts for one time step (the actor), `unroll` runs a trajectory (the learner); both
use the same modules, so they share parameters.
"""

from typing import Any, Mapping, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections

from perceiver_agents.agents import encoders as encoders_lib
from perceiver_agents.agents import heads as heads_lib
from perceiver_agents.agents.specs import EnvSpec


class AgentOutput(NamedTuple):
  logits: dict    # {key: [B, K]} (or [B, T, K] from unroll)
  value: Any      # [B] (or [B, T])
  action: dict    # {key: int32 [B]} (or [B, T])


def network_config() -> ml_collections.ConfigDict:
  """The `agent` section of a run config (network sizes and the encoders)."""
  c = ml_collections.ConfigDict()
  c.encoder = 'perceiver_io'      # entity sets: perceiver_io | transformer | mlp | mod:fn
  c.spatial_encoder = 'conv'      # planes: conv | perceiver_io | mod:fn
  c.embedding_size = 64           # D of each encoder's summary embedding
  c.entity_size = 32              # E of per-entity / per-cell features (pointer, point)
  c.num_latents = 32              # Perceiver IO entity encoder: latents M
  c.spatial_num_latents = 16      # Perceiver IO spatial encoder: latents
  c.num_channels = 64             # attention width (and MLP entity encoder width)
  c.num_layers = 2                # self-attention layers (Transformer / latent stack)
  c.num_heads = 4
  c.torso_size = 128
  c.core_size = 128               # LSTM width
  return c


def _entity_kwargs(c: ml_collections.ConfigDict) -> dict:
  if c.encoder == 'perceiver_io':
    return dict(num_latents=c.num_latents, num_channels=c.num_channels,
                num_self_attends=c.num_layers, num_heads=c.num_heads)
  if c.encoder == 'transformer':
    return dict(num_layers=c.num_layers, num_channels=c.num_channels,
                num_heads=c.num_heads)
  if c.encoder == 'mlp':
    return dict(hidden_sizes=(c.num_channels, c.num_channels))
  return {}


def _spatial_kwargs(c: ml_collections.ConfigDict) -> dict:
  if c.spatial_encoder == 'perceiver_io':
    return dict(num_latents=c.spatial_num_latents, num_channels=c.num_channels,
                num_self_attends=max(1, c.num_layers - 1), num_heads=c.num_heads)
  return {}


def prepare_observation(observation: Mapping[str, jax.Array]) -> dict:
  """Casts masks to bool and everything else to float32."""
  return {k: (v.astype(bool) if k.endswith('_mask') else v.astype(jnp.float32))
          for k, v in observation.items()}


class AgentNetwork(hk.Module):
  """Encoders, torso, LSTM core and heads for observations and actions of `env_spec`."""

  def __init__(self, *, env_spec: EnvSpec, config: ml_collections.ConfigDict,
               name: str = 'agent'):
    super().__init__(name=name)
    self._spec = env_spec
    self._config = config
    obs = env_spec.observation
    self._entity_encoder = self._spatial_encoder = self._scalar_encoder = None
    # Both choices are checked for every environment, also one without that observation.
    entity_factory = encoders_lib.resolve(config.encoder, encoders_lib.ENTITY_ENCODERS,
                                          field='agent.encoder')
    spatial_factory = encoders_lib.resolve(config.spatial_encoder,
                                           encoders_lib.SPATIAL_ENCODERS,
                                           field='agent.spatial_encoder')
    if 'entities' in obs:
      self._entity_encoder = entity_factory(output_size=config.embedding_size,
                                            entity_size=config.entity_size,
                                            **_entity_kwargs(config))
    if 'spatial' in obs:
      self._spatial_encoder = spatial_factory(output_size=config.embedding_size,
                                              cell_size=config.entity_size,
                                              **_spatial_kwargs(config))
    if 'scalars' in obs:
      self._scalar_encoder = encoders_lib.MLPScalarEncoder(
          output_size=config.embedding_size)
    self._torso = hk.nets.MLP([config.torso_size], activate_final=True, name='torso')
    self._core = hk.ResetCore(hk.LSTM(config.core_size, name='lstm'))
    self._heads = heads_lib.PolicyHeads(action_spec=env_spec.action, name='heads')
    self._value = hk.nets.MLP([config.torso_size, 1], name='value')

  def initial_state(self, batch_size: int) -> hk.LSTMState:
    return self._core.initial_state(batch_size)

  def _encode(self, obs: Mapping[str, jax.Array], is_training: bool):
    """obs with batch [B] -> torso [B, D], entity features, cell features."""
    embeddings, entity_features, cell_features = [], None, None
    if self._entity_encoder is not None:
      entities, mask = obs['entities'], obs['entity_mask']
      out = encoders_lib.check_output(
          self._entity_encoder(entities, mask, is_training=is_training),
          batch=entities.shape[0], output_size=self._config.embedding_size,
          features_shape=entities.shape[:2] + (self._config.entity_size,),
          name=f'agent.encoder {self._config.encoder!r}')
      embeddings.append(out.embedding)
      entity_features = out.features
    if self._spatial_encoder is not None:
      planes = obs['spatial']
      out = encoders_lib.check_output(
          self._spatial_encoder(planes, is_training=is_training),
          batch=planes.shape[0], output_size=self._config.embedding_size,
          features_shape=planes.shape[:3] + (self._config.entity_size,),
          name=f'agent.spatial_encoder {self._config.spatial_encoder!r}')
      embeddings.append(out.embedding)
      cell_features = out.features
    if self._scalar_encoder is not None:
      embeddings.append(self._scalar_encoder(obs['scalars'], is_training=is_training))
    torso = self._torso(jnp.concatenate(embeddings, axis=-1))              # [B, D]
    return torso, entity_features, cell_features

  def _heads_and_value(self, core, obs, entity_features, cell_features, action):
    logits, chosen = self._heads(
        core, action_mask=obs.get('action_mask'), entity_features=entity_features,
        entity_mask=obs.get('entity_mask'), cell_features=cell_features, action=action)
    value = self._value(core)[:, 0]                                        # [B]
    return AgentOutput(logits, value, chosen)

  def step(self, observation: Mapping[str, jax.Array], first: jax.Array,
           state: hk.LSTMState, *, action: Optional[Mapping[str, jax.Array]] = None,
           is_training: bool = False) -> tuple[AgentOutput, hk.LSTMState]:
    """One step for a batch of environments.

    Args:
      observation: {key: [B, ...]}; first: bool [B], True at an episode's first step
        (the core state is reset there); state: the LSTM state [B, core_size].
      action: optional {key: int [B]} to evaluate; sampled when None.
    """
    obs = prepare_observation(observation)
    torso, entity_features, cell_features = self._encode(obs, is_training)
    core, state = self._core((torso, first), state)                        # [B, D]
    return self._heads_and_value(core, obs, entity_features, cell_features, action), state

  def unroll(self, observation: Mapping[str, jax.Array], first: jax.Array,
             state: hk.LSTMState, action: Mapping[str, jax.Array], *,
             is_training: bool = True) -> AgentOutput:
    """Runs a trajectory batch [B, T] from `state`, evaluating the actions taken.

    Args:
      observation: {key: [B, T, ...]}; first: bool [B, T]; state: LSTM state at t=0
        [B, core_size]; action: {key: int [B, T]}.
    Returns:
      AgentOutput with [B, T] leading axes.
    """
    batch, time = first.shape
    merge = lambda x: jnp.reshape(x, (batch * time,) + x.shape[2:])
    split = lambda x: jnp.reshape(x, (batch, time) + x.shape[1:])
    obs = prepare_observation(jax.tree.map(merge, dict(observation)))
    torso, entity_features, cell_features = self._encode(obs, is_training)
    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    torso_tm = time_major(split(torso))                                    # [T, B, D]
    core_tm, _ = hk.dynamic_unroll(self._core, (torso_tm, time_major(first)), state)
    core = merge(time_major(core_tm))                                      # [BT, D]
    out = self._heads_and_value(core, obs, entity_features, cell_features,
                                jax.tree.map(merge, dict(action)))
    return jax.tree.map(split, out)
