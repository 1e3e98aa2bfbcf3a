"""The CLI keeps TensorFlow's import banners off the terminal, and nothing else; the
project's own INFO lines show."""

import subprocess
import sys


def test_tensorflow_banners_are_dropped_and_other_output_kept():
  code = ('from perceiver_agents import startup\n'
          'startup.quiet_libraries()\n'
          'import tensorflow\n'
          'import os\n'
          'os.write(2, b"after import\\n")\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120, check=True)
  assert 'oneDNN' not in result.stderr and 'cpu_feature_guard' not in result.stderr
  assert 'after import' in result.stderr


def test_import_errors_still_surface(tmp_path):
  (tmp_path / 'tensorflow').mkdir()
  (tmp_path / 'tensorflow' / '__init__.py').write_text(
      'import os\nos.write(2, b"real problem\\n")\nraise ImportError("broken tf")\n')
  code = ('import sys; sys.path.insert(0, sys.argv[1])\n'
          'from perceiver_agents import startup\n'
          'startup.quiet_libraries()\n'
          'import tensorflow\n')
  result = subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
  assert result.returncode != 0
  assert 'broken tf' in result.stderr and 'real problem' in result.stderr


def test_project_info_lines_show_once_however_often_it_is_called():
  code = ('import logging\n'
          'from perceiver_agents import startup\n'
          'startup.quiet_libraries()\n'
          'startup.quiet_libraries()\n'
          'logging.getLogger("perceiver_agents.agents").info("placed")\n'
          'logging.getLogger("other").info("hidden")\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=60, check=True)
  assert result.stderr.count('perceiver_agents.agents: placed') == 1
  assert 'hidden' not in result.stderr
