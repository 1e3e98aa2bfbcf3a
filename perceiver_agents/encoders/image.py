"""Images and video in and out: preprocessors, postprocessors and the patch utilities.

Shape letters: B batch, T time, H height, W width, C channels, N = T*H*W (or H*W).
"""
import math
from typing import Optional, Sequence

import einops
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.blocks import checks
from perceiver_agents.blocks import ops
from perceiver_agents.encoders.positional import PositionalPreprocessor

PREP_TYPES = ('conv', 'patches', 'pixels', 'conv1x1')
POSTPROC_TYPES = ('conv', 'patches', 'pixels', 'conv1x1')


def space_to_depth(frames: jax.Array, *, temporal_block_size: int = 1,
                   spatial_block_size: int = 1) -> jax.Array:
  """Moves blocks of pixels into channels.

  [B, H, W, C] -> [B, H/s, W/s, s*s*C], or [B, T, H, W, C] ->
  [B, T/t, H/s, W/s, t*s*s*C], channels ordered (time, row, column, channel).
  """
  if frames.ndim == 4:
    return einops.rearrange(frames, 'b (h dh) (w dw) c -> b h w (dh dw c)',
                            dh=spatial_block_size, dw=spatial_block_size)
  if frames.ndim == 5:
    return einops.rearrange(
        frames, 'b (t dt) (h dh) (w dw) c -> b t h w (dt dh dw c)',
        dt=temporal_block_size, dh=spatial_block_size, dw=spatial_block_size)
  raise ValueError('frames must have rank 4 [B, H, W, C] or 5 [B, T, H, W, C], '
                   f'got shape {frames.shape}.')


def depth_to_space(frames: jax.Array, *, temporal_block_size: int = 1,
                   spatial_block_size: int = 1) -> jax.Array:
  """Inverse of `space_to_depth`."""
  if frames.ndim == 4:
    return einops.rearrange(frames, 'b h w (dh dw c) -> b (h dh) (w dw) c',
                            dh=spatial_block_size, dw=spatial_block_size)
  if frames.ndim == 5:
    return einops.rearrange(
        frames, 'b t h w (dt dh dw c) -> b (t dt) (h dh) (w dw) c',
        dt=temporal_block_size, dh=spatial_block_size, dw=spatial_block_size)
  raise ValueError('frames must have rank 4 [B, H, W, C] or 5 [B, T, H, W, C], '
                   f'got shape {frames.shape}.')


def extract_patches(images: jax.Array, *, size: int = 3) -> jax.Array:
  """Zero-padded size x size neighbourhoods of every pixel.

  [B, H, W, C] -> [B, H, W, size*size*C], channels ordered (row, column, channel).
  """
  checks.check_rank(images, 4, name='images')
  pad = size // 2
  padded = jnp.pad(images, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
  height, width = images.shape[1:3]
  shifted = [padded[:, i:i + height, j:j + width, :]
             for i in range(size) for j in range(size)]
  return jnp.concatenate(shifted, axis=-1)


def patches_for_flow(images: jax.Array) -> jax.Array:
  """3x3 patches of both frames: [B, 2, H, W, C] -> [B, 2, H, W, 9*C]."""
  checks.check_rank(images, 5, name='images')
  if images.shape[1] != 2:
    raise ValueError(f'images must hold 2 frames on axis 1, got {images.shape[1]}.')
  return jnp.stack([extract_patches(images[:, t]) for t in range(2)], axis=1)


DOWNSAMPLE_PADDINGS = ('same', 'torch')


class Conv2DDownsample(hk.Module):
  """Downsamples 4x per layer: 7x7/2 convolution, batch norm, ReLU, 3x3/2 max-pool.

  padding 'same' is the published model's (TF 'SAME' for both; [B, 224, 224, C] ->
  [B, 56, 56, F]). 'torch' is transformers' port of it (PerceiverForImageClassification
  ConvProcessing): the convolution zero-pads 3 pixels on every side and the max-pool
  none, so 224 -> 112 -> 55 and the sampling grid is shifted by one pixel.
  """

  def __init__(self, *, num_layers: int = 1, num_channels: int = 64,
               use_batchnorm: bool = True, bn_config: Optional[dict] = None,
               padding: str = 'same', name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_choice(padding, DOWNSAMPLE_PADDINGS, name='padding')
    self._pool_padding = 'SAME' if padding == 'same' else 'VALID'
    conv_padding = 'SAME' if padding == 'same' else ((3, 3), (3, 3))
    bn_config = dict(bn_config or {})
    bn_config.setdefault('decay_rate', 0.9)
    bn_config.setdefault('eps', 1e-5)
    bn_config.setdefault('create_scale', True)
    bn_config.setdefault('create_offset', True)
    self.layers = []
    for _ in range(num_layers):
      conv = hk.Conv2D(output_channels=num_channels, kernel_shape=7, stride=2,
                       with_bias=False, padding=conv_padding, name='conv')
      norm = hk.BatchNorm(name='batchnorm', **bn_config) if use_batchnorm else None
      self.layers.append((conv, norm))

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               test_local_stats: bool = False) -> jax.Array:
    """[B, H, W, C] -> [B, H / 4**L, W / 4**L, num_channels]."""
    out = inputs
    for conv, norm in self.layers:
      out = conv(out)
      if norm is not None:
        out = norm(out, is_training, test_local_stats)
      out = jax.nn.relu(out)
      out = hk.max_pool(out, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1),
                        padding=self._pool_padding)
    return out


