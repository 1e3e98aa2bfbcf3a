"""Damages a finished run's checkpoints and records how `eval` and a resumed `train` fare.

Trains `digits` (small: 30 steps, checkpoints at 10, 20, 30) once through the CLI, then for
each kind of damage to the latest checkpoint (and for every checkpoint damaged) copies the
run, damages the copy and runs `perceiver-agents eval` and `perceiver-agents train` (to
step 40) on it in a fresh process. A row records the exit code, the step restored, the
warning and error lines, and whether anything else reached stderr (a traceback would).

    .venv/bin/python benchmarks/checkpoint_damage.py            # table -> stdout
    .venv/bin/python benchmarks/checkpoint_damage.py --markdown RELIABILITY.md
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

CLI = [sys.executable, '-m', 'perceiver_agents.cli']
TRAIN = ['--config.train.steps=30', '--config.checkpoint.every=10', '--config.eval.every=0',
         '--config.model.num_latents=16', '--config.model.num_latent_channels=32',
         '--config.train.progress_bar=false']


def _data_files(step_dir):
  folder = os.path.join(step_dir, 'default', 'd')  # The merged store restore reads.
  return sorted((os.path.join(folder, n) for n in os.listdir(folder)),
                key=os.path.getsize)


def truncate(step_dir):
  path = _data_files(step_dir)[-1]
  os.truncate(path, os.path.getsize(path) // 2)


def zero_fill(step_dir):
  path = _data_files(step_dir)[-1]
  size = os.path.getsize(path)
  with open(path, 'wb') as f:
    f.write(b'\0' * size)


def delete_metadata(step_dir):
  os.remove(os.path.join(step_dir, 'default', '_METADATA'))


def delete_mid_write(step_dir):
  """The step's directory deleted half-way: its array store is gone, the rest is left."""
  shutil.rmtree(os.path.join(step_dir, 'default'))


DAMAGES = {
    'truncate an array file (latest)': (truncate, 'latest'),
    'delete _METADATA (latest)': (delete_metadata, 'latest'),
    'delete the step directory mid-way (latest)': (delete_mid_write, 'latest'),
    'fill an array file with zeros (latest)': (zero_fill, 'latest'),
    'truncate, without manifests (latest)': (truncate, 'latest-no-manifest'),
    'truncate every checkpoint': (truncate, 'all'),
}


def run(args, cwd=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(CLI + args, capture_output=True, text=True, env=env, cwd=cwd,
                        timeout=600)
  return proc.returncode, proc.stdout, proc.stderr


def outcome(code, out, err):
  lines = [l for l in err.splitlines() if l.strip()]
  ours = [l for l in lines if l.startswith('perceiver-agents:') or l.startswith('Resumed')]
  other = [l for l in lines if l not in ours]
  step = None
  if code == 0:
    step = json.loads(out.strip().splitlines()[-1])['step']
  warnings = [l for l in ours if ': warning:' in l]
  errors = [l for l in ours if ': error:' in l]
  return {'exit': code, 'step': step, 'warnings': len(warnings), 'errors': len(errors),
          'other_stderr_lines': len(other), 'first_line': (warnings or errors or [''])[0]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--markdown', help='write the table (markdown) to this file section')
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix='ckpt_damage_')
  template = os.path.join(root, 'template')
  code, _, err = run(['train', 'digits', '--workdir', template] + TRAIN)
  assert code == 0, err
  rows = []
  for name, (damage, which) in DAMAGES.items():
    for command in ('eval', 'train'):
      workdir = os.path.join(root, f'{len(rows)}')
      shutil.copytree(template, workdir)
      steps = (10, 20, 30) if which == 'all' else (30,)
      if which == 'latest-no-manifest':
        for s in (10, 20, 30):
          os.remove(os.path.join(workdir, 'checkpoints', str(s),
                                 'perceiver_agents_manifest.json'))
      for s in steps:
        damage(os.path.join(workdir, 'checkpoints', str(s)))
      extra = ['--config.train.steps=40'] if command == 'train' else []
      result = outcome(*run([command, 'digits', '--workdir', workdir] + extra))
      rows.append({'damage': name, 'command': command, **result})
      print(json.dumps(rows[-1]), flush=True)
  shutil.rmtree(root)

  header = ('| damage | command | exit | step used / reached | warnings | errors | '
            'other stderr lines |\n|---|---|---|---|---|---|---|\n')
  table = header + ''.join(
      f"| {r['damage']} | {r['command']} | {r['exit']} | "
      f"{r['step'] if r['step'] is not None else '-'} | {r['warnings']} | {r['errors']} | "
      f"{r['other_stderr_lines']} |\n" for r in rows)
  examples = '\n'.join(f"- {r['damage']}, {r['command']}: `{r['first_line']}`"
                       for r in rows if r['command'] == 'eval')
  print(table)
  print(examples)
  if args.markdown:
    with open(args.markdown, 'w') as f:
      f.write(_DOC.format(table=table, examples=examples))


_DOC = '''# Reliability: damaged checkpoints

What `eval` and a resumed `train` do when a finished run's checkpoints are damaged. The
run: `digits`, 30 steps, checkpoints at steps 10, 20 and 30; `train` resumes to step 40.
Produced by

    .venv/bin/python benchmarks/checkpoint_damage.py --markdown RELIABILITY.md

"step used / reached" is the checkpoint `eval` evaluated, or the step `train` finished
at; "other stderr lines" counts anything on stderr that is not one of the CLI's own lines
(a traceback would show there).

{table}
The line each `eval` printed first:

{examples}
'''


if __name__ == '__main__':
  main()
