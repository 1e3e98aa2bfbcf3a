"""Perceiver decoders: they build output queries and cross-attend them into the latents.

Every decoder has the same three methods:
  decoder_query(inputs, *, modality_sizes, inputs_without_pos, subsampled_points)
      -> queries [B, O, E]
  __call__(query, z, *, is_training, query_mask) -> outputs
  output_modality_sizes(subsampled_points) -> {modality: O_m} or None

Shape letters: B batch, N inputs, M latents, D latent channels, O outputs, E query
channels, F output channels.
"""
import abc
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.blocks import checks
from perceiver_agents.blocks import chunking
from perceiver_agents.blocks import ops
from perceiver_agents.blocks import protocols
from perceiver_agents.blocks.attention import CrossAttention
from perceiver_agents.blocks.attention import make_cross_attention_mask
from perceiver_agents.blocks.position import build_position_encoding
from perceiver_agents.blocks.position import positions_of_indices
from perceiver_agents.blocks.position import TrainablePositionEncoding

IndexDims = Union[int, Sequence[int]]


def split_modalities(modality_sizes: Mapping[str, int],
                     inputs: jax.Array) -> dict:
  """Splits [B, sum(sizes), C] into {modality: [B, size, C]}, modalities sorted by name."""
  expected = sum(modality_sizes.values())
  if inputs.shape[1] != expected:
    raise ValueError(f'inputs have {inputs.shape[1]} positions but modality_sizes '
                     f'{dict(modality_sizes)} add up to {expected}.')
  outputs, start = {}, 0
  for modality in sorted(modality_sizes):
    size = modality_sizes[modality]
    outputs[modality] = inputs[:, start:start + size]
    start += size
  return outputs


class Decoder(hk.Module, metaclass=abc.ABCMeta):
  """Interface of the Perceiver decoders."""

  @abc.abstractmethod
  def decoder_query(self, inputs: jax.Array, *, modality_sizes=None,
                    inputs_without_pos=None, subsampled_points=None):
    """Returns the output queries [B, O, E] (None if the decoder needs none)."""

  @abc.abstractmethod
  def __call__(self, query, z: jax.Array, *, is_training: bool,
               query_mask: Optional[jax.Array] = None):
    """Decodes the latents `z` [B, M, D] at `query`."""

  @property
  @abc.abstractmethod
  def num_outputs(self) -> int:
    """O, the number of outputs without subsampling."""

  def output_modality_sizes(self, subsampled_points=None) -> Optional[dict]:
    """Per-modality output counts for multimodal postprocessing, else None."""
    del subsampled_points
    return None


