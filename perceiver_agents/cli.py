"""`perceiver-agents`: train and evaluate registered tasks.

    perceiver-agents train TASK --workdir DIR [--config.a.b=VALUE ...] [--distributed]
    perceiver-agents eval TASK --workdir DIR [--config.a.b=VALUE ...] [--distributed]
    perceiver-agents list
    perceiver-agents predict|generate TASK ARGS...   (tasks that define them)

`train` resumes from the latest checkpoint in DIR if there is one. `eval` reuses the
overrides the run was trained with (recorded in DIR/run.json) unless given new ones.
`--distributed` calls jax.distributed.initialize() first (one process per host).
"""

import argparse
import json
import os
import sys
from typing import List, Optional, Sequence

from perceiver_agents import host_memory
from perceiver_agents import tasks

RUN_FILE = 'run.json'


def _split_overrides(extra: Sequence[str], parser: argparse.ArgumentParser) -> List[str]:
  """'--config.a.b=v' and '--config.a.b v' -> ['a.b=v', ...]; anything else is an error."""
  overrides, i = [], 0
  while i < len(extra):
    arg = extra[i]
    if not arg.startswith('--config.'):
      parser.error(f'unrecognized argument: {arg}')
    item = arg[len('--config.'):]
    if '=' not in item:
      if i + 1 >= len(extra):
        parser.error(f'{arg}: expected --config.FIELD=VALUE')
      item, i = f'{item}={extra[i + 1]}', i + 1
    overrides.append(item)
    i += 1
  return overrides


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='perceiver-agents', description='Train and evaluate Perceiver tasks.',
      epilog='Override any config field with --config.path.to.field=VALUE.')
  commands = parser.add_subparsers(dest='command', required=True)
  for name, text in (('train', 'train TASK (resumes from the workdir)'),
                     ('eval', "evaluate the workdir's latest checkpoint")):
    sub = commands.add_parser(name, help=text)
    sub.add_argument('task', help=f'one of {tasks.names()}')
    sub.add_argument('--workdir', required=True, help='checkpoints, metrics and logs')
    sub.add_argument('--distributed', action='store_true',
                     help='call jax.distributed.initialize() (multi-host runs)')
  commands.add_parser('list', help='list tasks and their configs')
  return parser


def _config(task_name: str, overrides: List[str]):
  from perceiver_agents.learner import apply_overrides  # pylint: disable=g-import-not-at-top
  module = tasks.get(task_name)
  return module, apply_overrides(module.get_config(), overrides)


def _list() -> int:
  for name in tasks.names():
    try:
      module = tasks.get(name)
      config = module.get_config()
    except Exception as e:  # pylint: disable=broad-except
      print(f'{name}: unavailable ({type(e).__name__}: {e})\n')
      continue
    summary = (module.__doc__ or '').strip().splitlines()[0:1]
    print(f'{name}: {summary[0] if summary else ""}')
    for line in str(config).rstrip().splitlines():
      print('    ' + line)
    print()
  return 0


# Task-specific commands: `perceiver-agents COMMAND TASK ARGS...` runs the task module's
# function of that name, `COMMAND(args: list[str]) -> int`, which parses ARGS itself
# (e.g. `predict mlm --checkpoint PATH --text ...`, `generate byte_lm --prompt ...`).
TASK_COMMANDS = ('predict', 'generate')


def _task_command(command: str, argv: Sequence[str]) -> int:
  if not argv or argv[0].startswith('-'):
    print(f'perceiver-agents: error: usage: perceiver-agents {command} TASK ...',
          file=sys.stderr)
    return 2
  try:
    module = tasks.get(argv[0])
    if not hasattr(module, command):
      with_it = [n for n in tasks.names() if hasattr(tasks.get(n), command)]
      raise ValueError(f'task: {argv[0]!r} has no {command!r} command; tasks with '
                       f'one: {with_it}.')
    return getattr(module, command)(list(argv[1:]))
  except ValueError as e:
    print(f'perceiver-agents: error: {e}', file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
  # Before JAX starts: XLA:CPU's step buffers are then reused, not faulted in anew.
  host_memory.keep_freed_memory()
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] in TASK_COMMANDS:
    return _task_command(argv[0], argv[1:])
  parser = _parser()
  args, extra = parser.parse_known_args(argv)
  if args.command == 'list':
    if extra:
      parser.error(f'unrecognized arguments: {" ".join(extra)}')
    return _list()
  overrides = _split_overrides(extra, parser)
  run_file = os.path.join(args.workdir, RUN_FILE)
  try:
    if args.command == 'eval' and os.path.exists(run_file):
      with open(run_file) as f:
        run = json.load(f)
      if run['task'] != args.task:
        raise ValueError(f'task: {args.workdir} holds a run of {run["task"]!r}, '
                         f'not {args.task!r}.')
      overrides = overrides or run['overrides']
    module, config = _config(args.task, overrides)
  except ValueError as e:
    print(f'perceiver-agents: error: {e}', file=sys.stderr)
    return 2

  import jax  # pylint: disable=g-import-not-at-top
  from perceiver_agents import learner  # pylint: disable=g-import-not-at-top
  if args.distributed:
    jax.distributed.initialize()
  try:
    task = module.build(config)
    if args.command == 'train':
      if jax.process_index() == 0:
        os.makedirs(args.workdir, exist_ok=True)
        with open(run_file, 'w') as f:
          json.dump({'task': args.task, 'overrides': overrides}, f, indent=2)
      if hasattr(task, 'train'):  # A task with its own loop (tasks/smax.py: Anakin).
        print(json.dumps(task.train(args.workdir)))
        return 0
      result = learner.train(task, config, args.workdir)
      if result.interrupted_by is not None:
        return 128 + result.interrupted_by
      print(json.dumps({'step': result.step, 'eval': result.eval_metrics}))
    else:
      if hasattr(task, 'evaluate'):
        print(json.dumps({'eval': task.evaluate(args.workdir)}))
        return 0
      step, metrics = learner.evaluate(task, config, args.workdir)
      print(json.dumps({'step': step, 'eval': metrics}))
  except ValueError as e:
    print(f'perceiver-agents: error: {e}', file=sys.stderr)
    return 2
  except learner.NonFiniteLossError as e:
    print(f'perceiver-agents: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