class Conv2DUpsample(hk.Module):
  """Upsamples 4x with two stride-2 transposed convolutions."""

  def __init__(self, *, n_outputs: int, name: Optional[str] = None):
    super().__init__(name=name)
    self.transp_conv1 = hk.Conv2DTranspose(
        output_channels=n_outputs * 2, kernel_shape=4, stride=2,
        padding='SAME', name='transp_conv_1')
    self.transp_conv2 = hk.Conv2DTranspose(
        output_channels=n_outputs, kernel_shape=4, stride=2, padding='SAME',
        name='transp_conv_2')

  def __call__(self, inputs: jax.Array, *, is_training: bool) -> jax.Array:
    """[B, H, W, C] -> [B, 4H, 4W, n_outputs]."""
    return self.transp_conv2(jax.nn.relu(self.transp_conv1(inputs)))


class Conv3DUpsample(hk.Module):
  """Upsamples video 2x per step in time and/or space with 3D transposed convs."""

  def __init__(self, *, n_outputs: int, n_time_upsamples: int = 2,
               n_space_upsamples: int = 4, name: Optional[str] = None):
    super().__init__(name=name)
    self._n_outputs = n_outputs
    self._n_time_upsamples = n_time_upsamples
    self._n_space_upsamples = n_space_upsamples

  def __call__(self, x: jax.Array, *, is_training: bool) -> jax.Array:
    """[B, T, H, W, C] -> [B, T * 2**nt, H * 2**ns, W * 2**ns, n_outputs]."""
    steps = max(self._n_time_upsamples, self._n_space_upsamples)
    for i in range(steps):
      t_stride = 2 if i < self._n_time_upsamples else 1
      s_stride = 2 if i < self._n_space_upsamples else 1
      x = hk.Conv3DTranspose(
          output_channels=self._n_outputs * 2 ** (steps - 1 - i),
          stride=[t_stride, s_stride, s_stride], kernel_shape=[4, 4, 4],
          name=f'conv3d_transpose_{i}')(x)
      if i != steps - 1:
        x = jax.nn.relu(x)
    return x


