"""The ray backend on a Ray cluster of two nodes: actors placed on both, joined by address.

Ray's `cluster_utils.Cluster` starts a head and a second raylet on this machine, each a
node of its own with one CPU, the way `ray start --head` and `ray start --address` make
nodes on two machines. It runs in a subprocess: this test process may already hold the
session's local Ray (conftest.local_ray), and a process joins one cluster at a time.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    import ray
    from ray import cluster_utils
    from perceiver_agents import learner, startup
    from perceiver_agents.agents.impala import builder
    from perceiver_agents.tasks import agent
    sys.path.insert(0, sys.argv[1])
    from conftest import TINY

    startup.quiet_libraries()   # As the CLI: the project's INFO logs show.
    small = dict(num_cpus=1, object_store_memory=80 * 1024 ** 2)
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args=small)
    cluster.add_node(**small)
    cluster.wait_for_nodes()
    try:
      config = learner.apply_overrides(agent.get_config(), TINY + [
          'env=catch', 'actors.backend=ray', 'actors.num_actors=2',
          f'actors.ray_address={cluster.address}'])
      impala = builder.ImpalaBuilder(config)
      task = impala.task()
      params, _ = task.model.init(jax.random.PRNGKey(0), task.train_batch(0),
                                  is_training=True)
      iterator = impala.train_iterator(0)
      try:
        iterator.publish(params, 0)
        batch = next(iterator)
        where = iterator._pool.actor_locations()
        cluster_nodes = sorted(n['NodeID'] for n in ray.nodes())
      finally:
        iterator.close()
      print(json.dumps({'trajectories': len(batch['param_version']),
                        'nodes': sorted({w['node_id'] for w in where}),
                        'cluster_nodes': cluster_nodes}))
    finally:
      cluster.shutdown()
''')


def test_actors_spread_over_the_nodes_of_a_joined_cluster(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', RAY_DEDUP_LOGS='0')
  done = subprocess.run(
      [sys.executable, '-c', SCRIPT, os.path.dirname(__file__)], capture_output=True,
      text=True, timeout=480, env=env, cwd=tmp_path, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result['trajectories'] == 4
  # One CPU per node and one per actor: the two actors run on the two nodes.
  assert len(result['nodes']) == 2
  assert set(result['nodes']) <= set(result['cluster_nodes'])
  assert 'Ray actors on 2 node(s)' in done.stderr
