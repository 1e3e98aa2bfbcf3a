"""Fuzzing the CLI's config layer: random --config.* arguments for every task.

A case runs `perceiver-agents train TASK --workdir DIR ARGS...` up to the point where the
task would be built: it either accepts the config or exits with status 2 and one error
line that names the field; nothing is written to the workdir either way. The number of
cases tried is reported in the terminal summary.
"""

import pathlib
import sys

import hypothesis
from hypothesis import strategies as st
import pytest

from perceiver_agents import cli
from perceiver_agents import learner
from perceiver_agents import tasks

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import fuzzing  # noqa: E402  (tests/fuzzing.py)


class Accepted(Exception):
  """Raised in place of building the task: the config layer accepted the arguments."""


def leaf_paths():
  paths = {}
  for name in tasks.names():
    try:
      config = tasks.get(name).get_config()
    except ImportError:  # An optional extra that is not installed.
      continue
    paths[name] = learner.config._leaf_paths(config)  # pylint: disable=protected-access
  return paths


PATHS = leaf_paths()
VALUES = st.one_of(
    st.integers(-3, 10_000).map(str), st.floats(allow_nan=True).map(str),
    st.sampled_from(['true', 'false', 'yes', '0', '', 'None', '[1, 2]', '(3,)', "'x'",
                     '1e-3', 'nan', 'inf', '-', '=', '[', 'published', 'small']),
    st.text(max_size=12))


@st.composite
def arguments(draw):
  task = draw(st.sampled_from(sorted(PATHS)))
  known = PATHS[task]
  args = []
  for _ in range(draw(st.integers(1, 3))):
    path = draw(st.one_of(st.sampled_from(known), st.sampled_from(known),
                          st.sampled_from(known).map(lambda p: p + 'x'),
                          st.sampled_from(known).map(lambda p: p.rpartition('.')[0]),
                          st.text(alphabet='abc._', min_size=1, max_size=8)))
    value = draw(VALUES)
    form = draw(st.sampled_from(['eq', 'space', 'bare']))
    if form == 'eq':
      args.append(f'--config.{path}={value}')
    elif form == 'space':
      args += [f'--config.{path}', value]
    else:
      args.append(f'--config.{path}')
  return task, args


@fuzzing.settings(max_examples=150)
@hypothesis.given(case=arguments())
def _fuzz(cases, workdir, capsys, monkeypatch, case):
  task, args = case
  cases.count += 1
  module = tasks.get(task)

  def build(config):
    del config
    raise Accepted

  monkeypatch.setattr(module, 'build', build)
  capsys.readouterr()
  try:
    code = cli.main(['train', task, '--workdir', str(workdir)] + args)
  except Accepted:
    cases.built += 1
    return
  except SystemExit as e:  # argparse: a malformed command line.
    code = e.code
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert code == 2, (args, code, err)
  errors = [l for l in err if 'error:' in l]
  assert len(errors) == 1, (args, err)
  assert '--config.' in errors[0] or 'argument' in errors[0], (args, errors)
  assert not workdir.exists(), args


def test_fuzz_config_overrides(tmp_path, capsys, monkeypatch, record_property):
  with fuzzing.Cases(record_property, 'CLI config overrides', at_least=150) as cases:
    with monkeypatch.context() as patch:
      _fuzz(cases, tmp_path / 'run', capsys, patch)  # pylint: disable=no-value-for-parameter


if __name__ == '__main__':
  pytest.main([__file__, '-q'])
