"""Memory options of the blocks: chunked decoding (BasicDecoder / FlowDecoder
`decode_chunk_size`), chunked encoder cross-attention (`cross_attend_chunk_size`),
rematerialised latent layers (`remat_latents`) and lazily expanded Fourier inputs
(position.LazyFourierFeatures). Each must leave the parameter tree and the outputs (or
gradients) unchanged."""
import pathlib
import sys

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import chex
from perceiver_agents.blocks import chunking
from perceiver_agents.blocks import decoders
from perceiver_agents.blocks import perceiver
from perceiver_agents.blocks import position

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

B, M, D, E = 2, 4, 8, 6


def _basic_decoder(chunk, query, z, mask):
  return decoders.BasicDecoder(
      output_num_channels=3, position_encoding_type='none', num_heads=2,
      qk_channels=8, decode_chunk_size=chunk)(query, z, is_training=False,
                                              query_mask=mask)


def _shapes(tree):
  return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


@pytest.mark.parametrize('num_queries,chunk', [(12, 4), (13, 4), (13, 5), (7, 100)])
def test_basic_decoder_chunked_equals_unchunked_with_query_mask(num_queries, chunk):
  query = helpers.rand(B, num_queries, E, seed=1)
  z = helpers.rand(B, M, D, seed=2)
  mask = np.random.RandomState(3).rand(B, num_queries) > 0.3
  mask[0, :] = False  # a whole row of queries that attend to nothing
  plain, params = helpers.init(lambda q, z, m: _basic_decoder(None, q, z, m),
                               query, z, mask)
  chunked = hk.transform(lambda q, z, m: _basic_decoder(chunk, q, z, m))
  # Same parameter tree (names, shapes), so the same checkpoints load.
  assert _shapes(jax.eval_shape(chunked.init, jax.random.PRNGKey(0), query, z, mask)) \
      == _shapes(params)
  want = jax.jit(plain.apply)(params, None, query, z, mask)
  got = jax.jit(chunked.apply)(params, None, query, z, mask)
  chex.assert_shape(got, (B, num_queries, 3))
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
  # Masked queries still decode to the output of a query that attends to nothing.
  np.testing.assert_allclose(got[0], np.broadcast_to(got[0, :1], got[0].shape),
                             atol=1e-6)


@pytest.mark.parametrize('chunk', [16, 7])
def test_flow_decoder_chunked_equals_unchunked(chunk):
  shape, channels = (4, 8), 5  # O = 32 queries: 2 chunks of 16, or 5 of 7 (padded)
  inputs = helpers.rand(B, 32, channels, seed=4)
  z = helpers.rand(B, M, D, seed=5)

  def flow(chunk_size):
    def fn(inputs, z):
      dec = decoders.FlowDecoder(shape, output_num_channels=2, rescale_factor=10.0,
                                 use_query_residual=False, decode_chunk_size=chunk_size)
      return dec(dec.decoder_query(inputs), z, is_training=False)
    return fn

  plain, params = helpers.init(flow(None), inputs, z)
  want = jax.jit(plain.apply)(params, None, inputs, z)
  got = jax.jit(hk.transform(flow(chunk)).apply)(params, None, inputs, z)
  chex.assert_shape(got, (B,) + shape + (2,))
  assert np.abs(np.asarray(want)).max() > 1e-3  # not a trivial all-zero output
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)


def _encoder_kwargs(**overrides):
  kwargs = dict(num_self_attends_per_block=3, num_blocks=2, z_index_dim=6,
                num_z_channels=8, num_self_attend_heads=2, num_cross_attend_heads=2)
  kwargs.update(overrides)
  return kwargs


def _encode(inputs, mask, *, is_training=False, **overrides):
  encoder = perceiver.PerceiverEncoder(**_encoder_kwargs(**overrides))
  return encoder(inputs, encoder.latents(inputs), is_training=is_training,
                 input_mask=mask)


class EncoderCrossAttendChunkingTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      ('cross_attend_chunk_size', 2),      # 6 latents: 3 chunks
      ('cross_attend_chunk_size', 4),      # 2 overlapping chunks
      ('cross_attend_kv_chunk_size', 5),   # 10 inputs: 2 chunks
      ('cross_attend_kv_chunk_size', 3))   # 4 chunks, the last overlapping
  def test_chunked_equals_unchunked(self, option, chunk):
    inputs = helpers.rand(B, 10, 4, seed=6)
    mask = np.random.RandomState(7).rand(B, 10) > 0.3
    mask[1, :] = False  # an example with no valid input at all
    mask[0, 9] = True
    plain, params = helpers.init(lambda x, m: _encode(x, m), inputs, mask)
    chunked = hk.transform(lambda x, m: _encode(x, m, **{option: chunk}))
    assert _shapes(jax.eval_shape(chunked.init, jax.random.PRNGKey(0), inputs, mask)) \
        == _shapes(params)
    chex.assert_trees_all_close(
        self.variant(chunked.apply)(params, None, inputs, mask),
        jax.jit(plain.apply)(params, None, inputs, mask),
        # kv chunks: online softmax, equal up to rounding
        atol=1e-6 if 'kv' not in option else 1e-5, rtol=1e-5)


def _flow_perceiver(inputs, *, decode_chunk_size=None, **encoder_options):
  """A tiny flow Perceiver (queries = inputs) on [B, 32, C] inputs or lazy ones."""
  model = perceiver.Perceiver(
      encoder=perceiver.PerceiverEncoder(**_encoder_kwargs(
          num_blocks=1, num_cross_attend_heads=1, **encoder_options)),
      decoder=decoders.FlowDecoder((4, 8), use_query_residual=False,
                                   decode_chunk_size=decode_chunk_size))
  return model(inputs, is_training=False)


@pytest.mark.parametrize('options', [
    dict(decode_chunk_size=7),                                  # 5 chunks, overlapping
    dict(decode_chunk_size=16, cross_attend_kv_chunk_size=5),   # both chunked
    dict(cross_attend_kv_chunk_size=32),                        # one kv chunk
    dict(cross_attend_chunk_size=2),       # latents chunked: inputs expanded whole
    dict()])                               # no chunking: expanded whole
def test_lazy_fourier_inputs_give_the_eager_outputs(options):
  """Inputs [B, 32, 5] + 2 + 2*2*3 Fourier channels, expanded per chunk (encoder kv
  chunks and decoder query chunks) or whole, give the eager inputs' outputs."""
  features = helpers.rand(B, 32, 5, seed=9)
  encoding = lambda: position.FourierPositionEncoding(index_dims=(4, 8), num_bands=3)
  eager = lambda x: jnp.concatenate([x, encoding()(B)], axis=-1)  # [B, 32, 19]
  # Wrong channel order (Fourier channels first): the check below must tell it apart.
  swapped = lambda x: jnp.concatenate([encoding()(B), x], axis=-1)
  plain, params = helpers.init(lambda x: _flow_perceiver(eager(x)), features)
  lazy = hk.transform(lambda x: _flow_perceiver(encoding().lazy(x), **options))
  assert _shapes(jax.eval_shape(lazy.init, jax.random.PRNGKey(0), features)) \
      == _shapes(params)
  want = jax.jit(plain.apply)(params, None, features)
  got = jax.jit(lazy.apply)(params, None, features)
  chex.assert_shape(got, (B, 4, 8, 2))
  assert np.abs(np.asarray(want)).max() > 1e-3  # not a trivial all-zero output
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  wrong = hk.transform(lambda x: _flow_perceiver(swapped(x))).apply(params, None,
                                                                    features)
  assert np.abs(np.asarray(wrong) - np.asarray(want)).max() > 1e-3


def test_lazy_fourier_inputs_give_the_eager_gradients():
  """Training through the lazy expansion: the same gradients, for the parameters and
  for the features (the leaf a preprocessor's weights would get theirs through)."""
  features = helpers.rand(B, 32, 5, seed=10)
  encoding = lambda: position.FourierPositionEncoding(index_dims=(4, 8), num_bands=3)
  plain, params = helpers.init(lambda x: _flow_perceiver(
      jnp.concatenate([x, encoding()(B)], axis=-1)), features)
  lazy = hk.transform(lambda x: _flow_perceiver(
      encoding().lazy(x), decode_chunk_size=7, cross_attend_kv_chunk_size=5))

  def grads(t):
    loss = lambda p, x: helpers.random_loss(t.apply(p, None, x))
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, features)

  chex.assert_trees_all_close(grads(lazy), grads(plain), atol=1e-5, rtol=1e-4)


