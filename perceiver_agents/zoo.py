"""The published Perceiver IO models, with DeepMind's parameter trees.

Each builder returns a Haiku transform whose function computes the same function as
DeepMind's released model and has the same parameter tree, so the released
checkpoints (`load_checkpoint`) load unmodified. The contract is in
shared/conformance/README.md; the configurations use the published keys:

  language_perceiver(...)      -> hk.Transformed           f(inputs, input_mask)
  imagenet_perceiver(...)      -> hk.TransformedWithState  f(images)
  optical_flow_perceiver(...)  -> hk.Transformed           f(images)
                                  (any image size: tiled_flow)
  video_autoencoder(...)       -> hk.TransformedWithState  f(images, audio, subsampling)

Every function also takes `is_training` (keyword, default False). `PUBLISHED` holds the
full-size configuration of each released model.
"""
from typing import Callable, List, Mapping, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents import blocks
from perceiver_agents.blocks import checks
from perceiver_agents.encoders.audio import AudioPostprocessor
from perceiver_agents.encoders.audio import AudioPreprocessor
from perceiver_agents.encoders.image import ImagePreprocessor
from perceiver_agents.encoders.image import patches_for_flow
from perceiver_agents.encoders.multimodal import MultimodalPostprocessor
from perceiver_agents.encoders.multimodal import MultimodalPreprocessor
from perceiver_agents.encoders.outputs import ClassificationPostprocessor
from perceiver_agents.encoders.outputs import EmbeddingDecoder
from perceiver_agents.encoders.outputs import OneHotPreprocessor
from perceiver_agents.encoders.outputs import ProjectionPostprocessor
from perceiver_agents.params_io import load_deepmind_checkpoint

BYTES_VOCAB_SIZE = 262


def load_checkpoint(path: str) -> dict:
  """Reads a released checkpoint file (`*.pystate`) without running code in it.

  Returns nested dicts of numpy arrays: the params, or {'params', 'state'} for the
  ImageNet files. See `perceiver_agents.params_io.load_deepmind_checkpoint`.
  """
  return load_deepmind_checkpoint(path)


def _decoder_kwargs(decoder: Mapping, encoder: Mapping) -> dict:
  """The decoder config without the informational `num_z_channels`, checked."""
  decoder = dict(decoder)
  z = decoder.pop('num_z_channels', None)
  if z is not None and z != encoder.get('num_z_channels', z):
    raise ValueError(f'decoder num_z_channels ({z}) differs from the encoder\'s '
                     f'num_z_channels ({encoder["num_z_channels"]}).')
  return decoder


def language_perceiver(*, max_seq_len: int, d_model: int, encoder: Mapping,
                       decoder: Mapping,
                       vocab_size: int = BYTES_VOCAB_SIZE) -> hk.Transformed:
  """Masked language model over UTF-8 bytes (the published one: 201M params).

  f(inputs int [B, T], input_mask bool [B, T], *, is_training=False) -> logits
  [B, T, vocab_size]; T must equal max_seq_len. Output logits are tied to the input
  embedding (plus a bias).
  """
  decoder_kwargs = _decoder_kwargs(decoder, encoder)

  def forward(inputs, input_mask, *, is_training=False):
    checks.check_rank(inputs, 2, name='inputs')
    checks.check_mask(input_mask, inputs.shape, name='input_mask')
    if inputs.shape[1] != max_seq_len:
      raise ValueError(f'inputs have length {inputs.shape[1]}, the model takes '
                       f'max_seq_len={max_seq_len} (pad with the PAD id and mask).')
    embed = hk.Embed(vocab_size=vocab_size, embed_dim=d_model)
    x = embed(inputs)  # [B, T, d_model]
    x = x + blocks.TrainablePositionEncoding(
        index_dim=max_seq_len, num_channels=d_model)(inputs.shape[0])
    model = blocks.Perceiver(encoder=blocks.PerceiverEncoder(**encoder),
                             decoder=blocks.BasicDecoder(**decoder_kwargs))
    out = model(x, is_training=is_training, input_mask=input_mask,
                query_mask=input_mask)  # [B, T, d_model]
    return EmbeddingDecoder(embedding_matrix=embed.embeddings)(out)

  return hk.transform(forward)


