"""Wall and CPU seconds of `perceiver-agents train TASK --config.preset=local`, end to end.

Each task runs in a fresh workdir in its own process (start-up, compilation, training, the
final eval and checkpoint); CPU seconds are the process's user + sys time. Results go to
stdout as one JSON line per task. Run it under the benchmark lock on a shared machine:

    flock /tmp/perceiver_bench.lock python benchmarks/preset_local.py digits optical_flow
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def run(task: str, workdir: str) -> dict:
  start = time.perf_counter()
  process = subprocess.Popen(
      [sys.executable, '-m', 'perceiver_agents.cli', 'train', task, '--workdir', workdir,
       '--config.preset=local', '--config.train.progress_bar=false'],
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  out, _ = process.communicate()
  wall = time.perf_counter() - start
  lines = out.strip().splitlines()
  return {'task': task, 'returncode': process.returncode, 'wall_s': round(wall, 1),
          'result': json.loads(lines[-1]) if lines and lines[-1].startswith('{') else None}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('tasks', nargs='+')
  args = parser.parse_args(argv)
  for task in args.tasks:
    before = os.times()
    with tempfile.TemporaryDirectory() as workdir:
      row = run(task, workdir)
    after = os.times()
    row['cpu_s'] = round((after.children_user - before.children_user) +
                         (after.children_system - before.children_system), 1)
    row['load_average'] = round(os.getloadavg()[0], 1)
    print(json.dumps(row), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
