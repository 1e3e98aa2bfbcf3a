"""JaxMARL's SMAX (StarCraft micromanagement in pure JAX) through the protocol of base.py.

The allies are the agents; the enemies play SMAX's heuristic policy
(`jaxmarl.make('HeuristicEnemySMAX', scenario=...)`, with the keyword arguments of
JaxMARL's IPPO baseline: see_enemy_actions, walls_cause_death, attack_mode='closest').

Maps: any name of SMAX's MAP_NAME_TO_SCENARIO (3m, 2s3z, 5m_vs_6m, 3s5z, 10m_vs_11m, ...),
or a custom unit mix written with SMAX's unit shorthands — m marine, M marauder,
s stalker, Z zealot, z zergling, h hydralisk — as '<allies>' (the same on both sides) or
'<allies>_vs_<enemies>', e.g. '3m2M_vs_6m' or '2s2Z'. (Known names win: '2s3z' is SMAC's
2 stalkers + 3 zealots.)

Shape letters: A allies (agents), K enemies, N = A + K units, F = NUM_FEATURES.
Each observation holds two views of the same step:

  local (what each ally sees, the IPPO setting) —
    'entities'     f32 [A, N, F]  ally i's units: itself, the other allies, the enemies
                                  (enemy j at index A + j); out-of-sight units masked
    'entity_mask'  bool [A, N]
  global (the whole battle, for one centralised controller) —
    'units'        f32 [N, F]     allies (unit a = ally a) then enemies (A + j = enemy j)
    'unit_mask'    bool [N]       alive units
  and
    'action_mask'  bool [A, 5 + K]  0-3 move (N, E, S, W), 4 stop, 5 + j attack enemy j
    'agent_mask'   bool [A]

Entity features (FEATURES): health fraction, position relative to the observer (local;
divided by its sight range) or on the map (global; divided by the map size), last
movement, last target, weapon cooldown fraction, unit type one-hot (6), team (ally /
enemy), is-self, absolute position (self only / global). SMAX units have no shields.

With `max_allies` / `max_enemies` above the map's counts, allies, enemies and attack
actions are padded (masked entities, unavailable actions; a padding ally can only stop),
so that maps of different sizes share shapes (SMAXMixture).
"""

import re
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.agents.envs.jax_envs.base import require

UNIT_SHORTHANDS = ('m', 'M', 's', 'Z', 'z', 'h')  # SMAX's unit types 0..5.
NUM_MOVES = 5                                      # 4 directions + stop.
STOP = 4
FEATURES = ('health', 'rel_x', 'rel_y', 'move_x', 'move_y', 'last_target', 'cooldown',
            *(f'type_{u}' for u in ('marine', 'marauder', 'stalker', 'zealot',
                                    'zergling', 'hydralisk')),
            'ally', 'enemy', 'self', 'abs_x', 'abs_y')
NUM_FEATURES = len(FEATURES)
_SMAX_UNIT = 13   # jaxmarl's per-unit features (health, rel pos, move, target, cd, types)
_SMAX_OWN = 10    # jaxmarl's own features (health, pos, cooldown, types)
# The IPPO baseline's environment keywords (baselines/IPPO/config/ippo_rnn_smax.yaml).
BASELINE_KWARGS = dict(see_enemy_actions=True, walls_cause_death=True,
                       attack_mode='closest')
_MIX = re.compile(r'^(\d+[mMsZzh])+$')


def known_maps() -> list[str]:
  smax = require('jaxmarl.environments.smax.smax_env')
  return sorted(smax.MAP_NAME_TO_SCENARIO)


def _parse_mix(text: str) -> list[int]:
  types = []
  for count, unit in re.findall(r'(\d+)([mMsZzh])', text):
    types += [UNIT_SHORTHANDS.index(unit)] * int(count)
  return types


def scenario(map_name: str):
  """SMAX's Scenario for a known map name or a custom unit mix (module docstring)."""
  smax = require('jaxmarl.environments.smax.smax_env')
  if map_name in smax.MAP_NAME_TO_SCENARIO:
    return smax.map_name_to_scenario(map_name)
  allies, _, enemies = map_name.partition('_vs_')
  enemies = enemies or allies
  if not (_MIX.match(allies) and _MIX.match(enemies)):
    raise ValueError(
        f'env.map: unknown SMAX map {map_name!r}; known maps: {known_maps()}, or a '
        "custom mix such as '3m2M_vs_6m' (unit shorthands m marine, M marauder, "
        's stalker, Z zealot, z zergling, h hydralisk).')
  ally_types, enemy_types = _parse_mix(allies), _parse_mix(enemies)
  if not ally_types or not enemy_types:
    raise ValueError(f'env.map: {map_name!r} has no units on one side.')
  return smax.Scenario(jnp.asarray(ally_types + enemy_types, jnp.uint8),
                       len(ally_types), len(enemy_types), False, False)


