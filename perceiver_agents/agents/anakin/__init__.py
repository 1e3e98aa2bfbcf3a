"""On-device (Anakin) training for pure-JAX environments: see loop.py."""

from perceiver_agents.agents.anakin.loop import (Programs, Runner, TrainResult, build,
                                                 episode_means, init_keys, load_params,
                                                 num_updates, seed_slice,
                                                 run_episodes, train)
from perceiver_agents.agents.anakin.losses import Trajectory, loss_config
from perceiver_agents.agents.anakin.networks import make_network, network_config
