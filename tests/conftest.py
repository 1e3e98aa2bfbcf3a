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