class BasicDecoder(Decoder):
  """Cross-attends position-encoded output queries into the latents.

  Queries are a position encoding of `output_index_dims` (optionally only at
  `subsampled_points`), optionally concatenated with the preprocessed inputs; with
  position_encoding_type='none' the queries must come from elsewhere (e.g. a
  MultimodalDecoder or FlowDecoder). The output is projected to `output_num_channels`
  when `final_project`.

  `decode_chunk_size` decodes at most that many queries at a time (cross-attention,
  MLP and projection), so that one chunk's attention logits [B, H, chunk, M] are alive
  instead of all O queries' [B, H, O, M]; the outputs are the same. None decodes all
  queries at once. `lazy_queries` (Fourier queries only) keeps the queries
  unexpanded: `decoder_query` returns a position.LazyFourierFeatures [1, O, E] (the
  grid's or the subsampled points' positions) that a chunked decoder expands one chunk
  at a time.
  """

  def __init__(self, *, output_num_channels: int,
               position_encoding_type: str = 'trainable',
               output_index_dims: Optional[IndexDims] = None,
               qk_channels: Optional[int] = None,
               v_channels: Optional[int] = None,
               use_query_residual: bool = False,
               output_w_init: Optional[Callable[..., Any]] = None,
               concat_preprocessed_input: bool = False,
               num_heads: int = 1,
               final_project: bool = True,
               project_pos_dim: int = -1,
               trainable_position_encoding_kwargs: Optional[dict] = None,
               fourier_position_encoding_kwargs: Optional[dict] = None,
               decode_chunk_size: Optional[int] = None,
               lazy_queries: bool = False,
               name: str = 'basic_decoder'):
    super().__init__(name=name)
    checks.check_positive(num_heads, name='num_heads')
    checks.check_positive(output_num_channels, name='output_num_channels')
    chunking.check_chunk_size(decode_chunk_size, name='decode_chunk_size')
    self._decode_chunk_size = decode_chunk_size
    if lazy_queries and (position_encoding_type != 'fourier' or project_pos_dim > 0
                         or concat_preprocessed_input):
      raise ValueError("lazy_queries needs position_encoding_type='fourier' without "
                       'project_pos_dim or concat_preprocessed_input.')
    self._lazy_queries = lazy_queries
    if isinstance(output_index_dims, (int, np.integer)):
      output_index_dims = (int(output_index_dims),)
    self._output_index_dims = (tuple(output_index_dims)
                               if output_index_dims is not None else None)
    if self._output_index_dims is not None and (
        not self._output_index_dims or min(self._output_index_dims) < 1):
      raise ValueError('output_index_dims must be positive sizes, got '
                       f'{self._output_index_dims}.')
    self._position_encoding_type = position_encoding_type
    self.output_pos_enc = None
    if position_encoding_type != 'none':
      if self._output_index_dims is None:
        raise ValueError('output_index_dims is required unless '
                         "position_encoding_type='none'.")
      self.output_pos_enc = build_position_encoding(
          position_encoding_type, index_dims=self._output_index_dims,
          project_pos_dim=project_pos_dim,
          trainable_position_encoding_kwargs=trainable_position_encoding_kwargs,
          fourier_position_encoding_kwargs=fourier_position_encoding_kwargs)
    self._output_num_channels = output_num_channels
    self._qk_channels = qk_channels
    self._v_channels = v_channels
    self._use_query_residual = use_query_residual
    self._output_w_init = output_w_init
    self._concat_preprocessed_input = concat_preprocessed_input
    self._num_heads = num_heads
    self._final_project = final_project

  @property
  def num_outputs(self) -> int:
    if self._output_index_dims is None:
      raise ValueError('This decoder has no output_index_dims.')
    return int(np.prod(self._output_index_dims))

  def decoder_query(self, inputs, *, modality_sizes=None,
                    inputs_without_pos=None, subsampled_points=None):
    """Queries [B, O, E] for `inputs` [B, N, C]; O = len(subsampled_points) if given.

    Queries that are the same for every example (a position encoding of the whole
    output grid, not concatenated with the inputs) come back as [O, E] without the
    batch axis, so that the cross-attention projects them once.
    """
    del modality_sizes
    if self.output_pos_enc is None:
      raise ValueError("position_encoding_type='none': this decoder builds no "
                       'queries; pass them in from elsewhere.')
    batch = inputs.shape[0]
    if subsampled_points is not None and self._lazy_queries:
      # [1, n, E] unexpanded (no features, the points' positions), shared.
      pos = positions_of_indices(subsampled_points, self._output_index_dims)[None]
      query = self.output_pos_enc.lazy(jnp.zeros(pos.shape[:2] + (0,)), pos=pos)
    elif subsampled_points is not None:
      pos = positions_of_indices(subsampled_points, self._output_index_dims)
      pos = jnp.broadcast_to(pos[None], (batch,) + pos.shape)  # [B, O, d]
      query = self.output_pos_enc(batch_size=batch, pos=pos)
      query = jnp.reshape(query, [batch, -1, query.shape[-1]])
      if query.shape[1] != pos.shape[1]:
        # A learned table ignores `pos` and returns all O rows: keep the asked ones.
        query = jnp.take(query, jnp.asarray(subsampled_points), axis=1)
    elif self._lazy_queries:
      # [1, O, E] unexpanded (no features, the grid's positions), shared.
      query = self.output_pos_enc.lazy(jnp.zeros((1, self.num_outputs, 0)))
    else:
      query = self.output_pos_enc(batch_size=1)[0]  # [O, E], shared
    if self._concat_preprocessed_input:
      if inputs_without_pos is None:
        raise ValueError('inputs_without_pos is required when '
                         'concat_preprocessed_input=True.')
      if query.ndim == 2:
        query = ops.broadcast_batch(query, batch)  # [B, O, E]
      query = jnp.concatenate([inputs_without_pos, query], axis=-1)
    return query

  def __call__(self, query, z, *, is_training, query_mask=None, postprocessor=None):
    """Maps queries [B, O, E] (or shared [O, E]) and latents [B, M, D] to [B, O, F]
    (F = E without projection).

    `query` may also be lazy (a position.LazyFourierFeatures or PaddedQueries, [B, O, E]
    or shared [1, O, E]): expanded one decode chunk at a time. `postprocessor`, a
    protocols.PositionWisePostprocessor (outputs [B, c, F] to a pytree of [B, c, ...]
    arrays), is applied to each chunk's outputs, so that [B, O, F] is never alive in
    full either; the result is then its outputs for all O queries.
    """
    checks.check_rank(z, 3, name='z')
    checks.check_floating(z, name='z')
    if query.ndim not in (2, 3):
      raise ValueError('query must be [B, O, E] or [O, E] (shared by every example), '
                       f'got shape {tuple(query.shape)}.')
    # Shared queries travel as [1, O, E]: chunks are cut along O, axis 1.
    shared = query.ndim == 2 or (protocols.is_lazy(query) and query.shape[0] == 1)
    if query_mask is not None:
      checks.check_mask(query_mask, (z.shape[0], query.shape[-2]), name='query_mask')
    if postprocessor is not None and not protocols.is_position_wise(postprocessor):
      raise ValueError('BasicDecoder applies only a position-wise postprocessor '
                       f'(position_wise = True) chunk by chunk, got {postprocessor!r}.')
    cross_attend = CrossAttention(
        dropout_prob=0.0, num_heads=self._num_heads, widening_factor=1,
        shape_for_attn='kv', qk_channels=self._qk_channels,
        v_channels=self._v_channels,
        use_query_residual=self._use_query_residual)
    project = (ops.Linear(self._output_num_channels, float32_output=True,
                             w_init=self._output_w_init, name='output')
               if self._final_project else None)

    def decode(chunk):
      """Queries [B or 1, c, E] (and their mask [B, c]) -> outputs [B, c, F]."""
      attention_mask = None
      if chunk['mask'] is not None:
        attention_mask = make_cross_attention_mask(
            chunk['mask'], jnp.ones(z.shape[:2], dtype=bool))  # [B, c, M]
      queries = protocols.materialize(chunk['query'])
      output = cross_attend(queries[0] if shared else queries, z,
                            is_training=is_training,
                            attention_mask=attention_mask)  # [B, c, E]
      if project is not None:
        output = project(output)  # [B, c, F]
      if postprocessor is None:
        return output
      return postprocessor(output, is_training=is_training)

    return chunking.map_chunks(
        decode, {'query': query[None] if query.ndim == 2 else query,
                 'mask': query_mask},
        chunk_size=self._decode_chunk_size)  # [B, O, F]


