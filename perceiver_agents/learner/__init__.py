"""The one training loop: train state, sharding, optimizers, checkpoints, metrics."""

from perceiver_agents.learner.checkpoint import (CheckpointError, CheckpointMismatchError,
                                                 Checkpointer, DamagedCheckpointError)
from perceiver_agents.learner.config import apply_overrides, default_config
from perceiver_agents.learner.loop import (NonFiniteLossError, Programs, TrainResult,
                                           build_programs, evaluate, initial_state,
                                           load_state, run_eval, train)
from perceiver_agents.learner.metrics import MetricsWriter, read_metrics
from perceiver_agents.learner.optim import decay_mask, make_optimizer, make_schedule
from perceiver_agents.learner.sharding import DATA_AXIS, make_mesh
from perceiver_agents.learner.state import TrainState
