"""The README's promises: its example runs, and CI calls exactly its test command."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def test_readme_blocks_example_runs(capsys):
  snippets = re.findall(r'```python\n(.*?)```', README, flags=re.S)
  example = next(s for s in snippets if 'blocks.Perceiver(' in s)
  assert len(example.strip().splitlines()) <= 20
  exec(compile(example, 'README.md', 'exec'), {})  # pylint: disable=exec-used
  assert capsys.readouterr().out.strip() == '(2, 10)'


def test_ci_runs_the_readme_test_command():
  commands = re.findall(r'^make (\w+)', README, flags=re.M)
  assert commands[:2] == ['demo', 'test']
  ci = (ROOT / '.ci' / 'run').read_text()
  lines = [l for l in ci.splitlines() if l.strip() and not l.startswith('#')
           and not l.startswith('set ') and not l.startswith('cd ')]
  assert lines == ['make test']
