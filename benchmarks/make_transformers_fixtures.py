"""Builds transformers' six Perceiver classes with random weights, saves and runs them.

    # The test fixtures (tiny configs; needs the bench extra: torch + transformers):
    .venv/bin/python benchmarks/make_transformers_fixtures.py --out tests/fixtures/transformers
    # The published sizes: parameter counts against the zoo's, every tensor mapped,
    # nothing kept (BENCHMARKS.md records the result):
    .venv/bin/python benchmarks/make_transformers_fixtures.py --published

For each class, `--out` writes <out>/<class>/: config.json, model.safetensors (and, for
the classes whose weights are small, pytorch_model.bin written by torch.save like
save_pretrained(safe_serialization=False) did), and io.npz with the inputs in this
library's layout (`inputs/...`: token ids and mask, channels-last images, raw frame
pairs, audio, subsampled output points) and transformers' outputs (`outputs/...`).
Weights are perturbed away from transformers' initialisation (so no output is trivially
zero) and stored as float16 to keep the fixtures small; the models run in float32.

transformers takes channels-first images ([B, 3, H, W], [B, T, 3, H, W]) and, for optical
flow, each frame's 3x3 patches [B, 2, 27, H, W] (row, column, channel order, zero
padded), which this script computes from the raw frames.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Tiny configurations: all six classes in well under 3 MB (the flow and multimodal
# decoders are wide whatever the config: transformers fixes their 64 / 192 Fourier bands).
_TINY = dict(num_latents=6, d_latents=16, num_blocks=2, num_self_attends_per_block=2,
             num_self_attention_heads=2, num_cross_attention_heads=2, qk_channels=8,
             v_channels=16, attention_probs_dropout_prob=0.0)
TINY = {
    'PerceiverForMaskedLM': dict(_TINY, d_model=16, max_position_embeddings=10,
                                 num_blocks=1, hidden_act='gelu'),
    'PerceiverForImageClassificationLearned': dict(_TINY, image_size=5, num_labels=7,
                                                   hidden_act='gelu'),
    'PerceiverForImageClassificationFourier': dict(_TINY, num_labels=7,
                                                   hidden_act='gelu_new'),
    'PerceiverForImageClassificationConvProcessing': dict(_TINY, num_labels=7,
                                                          hidden_act='gelu'),
    'PerceiverForOpticalFlow': dict(_TINY, train_size=[6, 5], hidden_act='gelu'),
    'PerceiverForMultimodalAutoencoding': dict(
        _TINY, num_frames=2, audio_samples_per_frame=8, samples_per_patch=4,
        image_size=2, output_shape=[1, 2, 8, 8], output_num_channels=8,
        _label_trainable_num_channels=12, num_labels=5, hidden_act='gelu'),
}
# Classes whose fixtures also get a pytorch_model.bin (the others are 0.4-0.6 MB each).
WITH_BIN = ('PerceiverForMaskedLM', 'PerceiverForImageClassificationLearned',
            'PerceiverForImageClassificationFourier',
            'PerceiverForImageClassificationConvProcessing')
# The published models (the Hub's deepmind/* configs, as transformers' conversion
# script sets them).
_PUB_IMAGE = dict(num_latents=512, d_latents=1024, num_blocks=8,
                  num_self_attends_per_block=6, num_cross_attention_heads=1,
                  num_self_attention_heads=8, qk_channels=None, v_channels=None,
                  num_labels=1000)
PUBLISHED = {
    'PerceiverForMaskedLM': dict(qk_channels=256, v_channels=1280),
    'PerceiverForImageClassificationLearned': dict(_PUB_IMAGE, d_model=512,
                                                   image_size=224),
    'PerceiverForImageClassificationFourier': dict(_PUB_IMAGE, d_model=261),
    'PerceiverForImageClassificationConvProcessing': dict(_PUB_IMAGE, d_model=322),
    'PerceiverForOpticalFlow': dict(num_latents=2048, d_latents=512, d_model=322,
                                    num_blocks=1, num_self_attends_per_block=24,
                                    num_self_attention_heads=16,
                                    num_cross_attention_heads=1),
    'PerceiverForMultimodalAutoencoding': dict(
        num_latents=784, d_latents=512, d_model=704, num_blocks=1,
        num_self_attends_per_block=8, num_self_attention_heads=8,
        num_cross_attention_heads=1, num_labels=700,
        _label_trainable_num_channels=512),
}


def perturb(model, seed: int) -> None:
  """Every weight and BatchNorm statistic drawn anew, rounded to float16 values."""
  import torch  # pylint: disable=g-import-not-at-top
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for key, tensor in model.state_dict().items():
      if not tensor.is_floating_point():
        if key.endswith('num_batches_tracked'):
          tensor.fill_(7)
        continue
      noise = torch.randn(tensor.shape, generator=gen)
      if key.endswith('running_var'):
        value = 0.5 + noise.abs()
      elif key.endswith('layernorm1.weight') or key.endswith('layernorm2.weight') or (
          key.endswith('layernorm.weight') or key.endswith('batchnorm.weight')):
        value = 1.0 + 0.1 * noise
      elif tensor.ndim >= 2 and 'position' not in key and 'latents' not in key and (
          'embeddings' not in key):
        value = noise / np.sqrt(np.prod(tensor.shape[1:]))
      else:
        value = 0.3 * noise
      tensor.copy_(value.half().float())


def flow_patches(frames: np.ndarray) -> np.ndarray:
  """[B, 2, H, W, 3] -> transformers' flow input [B, 2, 27, H, W] (3x3 patches)."""
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.as_tensor(frames).permute(0, 1, 4, 2, 3)  # [B, 2, 3, H, W]
  b, t, c, h, w = x.shape
  padded = torch.nn.functional.pad(x.reshape(b * t, c, h, w), (1, 1, 1, 1))
  patches = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # [BT, C, H, W, 3, 3]
  patches = patches.permute(0, 4, 5, 1, 2, 3)  # [BT, kh, kw, C, H, W]
  return patches.reshape(b, t, 9 * c, h, w).numpy()


