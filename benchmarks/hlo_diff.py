"""Whether two checkouts compile benchmarks/peer.py's forward and train step to the same
XLA:CPU program: the instructions of the optimised HLO, with names, metadata and source
locations stripped. Identical programs run at the same speed, whatever the machine load.

    .venv/bin/python benchmarks/hlo_diff.py OLD_CHECKOUT NEW_CHECKOUT \
        [--configs language_small image_small] [--dtype float32]

Each checkout is compiled in a process of its own (its own sys.path).
"""
import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile

CHILD = r'''
import re, sys
tree, cfg, dtype, out = sys.argv[1:5]
sys.path[:0] = [tree, tree + '/benchmarks']
import inspect, jax, peer
args = (peer.CONFIGS[cfg], dtype) if 'dtype' in inspect.signature(
    peer.jax_step_functions).parameters else (peer.CONFIGS[cfg],)
(fwd, fa), (step, sa), _ = peer.jax_step_functions(*args)
lines = []
for f, a in ((fwd, fa), (step, sa)):
  for line in jax.jit(f).lower(*a).compile().as_text().splitlines():
    if re.match(r'\s*(ROOT )?%[\w.\-]+ = ', line):
      line = re.sub(r'metadata=\{[^}]*\}', '', line)
      line = re.sub(r', (stack_frame_id|origin)=[^,}]*', '', line)
      lines.append(re.sub(r'%[\w.\-]+', '%x', line).strip())
open(out, 'w').write('\n'.join(lines))
'''


def program(tree: str, config: str, dtype: str) -> list:
  with tempfile.NamedTemporaryFile('r', suffix='.txt') as out:
    env = dict(os.environ, PYTHONPATH=tree)
    subprocess.run([sys.executable, '-c', CHILD, tree, config, dtype, out.name],
                   check=True, env=env, capture_output=True)
    return out.read().splitlines()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('old')
  parser.add_argument('new')
  parser.add_argument('--configs', nargs='+', default=['language_small', 'image_small'])
  parser.add_argument('--dtype', default='float32')
  args = parser.parse_args()
  for config in args.configs:
    old, new = (program(os.path.abspath(t), config, args.dtype) for t in (args.old, args.new))
    changed = [l for l in difflib.unified_diff(old, new, lineterm='', n=0)
               if l[:1] in '+-' and l[:3] not in ('+++', '---')]
    print(f'{config} ({args.dtype}): {len(old)} vs {len(new)} instructions, '
          f'{len(changed)} lines differ' + (' (identical programs)' if not changed else ''))
    for line in changed[:20]:
      print('   ', line[:200])


if __name__ == '__main__':
  main()
