"""transformers' `PerceiverConfig` (config.json) <-> the zoo builders' keyword arguments.

    name, kwargs = builder_kwargs(config)      # any sizes; refuses what the zoo cannot build
    config = transformers_config(name, kwargs, image_size=..., base=...)

transformers hard-codes part of each architecture (e.g. the language decoder's 8 heads
and 256 query/key channels, the image models' 64 Fourier bands) and derives the rest from
the config; `builder_kwargs` writes those fixed parts out, and `transformers_config`
refuses kwargs that transformers could not express (`canonical` compares them).

Where transformers computes something other than DeepMind's published model, the
kwargs say so: its image classifiers add the query back in the decoder
(use_query_residual=True, also for the learned-position model), and its conv
preprocessor pads the 7x7 convolution 3 pixels on every side and the max-pool not at all
(input_preprocessor.conv_padding='torch'). `hidden_act` picks the MLP's GELU:
'gelu' is exact (erf), 'gelu_new' / 'gelu_pytorch_tanh' / 'gelu_fast' the tanh
approximation of the published models.
"""

import inspect
from typing import Any, Mapping, Optional

from perceiver_agents import blocks
from perceiver_agents import zoo
from perceiver_agents.encoders.image import ImagePreprocessor

# transformers class -> zoo name (zoo.PUBLISHED key).
ARCHITECTURES = {
    'PerceiverForMaskedLM': 'language_perceiver',
    'PerceiverForImageClassificationLearned': 'imagenet_learned_position_encoding',
    'PerceiverForImageClassificationFourier': 'imagenet_fourier_position_encoding',
    'PerceiverForImageClassificationConvProcessing': 'imagenet_conv_preprocessing',
    'PerceiverForOpticalFlow': 'optical_flow',
    'PerceiverForMultimodalAutoencoding': 'video_autoencoder',
}
CLASS_OF = {name: cls for cls, name in ARCHITECTURES.items()}

TANH_GELUS = ('gelu_new', 'gelu_pytorch_tanh', 'gelu_fast')
EXACT_GELUS = ('gelu',)

# PerceiverConfig's defaults (transformers 5): save_pretrained leaves out every value
# equal to its default, so a config.json is read on top of these.
DEFAULTS = dict(
    num_latents=256, d_latents=1280, d_model=768, num_blocks=1,
    num_self_attends_per_block=26, num_self_attention_heads=8,
    num_cross_attention_heads=8, qk_channels=None, v_channels=None,
    cross_attention_shape_for_attention='kv', self_attention_widening_factor=1,
    cross_attention_widening_factor=1, hidden_act='gelu',
    attention_probs_dropout_prob=0.1, initializer_range=0.02, layer_norm_eps=1e-12,
    use_query_residual=True, vocab_size=262, max_position_embeddings=2048,
    image_size=56, train_size=[368, 496], num_frames=16, audio_samples_per_frame=1920,
    samples_per_patch=16, output_shape=[1, 16, 224, 224], output_num_channels=512,
    _label_trainable_num_channels=1024)

# Fixed by transformers' model classes.
_IMAGE_FOURIER = dict(concat_pos=True, max_resolution=[224, 224], num_bands=64,
                      sine_only=False)
_CONV_FOURIER = dict(concat_pos=True, max_resolution=[56, 56], num_bands=64,
                     sine_only=False)
_LEARNED_CHANNELS = 256
_MLM_DECODER_HEADS, _MLM_DECODER_QK = 8, 256


def _num_labels(config: Mapping[str, Any]) -> int:
  if config.get('num_labels') is not None:
    return int(config['num_labels'])
  if config.get('id2label'):
    return len(config['id2label'])
  return 2  # PretrainedConfig's default


