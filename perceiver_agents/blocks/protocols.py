"""The interfaces blocks accept besides arrays, declared in one place.

  LazyArray                 rows [B, N, C] computed on demand (position.LazyFourierFeatures,
                            decoders.PaddedQueries): chunked consumers slice its leaves
                            along N and materialise one chunk at a time.
  PositionWisePostprocessor a postprocessor whose output row o depends on input row o only,
                            so a chunked decoder may apply it chunk by chunk.
  MultimodalPostprocessor   a postprocessor of {modality: outputs}, holding one
                            postprocessor per modality.
  ChunkPostprocessingDecoder a decoder that takes the model's postprocessor and applies
                            it while it decodes (decoders.MultimodalDecoder).
"""
from typing import Any, Mapping, Optional, Protocol, Tuple, runtime_checkable

import jax


@runtime_checkable
class LazyArray(Protocol):
  """A pytree standing for the array `materialize()` returns; `shape`, `ndim` describe it."""

  @property
  def shape(self) -> Tuple[int, ...]: ...

  @property
  def ndim(self) -> int: ...

  def materialize(self) -> jax.Array: ...


def is_lazy(x: Any) -> bool:
  """Whether `x` is a LazyArray (not a plain array)."""
  return isinstance(x, LazyArray)


def materialize(x: Any) -> jax.Array:
  """`x` itself, or the rows of a LazyArray."""
  return x.materialize() if is_lazy(x) else x


@runtime_checkable
class PositionWisePostprocessor(Protocol):
  """outputs [B, c, F] -> a pytree of [B, c, ...], row by row (`position_wise = True`)."""

  position_wise: bool

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               modality_sizes: Optional[Mapping[str, int]] = None) -> Any: ...


def is_position_wise(postprocessor: Any) -> bool:
  """Whether `postprocessor` declares itself position-wise."""
  return (isinstance(postprocessor, PositionWisePostprocessor) and
          bool(postprocessor.position_wise))


@runtime_checkable
class MultimodalPostprocessor(Protocol):
  """{modality: postprocessor}; called on the concatenated outputs [B, O, F]."""

  modalities: Mapping[str, Any]

  def __call__(self, inputs: jax.Array, *, is_training: bool,
               modality_sizes: Optional[Mapping[str, int]] = None) -> Any: ...


def modality_postprocessors(postprocessor: Any) -> Mapping[str, Any]:
  """A multimodal postprocessor's per-modality postprocessors, else {}."""
  if isinstance(postprocessor, MultimodalPostprocessor):
    return postprocessor.modalities
  return {}


@runtime_checkable
class ChunkPostprocessingDecoder(Protocol):
  """A decoder that applies the model's postprocessor itself, chunk by chunk."""

  postprocesses_in_chunks: bool

  def __call__(self, query: Any, z: jax.Array, *, is_training: bool,
               query_mask: Optional[jax.Array] = None,
               postprocessor: Any = None) -> Any: ...


def postprocesses_in_chunks(decoder: Any) -> bool:
  """Whether `decoder` takes the model's postprocessor (ChunkPostprocessingDecoder)."""
  return (isinstance(decoder, ChunkPostprocessingDecoder) and
          bool(decoder.postprocesses_in_chunks))