class ImagePreprocessor(PositionalPreprocessor):
  """Featurizes images [B, H, W, C] or video [B, T, H, W, C] into [B, N, C'].

  prep_type:
    'conv': conv + max-pool downsampling by `spatial_downsample` (a power of 4).
    'conv1x1': a 1x1 convolution with stride `spatial_downsample`.
    'patches': space-to-depth blocks of spatial_downsample^2 (x temporal_downsample)
      pixels, optionally followed by a linear layer (`conv_after_patching`).
    'pixels': raw pixels, subsampled by striding.
  `conv_padding` ('conv' only): Conv2DDownsample's padding, 'same' (published) or
  'torch' (transformers' port).
  Then a position encoding over the remaining index dims is concatenated (or added);
  `lazy_position_features` leaves a Fourier one for the chunked consumers to expand
  (PositionalPreprocessor).
  """

  def __init__(self, *, prep_type: str = 'conv', spatial_downsample: int = 4,
               temporal_downsample: int = 1,
               position_encoding_type: str = 'fourier',
               n_extra_pos_mlp: int = 0, num_channels: int = 64,
               conv_after_patching: bool = False,
               conv2d_use_batchnorm: bool = True,
               concat_or_add_pos: str = 'concat',
               project_pos_dim: int = -1,
               trainable_position_encoding_kwargs: Optional[dict] = None,
               fourier_position_encoding_kwargs: Optional[dict] = None,
               lazy_position_features: bool = False,
               conv_padding: str = 'same',
               name: Optional[str] = None):
    super().__init__(
        position_encoding_type=position_encoding_type,
        lazy_position_features=lazy_position_features,
        project_pos_dim=project_pos_dim,
        trainable_position_encoding_kwargs=trainable_position_encoding_kwargs,
        fourier_position_encoding_kwargs=fourier_position_encoding_kwargs,
        n_extra_pos_mlp=n_extra_pos_mlp, concat_or_add_pos=concat_or_add_pos,
        name=name)
    checks.check_choice(prep_type, PREP_TYPES, name='prep_type')
    checks.check_positive(spatial_downsample, name='spatial_downsample')
    checks.check_positive(temporal_downsample, name='temporal_downsample')
    self._prep_type = prep_type
    self._spatial_downsample = spatial_downsample
    self._temporal_downsample = temporal_downsample
    self._num_channels = num_channels
    self._conv_after_patching = conv_after_patching
    if prep_type == 'conv':
      num_layers = math.log(spatial_downsample, 4)
      if num_layers != round(num_layers) or temporal_downsample != 1:
        raise ValueError("prep_type='conv' needs spatial_downsample a power of 4 "
                         f'(got {spatial_downsample}) and temporal_downsample 1 '
                         f'(got {temporal_downsample}).')
      self.convnet = Conv2DDownsample(num_layers=int(round(num_layers)),
                                      num_channels=num_channels,
                                      use_batchnorm=conv2d_use_batchnorm,
                                      padding=conv_padding)
    elif prep_type == 'conv1x1':
      if temporal_downsample != 1:
        raise ValueError("prep_type='conv1x1' cannot downsample in time "
                         f'(temporal_downsample={temporal_downsample}).')
      self.convnet_1x1 = ops.Conv1x1(num_channels, stride=spatial_downsample)

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               pos: Optional[jax.Array] = None):
    """Returns (inputs with positions [B, N, C'], None, inputs without positions).

    With lazy_position_features the first is a position.LazyFourierFeatures.
    """
    if inputs.ndim not in (4, 5):
      raise ValueError('inputs must have rank 4 [B, H, W, C] or 5 [B, T, H, W, C], '
                       f'got shape {inputs.shape}.')
    if self._prep_type == 'conv':
      conv = self.convnet if inputs.ndim == 4 else hk.BatchApply(self.convnet)
      inputs = conv(inputs, is_training=is_training)
    elif self._prep_type == 'conv1x1':
      conv = self.convnet_1x1 if inputs.ndim == 4 else hk.BatchApply(
          self.convnet_1x1)
      inputs = conv(inputs)
    elif self._prep_type == 'patches':
      inputs = space_to_depth(inputs,
                              temporal_block_size=self._temporal_downsample,
                              spatial_block_size=self._spatial_downsample)
      if inputs.ndim == 5 and inputs.shape[1] == 1:  # e.g. two flow frames merged
        inputs = jnp.squeeze(inputs, axis=1)
      if self._conv_after_patching:
        inputs = hk.Linear(self._num_channels, name='patches_linear')(inputs)
    else:  # pixels
      s, t = self._spatial_downsample, self._temporal_downsample
      inputs = (inputs[:, ::s, ::s] if inputs.ndim == 4
                else inputs[:, ::t, ::s, ::s])
    with_pos, without_pos = self._build_network_inputs(inputs, pos)
    return with_pos, None, without_pos


class ImagePostprocessor(hk.Module):
  """Maps decoder outputs back to images or video.

  'pixels' passes through; 'conv1x1' projects to `n_outputs`; 'conv' upsamples with
  transposed convolutions (3D when `temporal_upsample` > 1); 'patches' undoes
  space-to-depth. `input_reshape_size` first reshapes [B, N, C] to [B, *size, C].
  """

  def __init__(self, *, postproc_type: str = 'pixels', spatial_upsample: int = 1,
               temporal_upsample: int = 1, n_outputs: int = -1,
               input_reshape_size: Optional[Sequence[int]] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    checks.check_choice(postproc_type, POSTPROC_TYPES, name='postproc_type')
    self._postproc_type = postproc_type
    self._spatial_upsample = spatial_upsample
    self._temporal_upsample = temporal_upsample
    self._input_reshape_size = input_reshape_size
    if postproc_type == 'pixels' and (spatial_upsample != 1 or
                                      temporal_upsample != 1):
      raise ValueError("postproc_type='pixels' cannot upsample.")
    if postproc_type in ('conv', 'conv1x1') and n_outputs <= 0:
      raise ValueError(f'n_outputs is required for postproc_type={postproc_type!r}.')
    if postproc_type == 'conv1x1':
      self.conv1x1 = ops.Conv1x1(n_outputs, stride=spatial_upsample)
    elif postproc_type == 'conv':
      if temporal_upsample != 1:
        self.convnet = Conv3DUpsample(
            n_outputs=n_outputs,
            n_time_upsamples=int(round(np.log2(temporal_upsample))),
            n_space_upsamples=int(round(np.log2(spatial_upsample))))
      else:
        self.convnet = Conv2DUpsample(n_outputs=n_outputs)

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               pos: Optional[jax.Array] = None, modality_sizes=None) -> jax.Array:
    if self._input_reshape_size is not None:
      inputs = jnp.reshape(inputs, [inputs.shape[0], *self._input_reshape_size,
                                    inputs.shape[-1]])
    if self._postproc_type == 'conv':
      conv = self.convnet
      if inputs.ndim == 5 and self._temporal_upsample == 1:
        conv = hk.BatchApply(conv)
      inputs = conv(inputs, is_training=is_training)
    elif self._postproc_type == 'conv1x1':
      inputs = self.conv1x1(inputs)
    elif self._postproc_type == 'patches':
      inputs = depth_to_space(inputs, temporal_block_size=self._temporal_upsample,
                              spatial_block_size=self._spatial_upsample)
    return inputs