def architecture(config: Mapping[str, Any], *, where: str = 'config.json') -> str:
  """The transformers class named by config['architectures'] (one of ARCHITECTURES)."""
  archs = list(config.get('architectures') or [])
  if config.get('model_type', 'perceiver') != 'perceiver':
    raise ValueError(f'{where}: model_type is {config.get("model_type")!r}, not '
                     "'perceiver'.")
  if len(archs) != 1 or archs[0] not in ARCHITECTURES:
    raise ValueError(f'{where}: architectures is {archs}; expected one of '
                     f'{sorted(ARCHITECTURES)}.')
  return archs[0]


def gelu_is_exact(config: Mapping[str, Any], *, where: str = 'config.json') -> bool:
  """True for hidden_act 'gelu' (erf), False for the tanh approximations."""
  act = dict(DEFAULTS, **config)['hidden_act']
  if act in EXACT_GELUS:
    return True
  if act in TANH_GELUS:
    return False
  raise ValueError(f'{where}: hidden_act={act!r} is not supported; the Perceiver MLP '
                   f'here is a GELU: one of {EXACT_GELUS + TANH_GELUS}.')


def builder_kwargs(config: Mapping[str, Any], *, where: str = 'config.json'
                   ) -> tuple[str, dict]:
  """(zoo name, kwargs for its builder) computing what transformers' model computes."""
  cls = architecture(config, where=where)
  name = ARCHITECTURES[cls]
  c = dict(DEFAULTS, **config)
  encoder = dict(
      num_self_attends_per_block=c['num_self_attends_per_block'],
      num_blocks=c['num_blocks'], z_index_dim=c['num_latents'],
      num_z_channels=c['d_latents'], qk_channels=c['qk_channels'],
      v_channels=c['v_channels'],
      num_self_attend_heads=c['num_self_attention_heads'],
      num_cross_attend_heads=c['num_cross_attention_heads'],
      cross_attend_widening_factor=c['cross_attention_widening_factor'],
      self_attend_widening_factor=c['self_attention_widening_factor'],
      cross_attention_shape_for_attn=c['cross_attention_shape_for_attention'],
      use_query_residual=bool(c['use_query_residual']), dropout_prob=0.0,
      z_pos_enc_init_scale=0.02)
  if encoder['cross_attention_shape_for_attn'] != 'kv' and name in (
      'optical_flow', 'video_autoencoder'):
    # transformers applies the option to the decoders too; the zoo's decoders use 'kv'.
    raise ValueError(f"{where}: cross_attention_shape_for_attention='q' is not "
                     f'supported for {cls}.')
  if name == 'language_perceiver':
    d_model, length = c['d_model'], c['max_position_embeddings']
    return name, dict(
        max_seq_len=length, d_model=d_model, vocab_size=c['vocab_size'],
        encoder=encoder,
        decoder=dict(output_num_channels=c['d_latents'],
                     position_encoding_type='trainable', output_index_dims=length,
                     num_z_channels=c['d_latents'], qk_channels=_MLM_DECODER_QK,
                     v_channels=d_model, num_heads=_MLM_DECODER_HEADS,
                     final_project=False, use_query_residual=False,
                     trainable_position_encoding_kwargs=dict(num_channels=d_model)))
  if name.startswith('imagenet_'):
    decoder = dict(num_z_channels=c['d_latents'], position_encoding_type='trainable',
                   trainable_position_encoding_kwargs=dict(
                       init_scale=0.02, num_channels=c['d_latents']),
                   use_query_residual=True)
    if name == 'imagenet_learned_position_encoding':
      preprocessor = dict(
          position_encoding_type='trainable',
          trainable_position_encoding_kwargs=dict(init_scale=0.02,
                                                  num_channels=_LEARNED_CHANNELS),
          prep_type='conv1x1', project_pos_dim=_LEARNED_CHANNELS,
          num_channels=_LEARNED_CHANNELS, spatial_downsample=1,
          concat_or_add_pos='concat')
    elif name == 'imagenet_fourier_position_encoding':
      preprocessor = dict(position_encoding_type='fourier',
                          fourier_position_encoding_kwargs=dict(_IMAGE_FOURIER),
                          prep_type='pixels', spatial_downsample=1)
    else:
      preprocessor = dict(position_encoding_type='fourier',
                          fourier_position_encoding_kwargs=dict(_CONV_FOURIER),
                          prep_type='conv', conv_padding='torch')
    return name, dict(num_classes=_num_labels(c), input_preprocessor=preprocessor,
                      encoder=encoder, decoder=decoder)
  if name == 'optical_flow':
    return name, dict(train_size=list(c['train_size']), num_bands=64, encoder=encoder)
  # video_autoencoder
  shape = list(c['output_shape'])
  if (len(shape) != 4 or shape[1] != c['num_frames'] or shape[2] != shape[3]
      or shape[2] != 4 * c['image_size']):
    raise ValueError(
        f'{where}: output_shape {shape} must be [1, num_frames, S, S] with S = 4 * '
        f'image_size (num_frames={c["num_frames"]}, image_size={c["image_size"]}): '
        'transformers places the image inputs and queries on a (T, image_size, '
        'image_size) Fourier grid of 4x4 patches of S x S frames.')
  return name, dict(
      num_frames=c['num_frames'], image_size=shape[2],
      audio_samples_per_frame=c['audio_samples_per_frame'],
      samples_per_patch=c['samples_per_patch'], num_classes=_num_labels(c),
      encoder=encoder, audio_num_bands=192, image_num_bands=32,
      image_spatial_downsample=4, decoder_num_channels=c['output_num_channels'],
      label_num_channels=c['_label_trainable_num_channels'])