class ClassificationDecoder(Decoder):
  """One learned query decoded to `num_classes` logits [B, num_classes]."""

  def __init__(self, num_classes: int, *, name: str = 'classification_decoder',
               **decoder_kwargs):
    super().__init__(name=name)
    checks.check_positive(num_classes, name='num_classes')
    self._num_classes = num_classes
    self.decoder = BasicDecoder(output_index_dims=(1,),
                                output_num_channels=num_classes,
                                **decoder_kwargs)

  @property
  def num_outputs(self) -> int:
    return 1

  def decoder_query(self, inputs, *, modality_sizes=None,
                    inputs_without_pos=None, subsampled_points=None):
    return self.decoder.decoder_query(
        inputs, modality_sizes=modality_sizes,
        inputs_without_pos=inputs_without_pos,
        subsampled_points=subsampled_points)

  def __call__(self, query, z, *, is_training, query_mask=None):
    return self.decoder(query, z, is_training=is_training)[:, 0, :]


class ProjectionDecoder(Decoder):
  """No cross-attention: mean-pools the latents and projects to logits [B, F]."""

  def __init__(self, num_classes: int, *, name: str = 'projection_decoder'):
    super().__init__(name=name)
    checks.check_positive(num_classes, name='num_classes')
    self._num_classes = num_classes

  @property
  def num_outputs(self) -> int:
    return 1

  def decoder_query(self, inputs, *, modality_sizes=None,
                    inputs_without_pos=None, subsampled_points=None):
    return None

  def __call__(self, query, z, *, is_training, query_mask=None):
    checks.check_rank(z, 3, name='z')
    checks.check_floating(z, name='z')
    pooled = jnp.mean(z, axis=1)  # [B, D]
    return ops.Linear(self._num_classes, float32_output=True, w_init=jnp.zeros,
                         name='logits')(pooled)


