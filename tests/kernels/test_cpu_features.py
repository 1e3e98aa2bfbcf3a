"""kernels.cpu_features: bfloat16 units read from /proc/cpuinfo, and the warning without them."""
import logging

from perceiver_agents.kernels import cpu_features


def test_flags_and_units(tmp_path):
  info = tmp_path / 'cpuinfo'
  info.write_text('processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx2\n'
                  'processor\t: 1\nflags\t\t: fpu\n')
  flags = cpu_features.cpu_flags(str(info))
  assert 'avx512_bf16' in flags and 'avx2' in flags
  assert cpu_features.bf16_units(flags) == {'avx512_bf16'}
  assert cpu_features.bf16_units(frozenset({'amx_bf16', 'avx2'})) == {'amx_bf16'}
  assert cpu_features.bf16_units(frozenset({'avx2'})) == frozenset()
  assert cpu_features.cpu_flags(str(tmp_path / 'missing')) == frozenset()


def test_warning_only_on_a_cpu_without_units(monkeypatch, caplog):
  monkeypatch.setattr(cpu_features, 'bf16_units', lambda: frozenset())
  with caplog.at_level(logging.WARNING):
    assert cpu_features.warn_if_bf16_is_slow('cpu')
  assert 'avx512_bf16' in caplog.text
  assert not cpu_features.warn_if_bf16_is_slow('gpu')
  monkeypatch.setattr(cpu_features, 'bf16_units', lambda: frozenset({'amx_bf16'}))
  assert not cpu_features.warn_if_bf16_is_slow('cpu')
