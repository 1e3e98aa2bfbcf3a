"""Pure-JAX environments (reset/step as pure functions; see base.py for the protocol).

    make('smax:3m')                  JaxMARL SMAX, a SMAC map against the heuristic enemy
    make('smax:3m2M_vs_6m')          a custom unit mix (SMAX shorthands, see smax.py)
    make('smax:3m+2s3z+5m_vs_6m')    a mixture of maps, padded to the largest unit counts
    make('gymnax:CartPole-v1')       a gymnax environment (CartPole-v1, Catch-bsuite,
                                     Breakout-MinAtar, ...)

Both need the optional extra `perceiver-agents[jaxenv]` (jaxmarl, which brings gymnax).
"""

from typing import Any

from perceiver_agents.agents.envs.jax_envs.base import JaxEnv, batched, require

NAMES = ('smax:<map>', 'smax:<map>+<map>+...', 'gymnax:<id>')


def make(name: str, **kwargs: Any) -> JaxEnv:
  """The pure-JAX environment called `name` (see the module docstring)."""
  # pylint: disable=g-import-not-at-top
  kind, _, rest = name.partition(':')
  if kind == 'smax' and rest:
    from perceiver_agents.agents.envs.jax_envs import smax
    maps = rest.split('+')
    if len(maps) == 1:
      return smax.SMAXEnv(maps[0], **kwargs)
    return smax.SMAXMixture(maps, **kwargs)
  if kind == 'gymnax' and rest:
    from perceiver_agents.agents.envs.jax_envs import gymnax as gymnax_env
    return gymnax_env.GymnaxEnv(rest, **kwargs)
  raise ValueError(f'env: unknown pure-JAX environment {name!r}; expected one of {NAMES}.')