class SMAXEnv:
  """One SMAX map against the heuristic enemy; see the module docstring.

  Args:
    map_name: a known map or custom unit mix.
    max_allies, max_enemies: pad to these counts (default: the map's own).
    **env_kwargs: for jaxmarl's HeuristicEnemySMAX (default BASELINE_KWARGS).
  """

  def __init__(self, map_name: str = '3m', *, max_allies: Optional[int] = None,
               max_enemies: Optional[int] = None, **env_kwargs: Any):
    jaxmarl = require('jaxmarl')
    self.map_name = map_name
    kwargs = dict(BASELINE_KWARGS, **env_kwargs)
    self.env = jaxmarl.make('HeuristicEnemySMAX', scenario=scenario(map_name), **kwargs)
    self.allies, self.enemies = self.env.num_allies, self.env.num_enemies
    self.max_allies = self.allies if max_allies is None else max_allies
    self.max_enemies = self.enemies if max_enemies is None else max_enemies
    if self.max_allies < self.allies or self.max_enemies < self.enemies:
      raise ValueError(f'max_allies/max_enemies: {self.max_allies}/{self.max_enemies} '
                       f'is below map {map_name!r} ({self.allies}/{self.enemies}).')
    self.num_agents = self.max_allies
    self.num_actions = NUM_MOVES + self.max_enemies
    self.num_units = self.max_allies + self.max_enemies
    a, n, f = self.num_agents, self.num_units, NUM_FEATURES
    self.observation_spec = {
        'entities': ((a, n, f), np.float32), 'entity_mask': ((a, n), np.bool_),
        'units': ((n, f), np.float32), 'unit_mask': ((n,), np.bool_),
        'action_mask': ((a, self.num_actions), np.bool_), 'agent_mask': ((a,), np.bool_)}
    # Where the map's units go among the padded ones: allies, then enemies.
    self._unit_slots = np.concatenate([np.arange(self.allies),
                                       self.max_allies + np.arange(self.enemies)])

  # --- observations -------------------------------------------------------------------
  def _local(self, raw_obs: dict) -> tuple[jax.Array, jax.Array]:
    """jaxmarl's unit-list observations -> entities [A, N, F], mask [A, N] (padded)."""
    obs = jnp.stack([raw_obs[agent] for agent in self.env.agents])        # [a, obs]
    others = jnp.reshape(obs[:, :-_SMAX_OWN], (self.allies, -1, _SMAX_UNIT))  # [a, n-1, 13]
    own = obs[:, -_SMAX_OWN:]                                             # [a, 10]
    a = self.allies
    team = jnp.concatenate([jnp.tile(jnp.asarray([1., 0., 0.]), (a - 1, 1)),
                            jnp.tile(jnp.asarray([0., 1., 0.]), (self.enemies, 1))])
    others = jnp.concatenate([
        others, jnp.broadcast_to(team, others.shape[:2] + (3,)),
        jnp.zeros(others.shape[:2] + (2,))], axis=-1)                      # [a, n-1, F]
    self_entity = jnp.concatenate([
        own[:, :1], jnp.zeros((a, 5)), own[:, 3:4], own[:, 4:],
        jnp.tile(jnp.asarray([1., 0., 1.]), (a, 1)), own[:, 1:3]], axis=-1)  # [a, F]
    entities = jnp.concatenate([self_entity[:, None], others], axis=1)    # [a, n, F]
    mask = entities[..., 0] > 0                                           # visible & alive
    # Padding: other-ally slots after the real ones, enemy slots at the end.
    slots = np.concatenate([[0], 1 + np.arange(a - 1),
                            self.max_allies + np.arange(self.enemies)])
    padded = jnp.zeros((a, self.num_units, NUM_FEATURES)).at[:, slots].set(entities)
    padded_mask = jnp.zeros((a, self.num_units), bool).at[:, slots].set(mask)
    return self._pad_agents(padded), self._pad_agents(padded_mask)

  def _global(self, state: Any) -> tuple[jax.Array, jax.Array]:
    """The battle's units [N, F] (allies then enemies, padded) and alive mask [N]."""
    inner, s = self.env._env, state.state  # pylint: disable=protected-access
    types = s.unit_types.astype(jnp.int32)
    n = self.allies + self.enemies
    team = (jnp.arange(n) >= self.allies)
    max_action = jnp.where(team, self.allies + NUM_MOVES - 1, self.enemies + NUM_MOVES - 1)
    size = jnp.asarray([inner.map_width, inner.map_height], jnp.float32)
    features = jnp.concatenate([
        (s.unit_health / inner.unit_type_health[types])[:, None],
        jnp.zeros((n, 2)), s.prev_movement_actions,
        (s.prev_attack_actions / max_action)[:, None],
        jnp.clip(s.unit_weapon_cooldowns / inner.unit_type_weapon_cooldowns[types],
                 0., 1.)[:, None],
        jax.nn.one_hot(types, len(UNIT_SHORTHANDS)),
        (~team)[:, None].astype(jnp.float32), team[:, None].astype(jnp.float32),
        jnp.zeros((n, 1)), s.unit_positions / size], axis=-1)             # [n, F]
    alive = s.unit_alive
    features = jnp.where(alive[:, None], features, 0.)
    units = jnp.zeros((self.num_units, NUM_FEATURES)).at[self._unit_slots].set(features)
    mask = jnp.zeros((self.num_units,), bool).at[self._unit_slots].set(alive)
    return units, mask

  def _pad_agents(self, x: jax.Array, value=0) -> jax.Array:
    pad = self.max_allies - self.allies
    if not pad:
      return x
    return jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], value, x.dtype)])

  def _action_mask(self, state: Any) -> jax.Array:
    avail = self.env.get_avail_actions(state)
    mask = jnp.stack([avail[agent] for agent in self.env.agents]).astype(bool)  # [a, 5+k]
    mask = jnp.concatenate([mask, jnp.zeros(
        (self.allies, self.max_enemies - self.enemies), bool)], axis=1)
    padding = jnp.zeros((self.max_allies - self.allies, self.num_actions), bool)
    return jnp.concatenate([mask, padding.at[:, STOP].set(True)])

  def _observation(self, raw_obs: dict, state: Any) -> dict:
    entities, entity_mask = self._local(raw_obs)
    units, unit_mask = self._global(state)
    agent_mask = jnp.arange(self.max_allies) < self.allies
    return {'entities': entities, 'entity_mask': entity_mask, 'units': units,
            'unit_mask': unit_mask, 'action_mask': self._action_mask(state),
            'agent_mask': agent_mask}

  # --- protocol -----------------------------------------------------------------------
  def reset(self, key: jax.Array):
    raw_obs, state = self.env.reset(key)
    return self._observation(raw_obs, state), state

  def step(self, key: jax.Array, state: Any, action: jax.Array):
    """action int32 [A] (padding allies' entries ignored) -> (obs, state, reward f32 [A],
    done bool [], {'won': f32 []})."""
    actions = {agent: action[i] for i, agent in enumerate(self.env.agents)}
    raw_obs, state, reward, done, _ = self.env.step(key, state, actions)
    reward = self._pad_agents(jnp.stack([reward[a] for a in self.env.agents]))
    done = done['__all__']
    won = (done & (reward[0] >= 1.0)).astype(jnp.float32)  # SMAXLogWrapper's rule.
    return (self._observation(raw_obs, state), state, reward.astype(jnp.float32), done,
            {'won': won})


