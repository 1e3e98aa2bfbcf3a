"""The `impala` (loss) and `actors` (acting backends) sections of an agent's run config."""

import ml_collections

BACKENDS = ('inline', 'threads', 'ray')


def loss_config() -> ml_collections.ConfigDict:
  """The `impala` section: V-trace and loss weights, and the unroll length T."""
  c = ml_collections.ConfigDict()
  c.discount = 0.99
  c.vtrace_lambda = 1.0
  c.clip_rho_threshold = 1.0
  c.clip_pg_rho_threshold = 1.0
  c.baseline_cost = 0.5
  c.entropy_cost = 0.01
  c.unroll_length = 20          # T: transitions per trajectory
  return c


def actors_config() -> ml_collections.ConfigDict:
  """The `actors` section: where and how many actors act.

  backend: inline (in the learner's thread, synchronous, deterministic) | threads (actor
    threads in this process) | ray (Ray actors in other processes, on this machine or on
    machines that joined the cluster).
  num_actors: actors (threads / Ray actors; inline steps them one after another).
  envs_per_actor: environments each actor steps in lockstep; 0 = train.batch_size
    (per process) / num_actors. Every update takes train.batch_size trajectories, i.e.
    train.batch_size / envs_per_actor actor unrolls.
  max_policy_lag: drop trajectories acted with parameters more than this many updates
    older than the learner's (-1: keep all); the drops are counted in a metric. 0: the
    threads and ray actors act on demand, only for the batch being assembled and with
    the newest parameters (on-policy: nothing dropped, acting in parallel over the
    actors but not overlapping the update).
  queue_size: actor unrolls acted ahead of the learner, in progress or queued (threads,
    ray); 0 = one update's worth, so that actors act on the next batch while the
    current update runs (a policy lag of about one update).
  max_restarts: restarts of failed actors (raised, or process died) allowed per run;
    the next failure stops the run.
  ray_address: '' starts a local Ray here; 'auto' joins the cluster of `ray start` on
    this machine; 'HOST:PORT' joins that head node.
  ray_cpus_per_actor: CPUs Ray reserves for each actor (placement only).
  """
  c = ml_collections.ConfigDict()
  c.backend = 'inline'
  c.num_actors = 1
  c.envs_per_actor = 0
  c.max_policy_lag = -1
  c.queue_size = 0
  c.max_restarts = 10
  c.ray_address = ''
  c.ray_cpus_per_actor = 1.0
  return c
