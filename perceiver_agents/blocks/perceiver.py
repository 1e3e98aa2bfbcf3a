"""The Perceiver encoder (cross-attend into latents, then latent self-attention) and the
Perceiver wrapper (preprocessor -> encoder -> decoder -> postprocessor).

Shape letters: B batch, N input positions, C input channels, M latents, D latent
channels, O output queries, E query channels.
"""
from typing import Any, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_agents.blocks import checks
from perceiver_agents.blocks import chunking
from perceiver_agents.blocks import ops
from perceiver_agents.blocks import protocols
from perceiver_agents.blocks.attention import CrossAttention
from perceiver_agents.blocks.attention import make_cross_attention_mask
from perceiver_agents.blocks.attention import SelfAttention
from perceiver_agents.blocks.position import TrainablePositionEncoding


class PerceiverEncoder(hk.Module):
  """Cross-attends inputs into a learned latent array, then self-attends the latents.

  The latent stack is `num_blocks` applications of one block of
  `num_self_attends_per_block` self-attention layers, whose weights are shared across
  blocks (num_blocks=1 means no sharing).

  Perceiver IO cross-attends once. The original Perceiver cross-attends again before
  every block (`cross_attend_every_block=True`); the repeated cross-attends reuse the
  first one's weights when `share_cross_attend_weights` (default), or each block gets
  its own cross-attention otherwise.

  Memory options (none changes the parameters or, beyond float rounding, the outputs):
  `cross_attend_chunk_size` attends at most that many latents at a time in the
  cross-attention(s), so one chunk's logits [B, H, chunk, N] are alive instead of
  [B, H, M, N] (large N, e.g. full-resolution flow); `cross_attend_kv_chunk_size`
  instead projects and attends the inputs that many at a time (online softmax), so
  neither the keys and values [B, N, C] nor the logits are alive in full.
  `remat_latents` rematerialises each latent self-attention layer in the backward pass
  (`ops.remat`): training keeps only each layer's input [B, M, D], not its attention and
  MLP activations, and recomputes them in the backward (about one more forward of the
  latent stack).
  """

  def __init__(self, *, num_self_attends_per_block: int = 6,
               num_blocks: int = 8, z_index_dim: int = 512,
               num_z_channels: int = 1024,
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               num_cross_attend_heads: int = 1,
               num_self_attend_heads: int = 8,
               cross_attend_widening_factor: int = 1,
               self_attend_widening_factor: int = 1,
               dropout_prob: float = 0.0,
               attention_dropout_prob: float = 0.0,
               z_pos_enc_init_scale: float = 0.02,
               cross_attention_shape_for_attn: str = 'kv',
               use_query_residual: bool = True,
               cross_attend_every_block: bool = False,
               share_cross_attend_weights: bool = True,
               cross_attend_chunk_size: Optional[int] = None,
               cross_attend_kv_chunk_size: Optional[int] = None,
               remat_latents: bool = False,
               name: str = 'perceiver_encoder'):
    super().__init__(name=name)
    chunking.check_chunk_size(cross_attend_chunk_size,
                              name='cross_attend_chunk_size')
    chunking.check_chunk_size(cross_attend_kv_chunk_size,
                              name='cross_attend_kv_chunk_size')
    if cross_attend_chunk_size is not None and cross_attend_kv_chunk_size is not None:
      raise ValueError('set at most one of cross_attend_chunk_size and '
                       'cross_attend_kv_chunk_size.')
    self._remat_latents = bool(remat_latents)
    for arg, value in (('num_self_attends_per_block', num_self_attends_per_block),
                       ('num_blocks', num_blocks), ('z_index_dim', z_index_dim),
                       ('num_z_channels', num_z_channels)):
      checks.check_positive(value, name=arg)
    checks.check_divisible(num_z_channels, num_self_attend_heads,
                           name='num_z_channels',
                           heads_name='num_self_attend_heads')
    checks.check_divisible(num_z_channels, num_cross_attend_heads,
                           name='num_z_channels',
                           heads_name='num_cross_attend_heads')
    self._num_blocks = num_blocks
    self._cross_attend_every_block = cross_attend_every_block
    self.z_pos_enc = TrainablePositionEncoding(
        index_dim=z_index_dim, num_channels=num_z_channels,
        init_scale=z_pos_enc_init_scale)

    def make_cross_attend():
      return CrossAttention(
          dropout_prob=dropout_prob,
          attention_dropout_prob=attention_dropout_prob,
          num_heads=num_cross_attend_heads,
          widening_factor=cross_attend_widening_factor,
          shape_for_attn=cross_attention_shape_for_attn,
          qk_channels=qk_channels, v_channels=v_channels,
          use_query_residual=use_query_residual,
          query_chunk_size=cross_attend_chunk_size,
          kv_chunk_size=cross_attend_kv_chunk_size)

    self.cross_attend = make_cross_attend()
    self.self_attends = [
        SelfAttention(num_heads=num_self_attend_heads,
                      dropout_prob=dropout_prob,
                      attention_dropout_prob=attention_dropout_prob,
                      qk_channels=qk_channels, v_channels=v_channels,
                      widening_factor=self_attend_widening_factor)
        for _ in range(num_self_attends_per_block)]
    self.cross_attends = [self.cross_attend]
    if cross_attend_every_block:
      for _ in range(num_blocks - 1):
        self.cross_attends.append(self.cross_attend if share_cross_attend_weights
                                  else make_cross_attend())

  def latents(self, inputs: Optional[jax.Array] = None) -> jax.Array:
    """The initial latent array: [M, D] (shared by every example), or [B, M, D]
    repeated for a batch of `inputs` [B, ...]."""
    return self.z_pos_enc(batch_size=None if inputs is None else inputs.shape[0])

  def __call__(self, inputs: jax.Array, z: jax.Array, *, is_training: bool,
               input_mask: Optional[jax.Array] = None) -> jax.Array:
    """Encodes `inputs` [B, N, C] into latents, starting from `z` [B, M, D].

    `z` may be [M, D], the same initial latents for every example (`latents()`): the
    first cross-attention then normalises and projects them once.
    `input_mask` [B, N] is truthy where an input position is valid. Returns [B, M, D].
    """
    checks.check_rank(inputs, 3, name='inputs')
    checks.check_floating(inputs, name='inputs')
    if z.ndim not in (2, 3):
      raise ValueError(f'z must be [B, M, D] or [M, D], got shape {tuple(z.shape)}.')
    attention_mask = None
    if input_mask is not None:
      checks.check_mask(input_mask, inputs.shape[:2], name='input_mask')
      attention_mask = make_cross_attention_mask(
          jnp.ones((inputs.shape[0], z.shape[-2]), dtype=bool), input_mask)  # [B, M, N]
    for block in range(self._num_blocks):
      if block == 0 or self._cross_attend_every_block:
        z = self.cross_attends[block](z, inputs, is_training=is_training,
                                      attention_mask=attention_mask)
      for self_attend in self.self_attends:
        if self._remat_latents:
          z = ops.remat(self_attend, lambda x, layer=self_attend: layer(
              x, is_training=is_training))(z)
        else:
          z = self_attend(z, is_training=is_training)
    return z