def transformers_config(name: str, kwargs: Mapping[str, Any], *,
                        image_size: Optional[int] = None, hidden_act: str = 'gelu_new',
                        base: Optional[Mapping[str, Any]] = None) -> dict:
  """config.json for the zoo model `name` built with `kwargs`.

  `image_size`: the learned-position classifier's image side (its position table holds
  image_size**2 rows). `hidden_act` defaults to the published models' tanh GELU.
  `base` supplies the keys sizes do not decide (id2label, dropout, ...). Raises
  ValueError naming every option transformers' class cannot express.
  """
  if name not in CLASS_OF:
    raise ValueError(f'name: {name!r} has no transformers counterpart; expected one of '
                     f'{sorted(CLASS_OF)}.')
  kwargs = dict(kwargs)
  encoder = dict(kwargs.get('encoder', {}))
  enc = _with_defaults(encoder, blocks.PerceiverEncoder.__init__)
  config = dict(base or {})
  for key in ('_name_or_path', 'torch_dtype', 'transformers_version'):
    config.pop(key, None)
  config.update(
      architectures=[CLASS_OF[name]], model_type='perceiver', hidden_act=hidden_act,
      num_latents=enc['z_index_dim'], d_latents=enc['num_z_channels'],
      num_blocks=enc['num_blocks'],
      num_self_attends_per_block=enc['num_self_attends_per_block'],
      num_self_attention_heads=enc['num_self_attend_heads'],
      num_cross_attention_heads=enc['num_cross_attend_heads'],
      qk_channels=enc['qk_channels'], v_channels=enc['v_channels'],
      cross_attention_shape_for_attention=enc['cross_attention_shape_for_attn'],
      self_attention_widening_factor=enc['self_attend_widening_factor'],
      cross_attention_widening_factor=enc['cross_attend_widening_factor'],
      use_query_residual=bool(enc['use_query_residual']))
  config.setdefault('attention_probs_dropout_prob', 0.0)
  builder = _with_defaults(kwargs, getattr(zoo, zoo.PUBLISHED[name][0]))
  if name == 'language_perceiver':
    config.update(d_model=builder['d_model'],
                  max_position_embeddings=builder['max_seq_len'],
                  vocab_size=builder['vocab_size'])
  elif name.startswith('imagenet_'):
    config.update(num_labels=builder['num_classes'],
                  d_model={'imagenet_learned_position_encoding': 512,
                           'imagenet_fourier_position_encoding': 261,
                           'imagenet_conv_preprocessing': 322}[name])
    if name == 'imagenet_learned_position_encoding':
      if image_size is None:
        raise ValueError('image_size: the learned-position classifier needs its image '
                         'side (its position table has image_size**2 rows).')
      config['image_size'] = int(image_size)
  elif name == 'optical_flow':
    config.update(train_size=list(builder['train_size']), d_model=322)
  else:
    side = builder['image_size']
    if side % 4:
      raise ValueError(f'image_size: transformers needs a multiple of 4, got {side}.')
    config.update(num_frames=builder['num_frames'], image_size=side // 4,
                  output_shape=[1, builder['num_frames'], side, side],
                  audio_samples_per_frame=builder['audio_samples_per_frame'],
                  samples_per_patch=builder['samples_per_patch'],
                  output_num_channels=builder['decoder_num_channels'],
                  _label_trainable_num_channels=(builder['label_num_channels']
                                                 or builder['decoder_num_channels']),
                  num_labels=builder['num_classes'], d_model=704)
  if 'num_labels' in config and 'id2label' in config and len(
      config['id2label']) != config['num_labels']:
    config.pop('id2label')
    config.pop('label2id', None)
  if 'num_labels' in config and 'id2label' not in config:
    config['id2label'] = {str(i): f'LABEL_{i}' for i in range(config['num_labels'])}
    config['label2id'] = {f'LABEL_{i}': i for i in range(config['num_labels'])}
  config.pop('num_labels', None)  # transformers derives it from id2label
  gelu_is_exact(config, where='hidden_act')
  _, expressed = builder_kwargs(config, where='the written config')
  want, got = canonical(name, kwargs), canonical(name, expressed)
  differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
  if differ:
    raise ValueError(
        f'{name}: transformers\' {CLASS_OF[name]} cannot express these options: ' +
        '; '.join(f'{k}={want.get(k)!r} (transformers: {got.get(k)!r})'
                  for k in differ))
  return config