class SMAXMixture:
  """Several SMAX maps in one batch: the E environments split evenly over `maps`, each
  map padded to the largest ally and enemy counts, so observations share shapes.

  Only the batch functions exist (batch_reset / batch_step); E must be a multiple of
  len(maps), environment e plays maps[e // (E / len(maps))].
  """

  def __init__(self, maps: Sequence[str], **env_kwargs: Any):
    if len(maps) < 2 or len(set(maps)) != len(maps):
      raise ValueError(f'env.map: a mixture needs distinct maps, got {list(maps)}.')
    plain = [SMAXEnv(m, **env_kwargs) for m in maps]
    max_allies = max(e.allies for e in plain)
    max_enemies = max(e.enemies for e in plain)
    self.envs = [SMAXEnv(m, max_allies=max_allies, max_enemies=max_enemies, **env_kwargs)
                 for m in maps]
    self.maps = list(maps)
    first = self.envs[0]
    self.num_agents, self.num_actions = first.num_agents, first.num_actions
    self.observation_spec = first.observation_spec

  def _split(self, x):
    n = len(self.envs)
    size = x.shape[0]
    if size % n:
      raise ValueError(f'the number of environments ({size}) must be a multiple of the '
                       f'number of maps ({n}: {self.maps}).')
    return [x[i * size // n:(i + 1) * size // n] for i in range(n)]

  def batch_reset(self, keys: jax.Array):
    outs = [jax.vmap(env.reset)(k) for env, k in zip(self.envs, self._split(keys))]
    obs = jax.tree.map(lambda *x: jnp.concatenate(x), *[o for o, _ in outs])
    return obs, tuple(s for _, s in outs)

  def batch_step(self, keys: jax.Array, states: tuple, actions: jax.Array):
    outs = [jax.vmap(env.step)(k, s, a) for env, k, s, a in
            zip(self.envs, self._split(keys), states, self._split(actions))]
    cat = lambda *x: jnp.concatenate(x)
    obs = jax.tree.map(cat, *[o[0] for o in outs])
    states = tuple(o[1] for o in outs)
    reward, done, info = (jax.tree.map(cat, *[o[i] for o in outs]) for i in (2, 3, 4))
    return obs, states, reward, done, info

  def map_index(self, num_envs: int) -> np.ndarray:
    """int [E]: which map each of `num_envs` environments plays."""
    return np.repeat(np.arange(len(self.envs)), num_envs // len(self.envs))