class Perceiver(hk.Module):
  """Perceiver IO: preprocessor -> encoder -> decoder -> postprocessor.

  The preprocessor maps a raw modality to [B, N, C] (flattening index dims and adding
  positions); the decoder makes output queries [B, O, E] and cross-attends them into
  the latents; the postprocessor maps decoder outputs to the task's outputs.
  """

  def __init__(self, *, encoder: PerceiverEncoder, decoder: hk.Module,
               input_preprocessor: Optional[hk.Module] = None,
               output_postprocessor: Optional[hk.Module] = None,
               name: str = 'perceiver'):
    super().__init__(name=name)
    self._encoder = encoder
    self._decoder = decoder
    self._input_preprocessor = input_preprocessor
    self._output_postprocessor = output_postprocessor

  def __call__(self, inputs: Any, *, is_training: bool,
               subsampled_output_points: Optional[Any] = None,
               pos: Optional[jax.Array] = None,
               input_mask: Optional[jax.Array] = None,
               query_mask: Optional[jax.Array] = None) -> Any:
    """Runs the model.

    Args:
      inputs: the raw input for the preprocessor, or [B, N, C] without one.
      is_training: enables dropout and batch-norm statistics updates.
      subsampled_output_points: optional flat output indices to decode (an int
        array, or a dict of them per modality for multimodal decoders).
      pos: optional positions for the preprocessor's position encoding.
      input_mask: optional [B, N], truthy for valid input positions.
      query_mask: optional [B, O], truthy for valid output queries.
    Returns:
      The decoder output, passed through the postprocessor if there is one.
    """
    modality_sizes, inputs_without_pos = None, None
    if self._input_preprocessor is not None:
      inputs, modality_sizes, inputs_without_pos = self._input_preprocessor(
          inputs, pos=pos, is_training=is_training)
    checks.check_rank(inputs, 3, name='inputs (after preprocessing)')
    latents = self._encoder.latents()  # [M, D], shared by every example
    query = self._decoder.decoder_query(
        inputs, modality_sizes=modality_sizes,
        inputs_without_pos=inputs_without_pos,
        subsampled_points=subsampled_output_points)  # [B, O, E] or shared [O, E]
    z = self._encoder(inputs, latents, is_training=is_training,
                      input_mask=input_mask)  # [B, M, D]
    if (self._output_postprocessor is not None
        and protocols.postprocesses_in_chunks(self._decoder)):
      # The decoder postprocesses as it decodes, chunk by chunk (MultimodalDecoder).
      return self._decoder(query, z, is_training=is_training, query_mask=query_mask,
                           postprocessor=self._output_postprocessor)
    outputs = self._decoder(query, z, is_training=is_training,
                            query_mask=query_mask)
    if self._output_postprocessor is not None:
      sizes = (self._decoder.output_modality_sizes(subsampled_output_points)
               or modality_sizes)
      outputs = self._output_postprocessor(outputs, is_training=is_training,
                                           modality_sizes=sizes)
    return outputs