def imagenet_perceiver(*, input_preprocessor: Mapping, encoder: Mapping,
                       decoder: Mapping,
                       num_classes: int = 1000) -> hk.TransformedWithState:
  """ImageNet classifier (pixels + Fourier, conv1x1 + learned positions, or conv).

  f(images float [B, H, W, 3], *, is_training=False) -> logits [B, num_classes].
  """
  decoder_kwargs = _decoder_kwargs(decoder, encoder)

  def forward(images, *, is_training=False):
    checks.check_rank(images, 4, name='images')
    model = blocks.Perceiver(
        input_preprocessor=ImagePreprocessor(**input_preprocessor),
        encoder=blocks.PerceiverEncoder(**encoder),
        decoder=blocks.ClassificationDecoder(num_classes, **decoder_kwargs))
    return model(images, is_training=is_training)

  return hk.transform_with_state(forward)


def optical_flow_perceiver(*, train_size: Sequence[int], encoder: Mapping,
                           num_bands: int = 64,
                           flow_scale_factor: float = 20.0,
                           decode_chunk_size: Optional[int] = None
                           ) -> hk.Transformed:
  """Optical flow between two frames (the published model: Sintel/KITTI).

  f(images float [B, 2, H, W, 3], *, is_training=False) -> flow [B, H, W, 2], with
  (H, W) = train_size. Inputs are 3x3 patches of both frames, merged in time; the
  decoder queries with the first frame's features.

  `decode_chunk_size` decodes the H*W flow queries that many at a time, and
  `encoder['cross_attend_kv_chunk_size']` (or `'cross_attend_chunk_size'`) attends the
  inputs (or the latents) that many at a time: same outputs, a fraction of the peak
  memory (benchmarks/memory.py). With any of them, the inputs' 2 * 2 * num_bands
  Fourier channels are expanded chunk by chunk (lazy_position_features), so the
  [B, H*W, 64 + 2 + 4 * num_bands] inputs, which are also the queries, are never
  alive in full.
  """
  train_size = tuple(train_size)
  fourier = dict(num_bands=num_bands, max_resolution=train_size,
                 sine_only=False, concat_pos=True)
  chunked = decode_chunk_size is not None or any(
      encoder.get(option) is not None
      for option in ('cross_attend_chunk_size', 'cross_attend_kv_chunk_size'))

  def forward(images, *, is_training=False):
    checks.check_rank(images, 5, name='images')
    if tuple(images.shape[2:4]) != train_size:
      raise ValueError(f'images are {tuple(images.shape[2:4])}, the model takes '
                       f'train_size={train_size} (other sizes: tiled_flow).')
    model = blocks.Perceiver(
        input_preprocessor=ImagePreprocessor(
            position_encoding_type='fourier',
            fourier_position_encoding_kwargs=fourier, prep_type='patches',
            spatial_downsample=1, temporal_downsample=2,
            conv_after_patching=True, lazy_position_features=chunked),
        encoder=blocks.PerceiverEncoder(**encoder),
        decoder=blocks.FlowDecoder(train_size, rescale_factor=100.0,
                                   use_query_residual=False,
                                   output_num_channels=2,
                                   output_w_init=jnp.zeros,
                                   decode_chunk_size=decode_chunk_size))
    return model(patches_for_flow(images),
                 is_training=is_training) * flow_scale_factor

  return hk.transform(forward)