class FlowDecoder(Decoder):
  """Optical flow: queries are the preprocessed first-frame features at every pixel.

  Decodes [B, H*W, E] queries to flow [B, H, W, F] divided by `rescale_factor`.
  """

  def __init__(self, output_image_shape: Sequence[int], *,
               output_num_channels: int = 2, rescale_factor: float = 100.0,
               name: str = 'flow_decoder', **decoder_kwargs):
    super().__init__(name=name)
    if len(output_image_shape) != 2:
      raise ValueError('output_image_shape must be (H, W), got '
                       f'{tuple(output_image_shape)}.')
    self._output_image_shape = tuple(output_image_shape)
    self._rescale_factor = rescale_factor
    self.decoder = BasicDecoder(output_num_channels=output_num_channels,
                                position_encoding_type='none',
                                **decoder_kwargs)

  @property
  def num_outputs(self) -> int:
    return int(np.prod(self._output_image_shape))

  def decoder_query(self, inputs, *, modality_sizes=None,
                    inputs_without_pos=None, subsampled_points=None):
    if subsampled_points is not None:
      raise ValueError('FlowDecoder does not support subsampled_points.')
    if inputs.shape[1] != self.num_outputs:
      raise ValueError(f'inputs have {inputs.shape[1]} positions, expected '
                       f'H*W = {self.num_outputs} for {self._output_image_shape}.')
    return inputs

  def __call__(self, query, z, *, is_training, query_mask=None):
    preds = self.decoder(query, z, is_training=is_training,
                         query_mask=query_mask) / self._rescale_factor
    return jnp.reshape(preds, (preds.shape[0],) + self._output_image_shape
                       + (preds.shape[-1],))  # [B, H, W, F]


class BasicVideoAutoencodingDecoder(Decoder):
  """Queries a [T, H, W] video grid; decodes to [B, T, H, W, F] without subsampling."""

  def __init__(self, *, output_shape: Sequence[int],
               position_encoding_type: str,
               name: str = 'basic_video_autoencoding_decoder',
               **decoder_kwargs):
    super().__init__(name=name)
    if len(output_shape) != 3:
      raise ValueError('output_shape must be (T, H, W), got '
                       f'{tuple(output_shape)}.')
    self._output_shape = tuple(output_shape)
    self.decoder = BasicDecoder(output_index_dims=self._output_shape,
                                position_encoding_type=position_encoding_type,
                                **decoder_kwargs)

  @property
  def num_outputs(self) -> int:
    return int(np.prod(self._output_shape))

  def decoder_query(self, inputs, *, modality_sizes=None,
                    inputs_without_pos=None, subsampled_points=None):
    return self.decoder.decoder_query(
        inputs, modality_sizes=modality_sizes,
        inputs_without_pos=inputs_without_pos,
        subsampled_points=subsampled_points)

  def __call__(self, query, z, *, is_training, query_mask=None):
    output = self.decoder(query, z, is_training=is_training)
    if output.shape[1] != self.num_outputs:  # subsampled: stay flat
      return output
    return jnp.reshape(output, (output.shape[0],) + self._output_shape
                       + (output.shape[-1],))


@jax.tree_util.register_pytree_node_class
class PaddedQueries:
  """Rows [b, O, E + P] = queries, then a padding vector repeated on every row: lazy.

  Holds `queries` [b, O, E] (an array or itself lazy, e.g. a LazyFourierFeatures) and
  `padding` [b, 1, P]; b is the batch, or 1 for queries shared by every example.
  `materialize()` builds the rows; `chunking.map_chunks` slices `queries` along O and
  hands `padding` to every chunk whole, so a chunked decoder builds one chunk's rows
  at a time. `shape` and `ndim` describe the rows.
  """

  def __init__(self, queries, padding: jax.Array):
    self.queries = queries
    self.padding = padding

  @property
  def shape(self):
    return tuple(self.queries.shape[:2]) + (
        self.queries.shape[2] + self.padding.shape[2],)

  @property
  def ndim(self) -> int:
    return 3

  def materialize(self) -> jax.Array:
    rows = protocols.materialize(self.queries)  # [b, c, E]
    padding = jnp.broadcast_to(self.padding, rows.shape[:2] + self.padding.shape[2:])
    return jnp.concatenate([rows, padding.astype(rows.dtype)], axis=-1)

  def tree_flatten(self):
    return (self.queries, self.padding), None

  @classmethod
  def tree_unflatten(cls, aux, leaves):
    del aux
    return cls(*leaves)


