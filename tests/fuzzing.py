"""The runner the fuzz tests share: hypothesis settings and the count of cases tried.

    @fuzzing.settings(max_examples=40)
    @hypothesis.given(...)
    def _case(cases, ...):
      cases.count += 1
      ...                     # cases.built += 1 when the case is accepted
    def test_fuzz_x(record_property):
      with fuzzing.Cases(record_property, 'X', at_least=40) as cases:
        _case(cases)

Imported as tests/helpers.py is (tests/ on sys.path). The counts appear in the terminal
summary (tests/conftest.py).
"""

import hypothesis


def settings(*, max_examples: int) -> hypothesis.settings:
  """Reproducible runs: derandomized, no example database, no deadline."""
  return hypothesis.settings(max_examples=max_examples, deadline=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             database=None)


class Cases:
  """Counts the cases a test tried and how many were accepted (`built`); on exit records
  the count in the test's user properties and checks that both outcomes occurred and at
  least `at_least` cases ran."""

  def __init__(self, record_property, name: str, *, at_least: int = 1):
    self.count = 0
    self.built = 0
    self._record = record_property
    self._name = name
    self._at_least = at_least

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *exc):
    self._record('fuzz_cases', f'{self._name}={self.count}')
    if exc_type is not None:
      return
    assert self.count >= self._at_least, (self._name, self.count)
    # Both outcomes must be exercised, or the fuzzer tests nothing.
    assert 0 < self.built < self.count, (self._name, self.built, self.count)
