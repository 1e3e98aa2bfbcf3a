"""Suite-wide hooks: the fuzz tests' case counts in the terminal summary."""


def pytest_terminal_summary(terminalreporter):
  """Lists 'fuzz_cases' user properties (set by the fuzz tests; they travel from
  pytest-xdist workers with the reports)."""
  counts = []
  for reports in terminalreporter.stats.values():
    for report in reports:
      if getattr(report, 'when', None) != 'call':
        continue
      counts += [v for k, v in getattr(report, 'user_properties', ()) if k == 'fuzz_cases']
  if counts:
    total = sum(int(c.rsplit('=', 1)[1]) for c in counts)
    terminalreporter.write_line(f'fuzz: {total} cases tried ({", ".join(sorted(counts))})')


def pytest_configure(config):
  """The toy task (a tiny classifier for learner and CLI tests) is not a user task."""
  del config
  from perceiver_agents import tasks  # pylint: disable=g-import-not-at-top
  tasks.register('toy', 'perceiver_agents.tasks.toy')