class MultimodalDecoder(Decoder):
  """Decodes several modalities with one shared cross-attention.

  Each modality's decoder only builds that modality's queries; the queries are padded
  with a learned per-modality vector to a common width (widest + `min_padding_size`)
  and concatenated, modalities sorted by name.

  With `decode_chunk_size` (passed on to the shared decoder) nothing of the size of
  all queries is built: `decoder_query` returns {modality: PaddedQueries}, unexpanded
  (with `lazy_queries` in the modality decoders, a Fourier grid's queries are only
  its positions), and each modality is decoded on its own, chunk by chunk. Given the
  model's postprocessor, the decoder applies it too, each modality's position-wise
  postprocessor inside the chunks (`postprocesses_in_chunks`): decoding a whole video
  never holds its [O, E] queries or [O, F] decoder outputs. Each query is decoded by
  the same operations either way (each output row depends on its query row only).
  """

  def __init__(self, *, modalities: Mapping[str, Decoder],
               output_num_channels: int, min_padding_size: int = 2,
               name: str = 'multimodal_decoder', **decoder_kwargs):
    super().__init__(name=name)
    if not modalities:
      raise ValueError('modalities must name at least one decoder.')
    self._modalities = dict(modalities)
    self._min_padding_size = min_padding_size
    self._decoder = BasicDecoder(output_num_channels=output_num_channels,
                                 position_encoding_type='none',
                                 **decoder_kwargs)
    self._chunked = decoder_kwargs.get('decode_chunk_size') is not None

  @property
  def postprocesses_in_chunks(self) -> bool:
    """Whether a Perceiver should hand its postprocessor to this decoder."""
    return self._chunked

  @property
  def num_outputs(self) -> int:
    return sum(d.num_outputs for d in self._modalities.values())

  def output_modality_sizes(self, subsampled_points=None) -> dict:
    points = subsampled_points or {}
    return {m: (len(points[m]) if points.get(m) is not None else d.num_outputs)
            for m, d in self._modalities.items()}

  def decoder_query(self, inputs, *, modality_sizes=None,
                    inputs_without_pos=None, subsampled_points=None):
    if modality_sizes is None:
      raise ValueError('MultimodalDecoder needs the modality_sizes of its inputs.')
    inputs = split_modalities(modality_sizes, inputs)
    points = subsampled_points or {}
    unknown = set(points) - set(self._modalities)
    if unknown:
      raise ValueError(f'subsampled_points names unknown modalities {sorted(unknown)}.')
    without_pos = inputs_without_pos or {}
    queries = {
        m: decoder.decoder_query(inputs[m], inputs_without_pos=without_pos.get(m),
                                 subsampled_points=points.get(m))
        for m, decoder in self._modalities.items()}
    width = max(q.shape[-1] for q in queries.values()) + self._min_padding_size

    def padded(modality, query):
      """PaddedQueries [b, O_m, width]; b = 1 for queries shared by every example."""
      if query.ndim == 2:  # shared [O_m, E_m]
        query = query[None]
      elif not protocols.is_lazy(query):  # e.g. a video's [B, T, H, W, E]
        query = jnp.reshape(query, [query.shape[0], -1, query.shape[-1]])
      padding = TrainablePositionEncoding(
          index_dim=1, num_channels=width - query.shape[-1], init_scale=0.02,
          name=f'{modality}_padding')(None)[None]  # [1, 1, width - E_m]
      return PaddedQueries(query, padding)

    queries = {m: padded(m, queries[m]) for m in sorted(queries)}
    if self._chunked:
      return queries
    batch = inputs[next(iter(inputs))].shape[0]
    return jnp.concatenate(
        [jnp.broadcast_to(q.materialize(), (batch,) + q.shape[1:])
         for q in queries.values()], axis=1)  # [B, O, width]

  def __call__(self, query, z, *, is_training, query_mask=None, postprocessor=None):
    """Decodes `decoder_query`'s queries: [B, O, E], or {modality: PaddedQueries}
    when chunked.

    Returns [B, O, F] (modalities concatenated, sorted by name), or with a
    `postprocessor` (chunked only) what it returns: a multimodal postprocessor's
    (protocols.MultimodalPostprocessor) {modality: output}, each modality's
    position-wise postprocessor (protocols.PositionWisePostprocessor) applied chunk by
    chunk.
    """
    if not isinstance(query, Mapping):
      if postprocessor is not None:
        raise ValueError('MultimodalDecoder applies a postprocessor only when it '
                         'decodes in chunks (decode_chunk_size).')
      return self._decoder(query, z, is_training=is_training, query_mask=query_mask)
    sizes = {m: q.shape[1] for m, q in query.items()}
    masks = ({} if query_mask is None else
             split_modalities(sizes, query_mask[..., None]))  # {m: [B, O_m, 1]}
    parts = protocols.modality_postprocessors(postprocessor)
    outputs = {}
    for m in sorted(query):
      post = parts.get(m)
      in_chunks = protocols.is_position_wise(post)
      out = self._decoder(
          query[m], z, is_training=is_training,
          query_mask=masks[m][..., 0] if m in masks else None,
          postprocessor=post if in_chunks else None)
      outputs[m] = out if post is None or in_chunks else post(
          out, is_training=is_training)
    if parts:
      return {m: outputs[m] for m in parts}
    flat = jnp.concatenate([outputs[m] for m in sorted(outputs)], axis=1)
    if postprocessor is None:
      return flat
    return postprocessor(flat, is_training=is_training, modality_sizes=sizes)