# Options that change neither the parameters nor the inference function.
_IGNORED = {'dropout_prob', 'attention_dropout_prob', 'cross_attend_chunk_size',
            'cross_attend_kv_chunk_size', 'remat_latents', 'decode_chunk_size',
            'lazy_queries', 'lazy_position_features', 'z_pos_enc_init_scale',
            'init_scale', 'flow_scale_factor', 'name', 'output_w_init'}


def _with_defaults(kwargs: Mapping[str, Any], fn) -> dict:
  params = inspect.signature(fn).parameters.values()
  defaults = {p.name: p.default for p in params
              if p.default is not inspect.Parameter.empty}
  return dict(defaults, **kwargs)


def canonical(name: str, kwargs: Mapping[str, Any]) -> dict:
  """{dotted key: value} of `kwargs` with defaults filled and inert options dropped."""
  full = _with_defaults(kwargs, getattr(zoo, zoo.PUBLISHED[name][0]))
  if 'encoder' in full:
    full['encoder'] = _with_defaults(full['encoder'], blocks.PerceiverEncoder.__init__)
  if isinstance(full.get('decoder'), Mapping):
    decoder = dict(full['decoder'])
    decoder.pop('num_z_channels', None)  # informational (zoo._decoder_kwargs checks it)
    full['decoder'] = _with_defaults(decoder, blocks.BasicDecoder.__init__)
  if isinstance(full.get('input_preprocessor'), Mapping):
    full['input_preprocessor'] = _with_defaults(full['input_preprocessor'],
                                                ImagePreprocessor.__init__)
  if name == 'video_autoencoder' and full.get('label_num_channels') is None:
    full['label_num_channels'] = full['decoder_num_channels']
  flat: dict = {}

  def walk(tree, prefix):
    for key, value in tree.items():
      if key in _IGNORED:
        continue
      if isinstance(value, Mapping):
        walk(value, f'{prefix}{key}.')
      else:
        flat[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value

  walk(full, '')
  return flat
