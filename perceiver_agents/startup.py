"""Start-up chatter of the libraries the tasks import, kept off the user's terminal.

`quiet_libraries()` (called by the CLI before any task is imported) hides
  * TensorFlow's C++ banners printed while it loads (the oneDNN notice, the CPU-feature
    notice), which reach stderr before any log level applies: the first
    `import tensorflow` (by TFDS, or by rlax through tensorflow-probability) runs with
    file descriptor 2 captured, and every other line captured is passed on;
  * absl INFO logs (warnings and errors still show);
and shows the project's own INFO logs (e.g. where the Ray actors run) on stderr.
"""

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile

_BANNERS = ('oneDNN custom operations are on', 'All log messages before absl::InitializeLog',
            'cpu_feature_guard', 'To enable the following instructions',
            'rebuild TensorFlow with the appropriate compiler flags')


@contextlib.contextmanager
def _filtered_stderr():
  """Captures fd 2 (C++ writes too); on exit writes back the lines that are not banners."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode(errors='replace').splitlines(keepends=True):
        if not any(banner in line for banner in _BANNERS):
          sys.stderr.write(line)
      sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
  """Loads the top-level `tensorflow` package under `_filtered_stderr`, once."""

  def find_spec(self, name, path=None, target=None):
    if name != 'tensorflow':
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
      return spec
    exec_module = spec.loader.exec_module

    def quiet_exec_module(module):
      with _filtered_stderr():
        exec_module(module)

    spec.loader.exec_module = quiet_exec_module
    return spec


class _ProjectLogHandler(logging.StreamHandler):
  """The project's INFO lines on stderr ('perceiver_agents...: message')."""

  def __init__(self):
    super().__init__(sys.stderr)
    self.setFormatter(logging.Formatter('%(name)s: %(message)s'))


def quiet_libraries() -> None:
  """See the module docstring. Idempotent; a no-op for what is already imported."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  if 'tensorflow' not in sys.modules and not any(
      isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger('absl').setLevel(logging.WARNING)
  project = logging.getLogger('perceiver_agents')
  if not any(isinstance(h, _ProjectLogHandler) for h in project.handlers):
    project.addHandler(_ProjectLogHandler())
    project.setLevel(logging.INFO)