def tile_starts(size: int, tile: int, min_overlap: int) -> List[int]:
  """Start offsets of tiles of length `tile` covering [0, size) with >= min_overlap overlap."""
  if size <= tile:
    return [0]
  if not 0 <= min_overlap < tile:
    raise ValueError(f'min_overlap must be in [0, {tile}), got {min_overlap}.')
  count = int(np.ceil((size - min_overlap) / (tile - min_overlap)))
  return [int(round(s)) for s in np.linspace(0, size - tile, count)]


def tile_weights(height: int, width: int) -> np.ndarray:
  """Blending weights [h, w]: 1 + distance to the nearest tile border (a pyramid)."""
  y = np.minimum(np.arange(height) + 1, height - np.arange(height))
  x = np.minimum(np.arange(width) + 1, width - np.arange(width))
  return np.minimum(y[:, None], x[None, :]).astype(np.float32)


def tiled_flow(apply_tile: Callable[[jax.Array], jax.Array], frames: jax.Array,
               tile: Sequence[int], min_overlap: int) -> jax.Array:
  """Flow [B, H, W, 2] of frames [B, 2, H, W, 3] of any size, from the flow model at its
  train_size `tile` = (h, w): `apply_tile` maps tiles [N, 2, h, w, 3] to [N, h, w, 2].

  Overlapping tiles (>= min_overlap pixels) are blended with weights that fall off
  linearly towards each tile's border (as the published evaluation does, here for any
  size). Images smaller than the tile are edge-padded to it and the flow cropped back.
  """
  b, _, height, width, _ = frames.shape
  th, tw = tile
  ph, pw = max(0, th - height), max(0, tw - width)
  if ph or pw:
    frames = jnp.pad(frames, [(0, 0), (0, 0), (0, ph), (0, pw), (0, 0)], mode='edge')
  full_h, full_w = height + ph, width + pw
  starts = [(y, x) for y in tile_starts(full_h, th, min_overlap)
            for x in tile_starts(full_w, tw, min_overlap)]
  tiles = jnp.concatenate([frames[:, :, y:y + th, x:x + tw] for y, x in starts])  # [T*B, ...]
  flows = apply_tile(tiles).reshape(len(starts), b, th, tw, 2)
  weights = jnp.asarray(tile_weights(th, tw))[None, :, :, None]                     # [1, h, w, 1]
  total = jnp.zeros((b, full_h, full_w, 2), flows.dtype)
  norm = jnp.zeros((1, full_h, full_w, 1), flows.dtype)
  for i, (y, x) in enumerate(starts):
    total = total.at[:, y:y + th, x:x + tw].add(flows[i] * weights)
    norm = norm.at[:, y:y + th, x:x + tw].add(weights)
  return (total / norm)[:, :height, :width]

