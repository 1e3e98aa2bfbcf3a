"""The restricted pytorch_model.bin reader: tensors in, nothing else runs."""

import io
import os
import pathlib
import pickle
import zipfile

import numpy as np
import pytest

from perceiver_agents.convert import safe_torch

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'transformers'


def _torch_zip(path, payload: bytes, storages=None):
  """A file laid out like torch.save's: <prefix>/data.pkl + <prefix>/data/<key>."""
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', payload)
    z.writestr('archive/version', '3\n')
    for key, data in (storages or {}).items():
      z.writestr(f'archive/data/{key}', data)


def _pickle_calling(module: str, name: str, *args) -> bytes:
  """Protocol-2 bytes of `module.name(*args)`, written opcode by opcode."""
  body = io.BytesIO()
  body.write(b'\x80\x02')  # PROTO 2
  body.write(f'c{module}\n{name}\n'.encode())  # GLOBAL
  body.write(pickle.dumps(tuple(args), protocol=2)[2:-1])  # the args tuple
  body.write(b'R.')  # REDUCE, STOP
  return body.getvalue()


def test_reads_what_torch_wrote():
  state = safe_torch.load_pytorch_bin(
      FIXTURES / 'PerceiverForImageClassificationConvProcessing' / 'pytorch_model.bin')
  conv = state['perceiver.input_preprocessor.convnet.conv.weight']
  assert conv.shape == (64, 3, 7, 7) and conv.dtype == np.float16
  assert state['perceiver.input_preprocessor.convnet.batchnorm.num_batches_tracked'
               ].dtype == np.int64


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
  marker = tmp_path / 'pwned'
  path = tmp_path / 'pytorch_model.bin'
  _torch_zip(path, _pickle_calling('os', 'system', f'touch {marker}'))
  with pytest.raises(ValueError, match=r'asks for os\.system.*Nothing from the file'):
    safe_torch.load_pytorch_bin(path)
  assert not marker.exists()
  # The same payload through an unrestricted unpickler does run: the test is real.
  with zipfile.ZipFile(path) as z:
    pickle.loads(z.read('archive/data.pkl'))
  assert marker.exists()


@pytest.mark.parametrize('module,name', [
    ('builtins', 'eval'), ('torch', 'load'), ('torch._utils', '_rebuild_qtensor'),
    ('numpy', 'load'), ('torch.serialization', '_get_layout')])
def test_other_globals_are_refused(tmp_path, module, name):
  path = tmp_path / 'pytorch_model.bin'
  _torch_zip(path, _pickle_calling(module, name, 'x'))
  with pytest.raises(ValueError, match=f'asks for {module}.{name}'):
    safe_torch.load_pytorch_bin(path)


def test_a_tensor_past_its_storage_is_refused(tmp_path):
  # {'w': _rebuild_tensor_v2(storage of 4 floats, offset 2, size (4,), stride (1,))}
  storage = np.arange(4, dtype='<f4').tobytes()
  body = (b'\x80\x02}X\x01\x00\x00\x00w'
          b'ctorch._utils\n_rebuild_tensor_v2\n'
          b'((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000'
          b'X\x03\x00\x00\x00cpuK\x04tQK\x02K\x04\x85K\x01\x85\x89'
          b'ccollections\nOrderedDict\n)RtRs.')
  path = tmp_path / 'pytorch_model.bin'
  _torch_zip(path, body, {'0': storage})
  with pytest.raises(ValueError, match='reaches past its storage'):
    safe_torch.load_pytorch_bin(path)
  ok = body.replace(b'K\x02K\x04\x85', b'K\x01K\x03\x85')  # offset 1, size 3: fits
  _torch_zip(path, ok, {'0': storage})
  np.testing.assert_array_equal(safe_torch.load_pytorch_bin(path)['w'], [1, 2, 3])


def test_truncated_and_legacy_files_name_the_file(tmp_path):
  source = FIXTURES / 'PerceiverForMaskedLM' / 'pytorch_model.bin'
  data = source.read_bytes()
  path = tmp_path / 'pytorch_model.bin'
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match=str(path)):
    safe_torch.load_pytorch_bin(path)
  path.write_bytes(pickle.dumps({'w': 1}))  # torch's pre-1.6 format is a bare pickle
  with pytest.raises(ValueError, match='not a zip-format PyTorch file'):
    safe_torch.load_pytorch_bin(path)
  assert os.path.getsize(source) == len(data)
