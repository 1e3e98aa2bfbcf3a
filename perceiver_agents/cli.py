"""`perceiver-agents`: train and evaluate registered tasks.

    perceiver-agents train TASK --workdir DIR [--config.a.b=VALUE ...] [--distributed]
    perceiver-agents eval TASK --workdir DIR [--config.a.b=VALUE ...] [--distributed]
    perceiver-agents list
    perceiver-agents predict|generate TASK ARGS...   (tasks that define them)
    perceiver-agents convert --from-transformers DIR --out W.npz | --to-transformers DIR ...

`train` resumes from the newest intact checkpoint in DIR if there is one. Every command
on a workdir applies the run's recorded overrides (DIR/run.json) first and the new ones on
top; a resumed `train` refuses a changed `model.*` field. `train` records the run only once
its config is valid and its state is built or restored. `--distributed` calls
jax.distributed.initialize() first (one process per host).
"""

import argparse
import json
import os
import sys
from typing import List, Optional, Sequence

from perceiver_agents import startup
from perceiver_agents.kernels import host_memory
from perceiver_agents import tasks

def _split_overrides(extra: Sequence[str], parser: argparse.ArgumentParser) -> List[str]:
  """'--config.a.b=v' and '--config.a.b v' -> ['a.b=v', ...]; anything else is an error."""
  try:
    parsed = parse_task_command(extra)
  except ValueError as e:
    parser.error(f'{e} Use --config.FIELD=VALUE.')
  if parsed.checkpoint or parsed.args:
    stray = parsed.args[0] if parsed.args else '--checkpoint'
    parser.error(f'unrecognized argument: {stray}')
  return list(parsed.overrides)


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
# function of that name, `COMMAND(command: tasks.base.CommandArgs) -> int`. The CLI parses
# --checkpoint and --config.* for every task; the task parses only its own arguments
# (e.g. `predict mlm --checkpoint PATH --text ...`, `generate byte_lm --prompt ...`).
TASK_COMMANDS = ('predict', 'generate')


def parse_task_command(argv: Sequence[str]):
  """`--checkpoint PATH`, `--config.F=V` / `--config.F V`, and the rest, in order.

  Returns tasks.base.CommandArgs; ValueError for a flag without its value.
  """
  from perceiver_agents.tasks.base import CommandArgs  # pylint: disable=g-import-not-at-top
  checkpoint, overrides, rest, i = '', [], [], 0
  argv = list(argv)
  while i < len(argv):
    arg = argv[i]
    name, has_value, value = arg.partition('=')
    if name in ('--checkpoint', '--workdir') or arg.startswith('--config.'):
      if not has_value:
        if i + 1 >= len(argv):
          raise ValueError(f'{arg}: expected a value.')
        value, i = argv[i + 1], i + 1
      if arg.startswith('--config.'):
        overrides.append(f'{name[len("--config."):]}={value}')
      else:
        checkpoint = value
    else:
      rest.append(arg)
    i += 1
  return CommandArgs(checkpoint=checkpoint, overrides=overrides, args=rest)


def _task_command(command: str, argv: Sequence[str]) -> int:
  if not argv or argv[0].startswith('-'):
    print(f'perceiver-agents: error: usage: perceiver-agents {command} TASK ...',
          file=sys.stderr)
    return 2
  startup.quiet_libraries()
  try:
    module = tasks.get(argv[0])
    if not hasattr(module, command):
      with_it = [n for n in tasks.names() if hasattr(tasks.get(n), command)]
      raise ValueError(f'task: {argv[0]!r} has no {command!r} command; tasks with '
                       f'one: {with_it}.')
    return getattr(module, command)(parse_task_command(argv[1:]))
  except ValueError as e:
    print(f'perceiver-agents: error: {e}', file=sys.stderr)
    return 2
  except SystemExit as e:  # The task's own argument parser (--help: 0, misuse: 2).
    return e.code if isinstance(e.code, int) else 2


def main(argv: Optional[Sequence[str]] = None) -> int:
  # Before JAX starts: XLA:CPU's step buffers are then reused, not faulted in anew.
  host_memory.keep_freed_memory()
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] in TASK_COMMANDS:
    return _task_command(argv[0], argv[1:])
  if argv and argv[0] == 'convert':  # transformers' checkpoints (convert/cli.py)
    from perceiver_agents.convert import cli as convert_cli  # pylint: disable=g-import-not-at-top
    return convert_cli.main(argv[1:])
  parser = _parser()
  args, extra = parser.parse_known_args(argv)
  if args.command == 'list':
    if extra:
      parser.error(f'unrecognized arguments: {" ".join(extra)}')
    return _list()
  new = _split_overrides(extra, parser)
  startup.quiet_libraries()
  try:
    from perceiver_agents.tasks import base  # pylint: disable=g-import-not-at-top
    from perceiver_agents.tasks import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    module = tasks.get(args.task)
    resuming = args.command == 'train' and workdir_lib.is_workdir(args.workdir)
    overrides = workdir_lib.run_overrides(args.workdir, new, task=args.task,
                                          resuming=resuming)
    config = base.make_config(module, overrides)
  except ValueError as e:
    print(f'perceiver-agents: error: {e}', file=sys.stderr)
    return 2

  import jax  # pylint: disable=g-import-not-at-top
  from perceiver_agents import learner  # pylint: disable=g-import-not-at-top
  if args.distributed:
    jax.distributed.initialize()

  def record(_):
    if jax.process_index() == 0:
      workdir_lib.record_run(args.workdir, task=args.task, command='train', new=new,
                             overrides=overrides)

  try:
    task = module.build(config)
    if args.command == 'train':
      if hasattr(task, 'train'):  # A task with its own loop (tasks/smax.py: Anakin).
        summary = task.train(args.workdir, on_ready=record)
        print(json.dumps(summary))
        return 128 + summary['interrupted_by'] if 'interrupted_by' in summary else 0
      result = learner.train(task, config, args.workdir, on_ready=record)
      if result.interrupted_by is not None:
        return 128 + result.interrupted_by
      print(json.dumps({'step': result.step, 'eval': result.eval_metrics}))
    else:
      if hasattr(task, 'evaluate'):
        print(json.dumps({'eval': task.evaluate(args.workdir)}))
        return 0
      step, metrics = learner.evaluate(task, config, args.workdir)
      print(f'perceiver-agents: evaluated checkpoint {step} of {args.workdir}',
            file=sys.stderr)
      print(json.dumps({'step': step, 'eval': metrics}))
  except learner.CheckpointMismatchError as e:
    print(f'perceiver-agents: error: {workdir_lib.explain_mismatch(e, args.workdir, new)}',
          file=sys.stderr)
    return 2
  except ValueError as e:
    print(f'perceiver-agents: error: {e}', file=sys.stderr)
    return 2
  except learner.NonFiniteLossError as e:
    print(f'perceiver-agents: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