def video_autoencoder(*, num_frames: int, image_size: int,
                      audio_samples_per_frame: int, samples_per_patch: int,
                      num_classes: int, encoder: Mapping,
                      audio_num_bands: int = 192, image_num_bands: int = 32,
                      image_spatial_downsample: int = 4,
                      decoder_num_channels: int = 512,
                      decode_chunk_size: Optional[int] = None,
                      label_num_channels: Optional[int] = None
                      ) -> hk.TransformedWithState:
  """Kinetics video + audio + label autoencoder (multimodal Perceiver IO).

  f(images [B, T, S, S, 3], audio [B, T * audio_samples_per_frame, 1],
    subsampling {'image': int [n_img], 'audio': int [n_audio], 'label': optional},
    *, is_training=False)
  -> {'image': [B, n_img, 3], 'audio': [B, n_audio * samples_per_patch],
      'label': [B, num_classes]}.
  The label input is replaced by a learned mask token, so the label is predicted
  from video and audio alone. Decode a whole clip chunk by chunk via `subsampling`,
  or in one call with `decode_chunk_size` (queries built, cross-attended and
  postprocessed at most that many at a time, inside the model: same outputs, bounded
  memory). `label_num_channels` is the width of the label's learned query
  (default decoder_num_channels, as published; transformers' config can set another).
  """
  n_audio = num_frames * audio_samples_per_frame
  if n_audio % samples_per_patch:
    raise ValueError(f'num_frames * audio_samples_per_frame ({n_audio}) must be a '
                     f'multiple of samples_per_patch ({samples_per_patch}).')
  patch_grid = image_size // image_spatial_downsample
  image_fourier = dict(num_bands=image_num_bands,
                       max_resolution=(num_frames, patch_grid, patch_grid),
                       sine_only=False, concat_pos=True)
  audio_fourier = dict(num_bands=audio_num_bands, max_resolution=(n_audio,),
                       sine_only=False, concat_pos=True)
  # Chunked, the Fourier queries of the whole clip stay unexpanded (their positions).
  query_kwargs = dict(concat_preprocessed_input=False, use_query_residual=False,
                      output_num_channels=decoder_num_channels,
                      lazy_queries=decode_chunk_size is not None)

  def forward(images, audio, subsampling: Optional[Mapping] = None, *,
              is_training=False):
    checks.check_rank(images, 5, name='images')
    checks.check_rank(audio, 3, name='audio')
    expected = (num_frames, image_size, image_size, 3)
    if tuple(images.shape[1:]) != expected:
      raise ValueError(f'images must be [B, {num_frames}, {image_size}, '
                       f'{image_size}, 3], got {images.shape}.')
    if audio.shape[1:] != (n_audio, 1):
      raise ValueError(f'audio must be [B, {n_audio}, 1], got {audio.shape}.')
    preprocessor = MultimodalPreprocessor(
        min_padding_size=4,
        modalities={
            'audio': AudioPreprocessor(
                position_encoding_type='fourier',
                fourier_position_encoding_kwargs=audio_fourier,
                prep_type='patches', samples_per_patch=samples_per_patch),
            'image': ImagePreprocessor(
                position_encoding_type='fourier',
                fourier_position_encoding_kwargs=image_fourier,
                prep_type='patches',
                spatial_downsample=image_spatial_downsample),
            'label': OneHotPreprocessor(),
        },
        mask_probs={'image': 0.0, 'audio': 0.0, 'label': 1.0})
    postprocessor = MultimodalPostprocessor(modalities={
        'audio': AudioPostprocessor(samples_per_patch=samples_per_patch),
        'image': ProjectionPostprocessor(num_outputs=3),
        'label': ClassificationPostprocessor(num_classes=num_classes),
    })
    model_encoder = blocks.PerceiverEncoder(name='encoder', **encoder)
    decoder = blocks.MultimodalDecoder(
        modalities={
            'audio': blocks.BasicDecoder(
                output_index_dims=(n_audio // samples_per_patch,),
                position_encoding_type='fourier',
                fourier_position_encoding_kwargs=audio_fourier, **query_kwargs),
            'image': blocks.BasicVideoAutoencodingDecoder(
                output_shape=(num_frames, image_size, image_size),
                position_encoding_type='fourier',
                fourier_position_encoding_kwargs=image_fourier, **query_kwargs),
            'label': blocks.ClassificationDecoder(
                num_classes, position_encoding_type='trainable',
                trainable_position_encoding_kwargs=dict(
                    num_channels=label_num_channels or decoder_num_channels,
                    init_scale=0.02),
                concat_preprocessed_input=False, use_query_residual=False),
        },
        output_num_channels=decoder_num_channels, use_query_residual=False,
        decode_chunk_size=decode_chunk_size)
    model = blocks.Perceiver(input_preprocessor=preprocessor,
                             encoder=model_encoder, decoder=decoder,
                             output_postprocessor=postprocessor)
    points = {k: v for k, v in dict(subsampling or {}).items() if v is not None}
    label = jnp.zeros((images.shape[0], num_classes), images.dtype)
    return model({'image': images, 'audio': audio, 'label': label},
                 is_training=is_training, subsampled_output_points=points)

  return hk.transform_with_state(forward)


def _encoder(**overrides) -> dict:
  config = dict(num_self_attends_per_block=6, num_blocks=8, z_index_dim=512,
                num_z_channels=1024, num_self_attend_heads=8,
                num_cross_attend_heads=1, cross_attend_widening_factor=1,
                self_attend_widening_factor=1, dropout_prob=0.0,
                z_pos_enc_init_scale=0.02, cross_attention_shape_for_attn='kv',
                use_query_residual=True)
  config.update(overrides)
  return config


_IMAGENET_DECODER = dict(
    num_z_channels=1024, position_encoding_type='trainable',
    trainable_position_encoding_kwargs=dict(init_scale=0.02, num_channels=1024))

# Full-size configurations of the released models: builder name and kwargs.
PUBLISHED = {
    'language_perceiver': ('language_perceiver', dict(
        max_seq_len=2048, d_model=768,
        encoder=dict(num_self_attends_per_block=26, num_blocks=1,
                     z_index_dim=256, num_z_channels=1280,
                     num_self_attend_heads=8, num_cross_attend_heads=8,
                     qk_channels=256, v_channels=1280, use_query_residual=True,
                     cross_attend_widening_factor=1,
                     self_attend_widening_factor=1),
        decoder=dict(output_num_channels=1280,
                     position_encoding_type='trainable',
                     output_index_dims=2048, num_z_channels=1280,
                     qk_channels=256, v_channels=768, num_heads=8,
                     final_project=False, use_query_residual=False,
                     trainable_position_encoding_kwargs=dict(num_channels=768)))),
    'imagenet_learned_position_encoding': ('imagenet_perceiver', dict(
        num_classes=1000,
        input_preprocessor=dict(
            position_encoding_type='trainable',
            trainable_position_encoding_kwargs=dict(init_scale=0.02,
                                                    num_channels=256),
            prep_type='conv1x1', project_pos_dim=256, num_channels=256,
            spatial_downsample=1, concat_or_add_pos='concat'),
        encoder=_encoder(),
        decoder=dict(_IMAGENET_DECODER, use_query_residual=False))),
    'imagenet_fourier_position_encoding': ('imagenet_perceiver', dict(
        num_classes=1000,
        input_preprocessor=dict(
            position_encoding_type='fourier',
            fourier_position_encoding_kwargs=dict(
                concat_pos=True, max_resolution=(224, 224), num_bands=64,
                sine_only=False),
            prep_type='pixels', spatial_downsample=1),
        encoder=_encoder(),
        decoder=dict(_IMAGENET_DECODER, use_query_residual=True))),
    'imagenet_conv_preprocessing': ('imagenet_perceiver', dict(
        num_classes=1000,
        input_preprocessor=dict(
            position_encoding_type='fourier',
            fourier_position_encoding_kwargs=dict(
                concat_pos=True, max_resolution=(56, 56), num_bands=64,
                sine_only=False),
            prep_type='conv'),
        encoder=_encoder(),
        decoder=dict(_IMAGENET_DECODER, use_query_residual=True))),
    'optical_flow': ('optical_flow_perceiver', dict(
        train_size=(368, 496), num_bands=64,
        encoder=_encoder(num_self_attends_per_block=24, num_blocks=1,
                         z_index_dim=2048, num_z_channels=512,
                         num_self_attend_heads=16))),
    'video_autoencoder': ('video_autoencoder', dict(
        num_frames=16, image_size=224, audio_samples_per_frame=1920,
        samples_per_patch=16, num_classes=700, audio_num_bands=192,
        image_num_bands=32, image_spatial_downsample=4,
        decoder_num_channels=512,
        encoder=_encoder(num_self_attends_per_block=8, num_blocks=1,
                         z_index_dim=784, num_z_channels=512))),
}


def build(name: str):
  """The transform of a published model by name (a key of `PUBLISHED`)."""
  checks.check_choice(name, tuple(PUBLISHED), name='model name')
  builder, kwargs = PUBLISHED[name]
  return globals()[builder](**kwargs)
