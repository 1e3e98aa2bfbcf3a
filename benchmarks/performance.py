"""Runs the performance benchmarks and writes their tables into BENCHMARKS.md.

    .venv/bin/python benchmarks/performance.py                # every section, this machine
    .venv/bin/python benchmarks/performance.py --sections peer attention
    .venv/bin/python benchmarks/performance.py --compose_only # rewrite BENCHMARKS.md only

Sections (each is a script of its own in benchmarks/, run in a fresh process, so that one
section's memory does not weigh on the next):

  scaling    train step time and peak memory vs input size, Perceiver IO vs Transformer
             (scaling.py; on a GPU without the host address-space cap).
  peer       this library vs Hugging Face's PyTorch Perceiver, forward and train step, with
             XLA's FLOPs and model FLOP utilisation over the measured matmul peak (peer.py).
  attention  jax.nn.dot_product_attention vs the XLA matmul path (attention_kernels.py).
  memory     chunked decoding and remat, peak memory before/after (memory.py; CPU).
  cpu_gemm   XLA:CPU's weight-gradient and attention-backward products against the
             OpenBLAS kernel that replaces them, and the train step with / without it
             (cpu_gemm.py; CPU).

Each section's table goes to benchmarks/results/performance_<platform>_<n>_<section>.md
(platform cpu or gpu); BENCHMARKS.md's performance section (between the markers below) is
then rebuilt from every such file present, so a GPU run's files, copied into
benchmarks/results/, are shown next to the CPU's, and re-running one section keeps the
others' tables. A GPU section runs when JAX sees a GPU.
"""

import argparse
import datetime
import os
import pathlib
import signal
import subprocess
import sys
from typing import List, NamedTuple, Optional, Tuple

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / 'benchmarks' / 'results'
BEGIN, END = '<!-- performance:begin -->', '<!-- performance:end -->'

class Section(NamedTuple):
  script: str
  cpu_args: List[str]
  gpu_args: Optional[List[str]]  # None: not run on a GPU.
  output: Optional[Tuple[str, str]]  # (flag, name under --out; {where} = cpu | gpu).
  title: str


SECTIONS = {
    'peer': Section(
        'peer.py', ['--configs', 'language_small', 'image_small', 'language_full',
                    '--repeats', '3'],
        ['--configs', 'language_small', 'image_small', 'language_full', '--repeats',
         '20', '--rounds', '1'], ('--json', 'peer_{where}.json'),
        'Against the PyTorch peer (HF transformers Perceiver), and MFU'),
    'scaling': Section(
        'scaling.py', ['--memory_gib', '12'],
        ['--memory_gib', '0', '--sizes', '1024', '4096', '16384', '65536', '131072',
         '--batch', '4', '--channels', '256', '--child_timeout', '60'],
        ('--out', 'scaling_{where}'),
        'Scaling with input size: Perceiver IO vs Transformer'),
    'attention': Section(
        'attention_kernels.py', ['--repeats', '5'], ['--repeats', '20'],
        ('--json', 'attention_{where}.json'),
        'Attention kernel: jax.nn.dot_product_attention vs XLA matmuls'),
    'memory': Section('memory.py', [], None, None,  # Writes results/memory.json.
                      'Memory at scale: chunked decoding and remat'),
    'cpu_gemm': Section('cpu_gemm.py', ['--repeats', '30'], None, None,
                        "XLA:CPU's backward products vs the OpenBLAS kernel "
                        '(kernels/cpu_gemm.py)'),
}


def platform() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return 'gpu' if jax.default_backend() == 'gpu' else 'cpu'


def trailing_table(stdout: str) -> str:
  """The last markdown table printed (and a 'device:' line if the script printed one).

  The table starts at the header above the last '|---' line, so rows a script printed
  while it ran are not taken twice.
  """
  lines = stdout.rstrip().splitlines()
  rules = [i for i, l in enumerate(lines) if l.startswith('|---')]
  if not rules:
    return '(no table printed)'
  start = max(rules[-1] - 1, 0)
  end = rules[-1] + 1
  while end < len(lines) and lines[end].startswith('|'):
    end += 1
  devices = [l for l in lines if l.startswith('device:')]
  return '\n'.join(devices[-1:] + [''] * bool(devices) + lines[start:end])


def run_section(name: str, where: str, out: pathlib.Path,
                timeout: Optional[float] = None) -> str:
  section = SECTIONS[name]
  args = section.gpu_args if where == 'gpu' else section.cpu_args
  command = [sys.executable, str(REPO / 'benchmarks' / section.script)] + args
  if section.output:
    flag, target = section.output
    command += [flag, str(out / target.format(where=where))]
  shown = ' '.join(['.venv/bin/python', f'benchmarks/{section.script}'] + args)
  print(f'== {name}: {shown}', flush=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO), os.environ.get('PYTHONPATH', '')]))
  # A process group of its own, so that a timeout also stops the section's children
  # (which would otherwise hold its output pipe open).
  with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, env=env, start_new_session=True) as process:
    try:
      stdout, stderr = process.communicate(timeout=timeout)
      stopped = False
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)
      stdout, stderr = process.communicate()
      stopped = True
  sys.stdout.write(stdout[-4000:])
  if stopped:
    body = (f'stopped after {timeout:.0f} s (--timeout); printed so far:\n\n```\n'
            f'{stdout.strip()[-3000:]}\n```')
  elif process.returncode != 0:
    body = f'failed (exit {process.returncode}): `{stderr.strip()[-300:]}`'
  else:
    body = trailing_table(stdout)
  stamp = f'{datetime.date.today()}, {os.cpu_count()} host cores'
  return f'#### {section.title} ({where}, {stamp})\n\n`{shown}`\n\n{body}\n'


def fragment(where: str, name: str) -> pathlib.Path:
  """benchmarks/results/performance_<platform>_<n>_<section>.md (n: the section's place)."""
  return RESULTS / f'performance_{where}_{list(SECTIONS).index(name)}_{name}.md'


def compose() -> None:
  """Rebuilds BENCHMARKS.md's performance section from the section files present."""
  parts = []
  for where in ('cpu', 'gpu'):
    files = sorted(RESULTS.glob(f'performance_{where}_*.md'))
    if files:
      parts.append(f'### {where.upper()}\n')
      parts += [f.read_text() for f in files]
  section = '\n'.join([BEGIN, '## Performance (generated by benchmarks/performance.py)',
                       ''] + parts + [END])
  path = REPO / 'BENCHMARKS.md'
  text = path.read_text()
  if BEGIN in text and END in text:
    text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
  else:
    text = text.rstrip() + '\n\n' + section + '\n'
  path.write_text(text)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sections', nargs='+', default=list(SECTIONS),
                      choices=list(SECTIONS))
  parser.add_argument('--out', default=str(RESULTS),
                      help='where the JSON files and the platform tables go')
  parser.add_argument('--compose_only', action='store_true')
  parser.add_argument('--timeout', type=float, default=None,
                      help='seconds per section (e.g. inside a GPU lease): a section '
                      'stopped keeps what it printed')
  args = parser.parse_args()
  if not args.compose_only:
    where = platform()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
      if where == 'gpu' and SECTIONS[name].gpu_args is None:
        continue
      # One file per section, written as soon as it is measured: a run cut short keeps
      # what it measured, and re-running one section leaves the others' tables alone.
      (out / fragment(where, name).name).write_text(run_section(name, where, out,
                                                              args.timeout))
  if pathlib.Path(args.out).resolve() == RESULTS.resolve():
    compose()


if __name__ == '__main__':
  main()