def inputs_for(cls: str, config, rng: np.random.RandomState) -> dict:
  """This library's inputs (numpy) for a model of class `cls`."""
  if cls == 'PerceiverForMaskedLM':
    length = config.max_position_embeddings
    ids = rng.randint(0, config.vocab_size, (2, length)).astype(np.int32)
    mask = np.ones((2, length), bool)
    mask[1, length - 3:] = False  # the second example is padded
    return {'inputs': ids, 'input_mask': mask}
  if cls == 'PerceiverForOpticalFlow':
    return {'images': rng.randn(2, 2, *config.train_size, 3).astype(np.float32)}
  if cls == 'PerceiverForMultimodalAutoencoding':
    frames, side = config.num_frames, config.output_shape[2]
    n_audio = frames * config.audio_samples_per_frame
    n_image = frames * side * side
    return {'images': rng.randn(2, frames, side, side, 3).astype(np.float32),
            'audio': rng.randn(2, n_audio, 1).astype(np.float32),
            'subsampling/image': np.sort(rng.choice(n_image, 24, replace=False)),
            'subsampling/audio': np.arange(n_audio // config.samples_per_patch // 2)}
  side = {'PerceiverForImageClassificationLearned': config.image_size,
          'PerceiverForImageClassificationFourier': 9,
          'PerceiverForImageClassificationConvProcessing': 16}[cls]
  return {'images': rng.randn(2, side, side, 3).astype(np.float32)}


def run(cls: str, model, inputs: dict) -> dict:
  """transformers' outputs {name: array} for this library's `inputs`."""
  import torch  # pylint: disable=g-import-not-at-top
  t = lambda x: torch.as_tensor(np.asarray(x))
  with torch.no_grad():
    if cls == 'PerceiverForMaskedLM':
      out = model(inputs=t(inputs['inputs']).long(),
                  attention_mask=t(inputs['input_mask']).long())
      return {'logits': out.logits.numpy()}
    if cls == 'PerceiverForOpticalFlow':
      out = model(inputs=t(flow_patches(inputs['images'])))
      return {'flow': out.logits.numpy()}
    if cls == 'PerceiverForMultimodalAutoencoding':
      images = t(inputs['images']).permute(0, 1, 4, 2, 3)
      batch = images.shape[0]
      out = model(inputs={'image': images, 'audio': t(inputs['audio']),
                          'label': torch.zeros(batch, model.config.num_labels)},
                  subsampled_output_points={
                      'image': t(inputs['subsampling/image']).long(),
                      'audio': t(inputs['subsampling/audio']).long(), 'label': None})
      return {k: v.numpy() for k, v in out.logits.items()}
    out = model(inputs=t(inputs['images']).permute(0, 3, 1, 2))
    return {'logits': out.logits.numpy()}


def build(cls: str, sizes: dict, seed: int):
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.PerceiverConfig(**sizes)
  model = getattr(transformers, cls)(config).eval()
  perturb(model, seed)
  return model


def write_fixture(cls: str, out: str, seed: int) -> dict:
  """Saves the class's tiny model in both formats and checks transformers reads both."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  model = build(cls, TINY[cls], seed)
  inputs = inputs_for(cls, model.config, np.random.RandomState(seed))
  outputs = run(cls, model, inputs)
  folder = os.path.join(out, cls)
  shutil.rmtree(folder, ignore_errors=True)
  half = model.half()
  half.save_pretrained(folder)  # config.json + model.safetensors (float16)
  if cls in WITH_BIN:
    torch.save(half.state_dict(), os.path.join(folder, 'pytorch_model.bin'))
  model.float()
  for name in os.listdir(folder):
    if name not in ('config.json', 'model.safetensors', 'pytorch_model.bin'):
      os.remove(os.path.join(folder, name))
  # transformers reads back what it wrote, in each format, to the same outputs.
  with tempfile.TemporaryDirectory() as only_bin:
    formats = {'safetensors': folder}
    if cls in WITH_BIN:
      shutil.copy(os.path.join(folder, 'config.json'), only_bin)
      shutil.copy(os.path.join(folder, 'pytorch_model.bin'), only_bin)
      formats['bin'] = only_bin
    for fmt, path in formats.items():
      again = getattr(transformers, cls).from_pretrained(path, dtype=torch.float32).eval()
      for key, value in run(cls, again, inputs).items():
        np.testing.assert_array_equal(value, outputs[key], err_msg=f'{cls} {fmt}')
  np.savez(os.path.join(folder, 'io.npz'),
           **{f'inputs/{k}': v for k, v in inputs.items()},
           **{f'outputs/{k}': v for k, v in outputs.items()})
  return {'class': cls, 'params': sum(p.numel() for p in model.parameters()),
          'bytes': sum(os.path.getsize(os.path.join(folder, f))
                       for f in os.listdir(folder))}


def check_published(cls: str) -> dict:
  """The published size: transformers' count against the zoo's, every tensor mapped.

  transformers' model is built on torch's meta device (shapes, no memory) and its state
  dict handed to the mapping as zero-stride arrays of those shapes: the same checks as
  from_transformers on a saved folder (every key, every shape), without writing GBs.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from perceiver_agents import convert  # pylint: disable=g-import-not-at-top
  from perceiver_agents import zoo  # pylint: disable=g-import-not-at-top
  from perceiver_agents.convert import hf_config  # pylint: disable=g-import-not-at-top
  from perceiver_agents.convert import mapping  # pylint: disable=g-import-not-at-top
  config = transformers.PerceiverConfig(**PUBLISHED[cls])
  with torch.device('meta'):
    model = getattr(transformers, cls)(config)
  hf_count = sum(p.numel() for p in model.parameters())
  dtypes = {torch.float32: np.float32, torch.int64: np.int64}
  state_dict = {k: np.broadcast_to(np.zeros((), dtypes[v.dtype]), tuple(v.shape))
                for k, v in model.state_dict().items()}
  saved = json.loads(config.to_json_string())
  saved['architectures'] = [cls]
  name, kwargs = hf_config.builder_kwargs(saved)
  built = convert.build(name, kwargs, exact_gelu=hf_config.gelu_is_exact(saved))
  side = saved.get('image_size') if name.startswith('imagenet_') else None
  expected = convert.expected_trees(built, convert.sample_inputs(name, kwargs,
                                                                 image_size=side))
  # Raises, listing them, on any missing, unexpected or misshapen tensor.
  params, _ = mapping.to_haiku(state_dict, expected, model=name, where=cls)
  zoo_count = sum(int(np.prod(np.shape(x))) for m in params.values() for x in m.values())
  published = hf_config.canonical(name, zoo.PUBLISHED[name][1])
  got = hf_config.canonical(name, kwargs)
  differ = sorted(k for k in set(published) | set(got) if published.get(k) != got.get(k))
  return {'class': cls, 'zoo_name': name, 'transformers_params': hf_count,
          'converted_params': zoo_count, 'tensors': len(state_dict),
          'options_unlike_published': differ}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='fixture folder (tiny configs)')
  parser.add_argument('--published', action='store_true',
                      help='check the published sizes (nothing kept)')
  parser.add_argument('--classes', nargs='+', default=list(TINY), choices=list(TINY))
  args = parser.parse_args()
  if not args.out and not args.published:
    parser.error('pass --out DIR and/or --published')
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    for seed, cls in enumerate(args.classes):
      print(json.dumps(write_fixture(cls, args.out, seed)), flush=True)
  if args.published:
    for cls in args.classes:
      print(json.dumps(check_published(cls)), flush=True)


if __name__ == '__main__':
  main()
