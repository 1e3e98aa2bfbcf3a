"""kinetics_autoencoding: the zoo's model, subsampled training, chunked eval, CLI, predict."""

import functools
import json
import os
import pathlib

import jax
import numpy as np
import pytest

from perceiver_agents import cli, zoo
from perceiver_agents.data import synthetic_media
from perceiver_agents.tasks import base
from perceiver_agents.tasks import kinetics_autoencoding as kae

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'conformance'
TINY = ['preset=local', 'train.progress_bar=false', 'train.log_every=1']


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
  root = tmp_path_factory.mktemp('kinetics')
  for split, n, seed in (('train', 3, 0), ('eval', 2, 1)):
    synthetic_media.write_kinetics_like(str(root / split), num_clips=n, classes=('a', 'b'),
                                        seconds=0.24, size=32, seed=seed)
  return root


def _overrides(root, extra=()):
  return [f'data.train_annotations={root}/train/annotations.csv',
          f'data.train_videos={root}/train/videos',
          f'data.eval_annotations={root}/eval/annotations.csv',
          f'data.eval_videos={root}/eval/videos'] + TINY + list(extra)


def test_published_preset_has_the_released_param_tree():
  """The 784-latent preset's params match the released checkpoint's (conformance fixture);
  392 and 196 latents change only the encoder's latent array."""
  config = kae.get_config()
  config.model.size, config.data.sample_rate = 'published', 48000
  kwargs = kae.model_kwargs(config, 700)  # model.num_latents=0: the released 784.
  model = kae.make_model(kwargs, train_image_queries=16, train_audio_queries=16,
                         eval_decode_chunk_size=16384)
  batch = {'image': jax.ShapeDtypeStruct((1, 16, 224, 224, 3), np.float32),
           'audio': jax.ShapeDtypeStruct((1, 30720, 1), np.float32)}
  params, _ = jax.eval_shape(lambda b: model.init(jax.random.PRNGKey(0), b), batch)
  flat = {f'{m}/{n}': list(v.shape) for m, p in params.items() for n, v in p.items()}
  released = json.load(open(FIXTURES / 'full_param_trees.json'))['video_autoencoder']
  assert flat == released['params']
  for latents in (392, 196):
    config.model.num_latents = latents
    other = kae.model_kwargs(config, 700)
    assert other['encoder'] == dict(kwargs['encoder'], z_index_dim=latents)
    assert {k: v for k, v in other.items() if k != 'encoder'} == {
        k: v for k, v in kwargs.items() if k != 'encoder'}
  with pytest.raises(ValueError, match='needs data.sample_rate=48000'):
    config.data.sample_rate = 16000
    kae.model_kwargs(config, 700)


def test_training_subsamples_and_eval_reconstructs_whole_clips(clips):
  config = base.make_config(kae, _overrides(clips))
  task = kae.build(config)
  batch = task.train_batch(0)
  assert batch['image'].shape == (2, 4, 16, 16, 3) and batch['audio'].shape == (2, 2560, 1)
  params, state = jax.jit(task.model.init)(jax.random.PRNGKey(0), batch)
  out, _ = jax.jit(functools.partial(task.model.apply, is_training=True))(
      params, state, jax.random.PRNGKey(1), batch)
  assert out['image'].shape == (2, 64, 3) and out['audio'].shape == (2, 8 * 16)
  assert len(np.unique(out['image_index'])) == 64  # Without replacement.
  image, audio = kae.targets(out, batch, 16)
  flat = batch['image'].reshape(2, -1, 3)
  np.testing.assert_array_equal(image, flat[:, out['image_index']])
  patches = batch['audio'].reshape(2, -1, 16)[:, out['audio_index']]
  np.testing.assert_array_equal(audio, patches.reshape(2, -1))
  # Whole clips: decoding 300 queries at a time equals decoding them all at once.
  full, _ = jax.jit(task.model.apply)(params, state, jax.random.PRNGKey(2), batch)
  assert full['image'].shape == (2, 4 * 16 * 16, 3) and full['audio'].shape == (2, 2560)
  kwargs = kae.model_kwargs(config, 2)
  direct, _ = jax.jit(zoo.video_autoencoder(**kwargs).apply)(
      params, state, None, batch['image'], batch['audio'],
      {'image': np.arange(1024), 'audio': np.arange(160)})
  np.testing.assert_allclose(full['image'], direct['image'], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(full['audio'], direct['audio'], rtol=1e-4, atol=1e-4)
  metrics = task.metrics(full, batch)
  assert set(metrics) == {'video_psnr', 'audio_psnr', 'label_top1'}
  assert task.loss(full, batch).shape == (2,)


def test_cli_train_eval_predict(clips, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  args = ['--' + 'config.' + o for o in _overrides(clips, ['train.steps=2'])]
  assert cli.main(['train', 'kinetics_autoencoding', '--workdir', workdir] + args) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result['step'] == 2 and np.isfinite(result['eval']['video_psnr'])
  video = os.path.join(clips, 'eval', 'videos', 'a')
  video = os.path.join(video, sorted(os.listdir(video))[0])
  out = str(tmp_path / 'pred')
  assert cli.main(['predict', 'kinetics_autoencoding', '--checkpoint', workdir, video,
                   '--out', out]) == 0
  assert sorted(os.listdir(out)) == ['frames', 'original.wav', 'prediction.json',
                                     'reconstruction.mp4', 'reconstruction.wav']
  assert len(os.listdir(os.path.join(out, 'frames'))) == 4
  report = json.load(open(os.path.join(out, 'prediction.json')))
  assert report['top5'][0]['name'] in ('a', 'b')
  # A clip shorter than the model's window is refused by default.
  capsys.readouterr()
  assert cli.main(['predict', 'kinetics_autoencoding', '--checkpoint', workdir, video,
                   '--out', out, '--start', '0.2']) == 2
  assert 'shorter than the model window of 4' in capsys.readouterr().err


def test_missing_data_paths_name_the_field():
  with pytest.raises(ValueError, match='data.train_annotations is not set'):
    kae.build(kae.get_config())