def test_remat_latents_same_params_outputs_and_gradients():
  inputs = helpers.rand(B, 10, 4, seed=8)
  plain, params = helpers.init(lambda x: _encode(x, None, is_training=True), inputs)
  remat = hk.transform(lambda x: _encode(x, None, is_training=True, remat_latents=True))
  # The parameter tree is the same, in the same (creation) order.
  remat_shapes = jax.eval_shape(remat.init, jax.random.PRNGKey(0), inputs)
  assert list(remat_shapes) == list(params)
  assert _shapes(remat_shapes) == _shapes(params)

  def loss(t):
    return lambda p: helpers.random_loss(t.apply(p, None, inputs))

  want = jax.jit(jax.value_and_grad(loss(plain)))(params)
  got = jax.jit(jax.value_and_grad(loss(remat)))(params)
  helpers.assert_every_leaf_has_gradient(got[1])
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  chex.assert_trees_all_close(got[1], want[1], atol=1e-5, rtol=1e-5)


def test_remat_latents_recomputes_in_the_backward():
  """The rematerialised gradient really is a different program: it keeps fewer
  activations (XLA's compiled temp memory drops), which plain hk.remat does not
  achieve on XLA:CPU."""
  inputs = helpers.rand(B, 10, 4, seed=8)

  def temp_bytes(remat_latents):
    t, params = helpers.init(lambda x: _encode(
        x, None, is_training=True, remat_latents=remat_latents,
        num_self_attends_per_block=6, num_blocks=1, z_index_dim=64,
        num_z_channels=32), inputs)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(t.apply(p, None, inputs) ** 2)))
    return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes(True) < 0.6 * temp_bytes(False)


@pytest.mark.parametrize('bad', [0, -3, 2.5, True])
def test_bad_chunk_sizes_are_clear_errors(bad):
  x = helpers.rand(B, 5, E)
  z = helpers.rand(B, M, D)
  helpers.raises_on_init(lambda q, z: _basic_decoder(bad, q, z, None), x, z,
                         match='decode_chunk_size')
  helpers.raises_on_init(
      lambda x: _encode(x, None, cross_attend_chunk_size=bad), x,
      match='cross_attend_chunk_size')
  helpers.raises_on_init(
      lambda x: _encode(x, None, cross_attend_kv_chunk_size=bad), x,
      match='cross_attend_kv_chunk_size')
  with pytest.raises(ValueError, match='chunk_size'):
    chunking.check_chunk_size(bad, name='chunk_size')


def test_query_and_kv_chunking_together_is_a_clear_error():
  helpers.raises_on_init(
      lambda x: _encode(x, None, cross_attend_chunk_size=2,
                        cross_attend_kv_chunk_size=2), helpers.rand(B, 5, E),
      match='at most one')


def test_map_chunks_overlaps_the_last_chunk_and_keeps_row_order():
  xs = {'a': jnp.arange(2 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 3),
        'mask': jnp.ones((2, 7), bool)}
  seen = []

  def fn(chunk):
    seen.append(chunk['a'].shape)
    return chunk['a'] * 2 + jnp.where(chunk['mask'], 0.0, 100.0)[..., None]

  out = hk.transform(lambda: chunking.map_chunks(fn, xs, chunk_size=3)).apply({}, None)
  np.testing.assert_array_equal(out, np.asarray(xs["a"]) * 2)
  assert set(seen) == {(2, 3, 3)}
  with pytest.raises(ValueError, match='same O'):
    hk.transform(lambda: chunking.map_chunks(
        fn, {'a': jnp.zeros((2, 7, 3)), 'mask': jnp.ones((2, 6), bool)},
        chunk_size=3)).apply({}, None)


def test_map_chunks_hands_size_one_leaves_to_every_chunk_whole():
  """A [B, 1, ...] leaf (e.g. a padding vector) is broadcast, not sliced."""
  xs = {'a': jnp.arange(2 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 3),
        'pad': jnp.asarray([[[10.0]], [[20.0]]])}  # [2, 1, 1]
  seen = []

  def fn(chunk):
    seen.append(chunk['pad'].shape)
    return chunk['a'] + chunk['pad']

  out = hk.transform(lambda: chunking.map_chunks(fn, xs, chunk_size=3)).apply({}, None)
  np.testing.assert_array_equal(out, np.asarray(xs['a']) + np.asarray(xs['pad']))
  assert set(seen) == {(2, 1, 1)}
