"""chex-verified tests of blocks/decoders.py: query construction, decoding, query masks
(checked against a numpy computation of a query that attends to nothing)."""
import math
import pathlib
import sys

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import chex
from perceiver_agents.blocks import decoders
from perceiver_agents.blocks import position

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

B, N, C, M, D, F = 2, 6, 5, 4, 8, 3


def np_fourier_1d(pos, num_bands, res):
  f = np.linspace(1.0, res / 2, num_bands)
  x = np.asarray(pos, np.float64)[..., None] * f
  return np.concatenate([np.asarray(pos)[..., None], np.sin(np.pi * x),
                         np.cos(np.pi * x)], -1)


def np_layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * p['scale'] + p['offset']


def np_gelu(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def np_empty_query_output(params, prefix):
  """Decoder output of a query that attends to nothing (no query residual):
  attention gives zeros, so the block sees only the attention output bias."""
  dense = lambda name, x: x @ params[f'{prefix}/{name}']['w'] + params[
      f'{prefix}/{name}']['b']
  x = np.asarray(params[f'{prefix}/cross_attention/attention/linear_3']['b'],
                 np.float64)
  h = np_layer_norm(x, params[f'{prefix}/cross_attention/layer_norm_2'])
  h = dense('cross_attention/mlp/linear_1',
            np_gelu(dense('cross_attention/mlp/linear', h)))
  return dense('output', x + h)


def decode_fn(make_decoder, **call_kwargs):
  """fn(inputs, z, ...) building the decoder's queries from `inputs` and decoding z."""
  def fn(inputs, z, subsampled=None, without_pos=None, query_mask=None):
    dec = make_decoder()
    query = dec.decoder_query(inputs, inputs_without_pos=without_pos,
                              subsampled_points=subsampled, **call_kwargs)
    return dec(query, z, is_training=False, query_mask=query_mask)
  return fn


def basic(**kwargs):
  config = dict(output_num_channels=F, output_index_dims=(4,),
                trainable_position_encoding_kwargs=dict(num_channels=8))
  config.update(kwargs)
  return lambda: decoders.BasicDecoder(**config)


FOURIER = dict(position_encoding_type='fourier',
               fourier_position_encoding_kwargs=dict(num_bands=2))


class BasicDecoderTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('trainable', dict(), (B, 4, F)),
      ('fourier', dict(FOURIER, qk_channels=4, v_channels=4), (B, 4, F)),
      ('fourier_projected', dict(FOURIER, project_pos_dim=6, num_heads=2), (B, 4, F)),
      ('query_residual_2d', dict(use_query_residual=True,
                                 output_index_dims=(2, 3)), (B, 6, F)),
      ('no_final_project', dict(final_project=False), (B, 4, 8)),
      ('concat_input', dict(concat_preprocessed_input=True,
                            output_index_dims=(N,)), (B, N, F)),
  )
  def test_shape_finite_and_gradients(self, kwargs, shape):
    inputs, z = helpers.rand(B, N, C), helpers.rand(B, M, D, seed=1)
    without_pos = helpers.rand(B, N, 2, seed=2)
    t, params = helpers.init(decode_fn(basic(**kwargs)), inputs, z, None,
                             without_pos)
    assert ('basic_decoder/output' in params) == kwargs.get('final_project', True)
    apply = self.variant(t.apply)
    out = apply(params, None, inputs, z, None, without_pos)
    chex.assert_shape(out, shape)
    chex.assert_tree_all_finite(out)
    grads = jax.grad(lambda p: helpers.random_loss(
        apply(p, None, inputs, z, None, without_pos)))(params)
    helpers.assert_every_leaf_has_gradient(grads)
    assert not np.allclose(apply(params, None, inputs, z * 2 + 1, None, without_pos),
                           out)

  @chex.variants(with_jit=True, without_jit=True)
  def test_queries(self):
    inputs = helpers.rand(B, N, C)
    without_pos = helpers.rand(B, N, 2, seed=2)

    def fn(inputs, subsampled, without_pos):
      fourier = decoders.BasicDecoder(output_num_channels=F, output_index_dims=(8,),
                                      **FOURIER).decoder_query(inputs)
      sub = decoders.BasicDecoder(output_num_channels=F, output_index_dims=(8,),
                                  **FOURIER).decoder_query(
                                      inputs, subsampled_points=subsampled)
      concat = decoders.BasicDecoder(
          output_num_channels=F, output_index_dims=(N,), concat_preprocessed_input=True,
          **FOURIER).decoder_query(inputs, inputs_without_pos=without_pos)
      return fourier, sub, concat

    idx = np.array([1, 4, 7], np.int32)
    fourier, sub, concat = self.variant(hk.transform(fn).apply)(
        {}, None, inputs, idx, without_pos)
    # The whole grid's encoding is the same for every example: no batch axis.
    chex.assert_shape([fourier, sub, concat], [(8, 5), (B, 3, 5), (B, N, 7)])
    np.testing.assert_allclose(
        fourier, np_fourier_1d(np.linspace(-1, 1, 8), 2, 8), atol=1e-5)
    np.testing.assert_allclose(
        sub, np.broadcast_to(np_fourier_1d(-1 + 2 * idx / 8, 2, 8), (B, 3, 5)),
        atol=1e-5)
    np.testing.assert_array_equal(np.asarray(concat)[..., :2], without_pos)
    np.testing.assert_allclose(
        np.asarray(concat)[..., 2:],
        np.broadcast_to(np_fourier_1d(np.linspace(-1, 1, N), 2, N), (B, N, 5)),
        atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_subsampled_trainable_queries_pick_rows(self):
    inputs, z = helpers.rand(B, N, C), helpers.rand(B, M, D, seed=1)
    idx = np.array([3, 0], np.int32)
    t, params = helpers.init(decode_fn(basic()), inputs, z)
    apply = self.variant(t.apply)
    full = apply(params, None, inputs, z)
    sub = apply(params, None, inputs, z, idx)
    chex.assert_shape(sub, (B, 2, F))
    np.testing.assert_allclose(sub, np.asarray(full)[:, idx], rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_query_mask(self):
    inputs, z = helpers.rand(B, N, C), helpers.rand(B, M, D, seed=1)
    query_mask = np.ones((B, 4), bool)
    query_mask[0, 1] = query_mask[1, 3] = query_mask[1, 0] = False
    t, params = helpers.init(decode_fn(basic()), inputs, z)
    apply = self.variant(t.apply)
    out = np.asarray(apply(params, None, inputs, z, None, None, query_mask))
    unmasked = np.asarray(apply(params, None, inputs, z))
    chex.assert_tree_all_finite(out)
    empty = np_empty_query_output(
        jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params),
        'basic_decoder')
    for b, q in zip(*np.nonzero(~query_mask)):
      np.testing.assert_allclose(out[b, q], empty, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[query_mask], unmasked[query_mask], rtol=1e-5,
                               atol=1e-5)
    assert not np.allclose(unmasked[~query_mask], np.broadcast_to(empty, (3, F)),
                           atol=1e-3)


def test_basic_decoder_rejects_bad_inputs():
  inputs, z = helpers.rand(B, N, C), helpers.rand(B, M, D, seed=1)
  helpers.raises_on_init(decode_fn(basic()), inputs, z, None, None,
                         np.ones((B, 5), bool), match=r'query_mask must have shape \(2, 4\)')
  helpers.raises_on_init(decode_fn(basic(position_encoding_type='sine')), inputs, z,
                         match='position_encoding_type')
  helpers.raises_on_init(decode_fn(basic(output_index_dims=None)), inputs, z,
                         match='output_index_dims is required')
  helpers.raises_on_init(decode_fn(basic(concat_preprocessed_input=True)), inputs, z,
                         match='inputs_without_pos is required')
  helpers.raises_on_init(decode_fn(basic(position_encoding_type='none')), inputs, z,
                         match="position_encoding_type='none'")
  helpers.raises_on_init(decode_fn(basic(num_heads=3)), inputs, z,
                         match=r'inputs_kv channels \(8\) must be divisible by num_heads')
  helpers.raises_on_init(decode_fn(basic(qk_channels=6, num_heads=4)), inputs, z,
                         match=r'qk_channels \(6\) must be divisible')

  def bad_query(z):
    return decoders.BasicDecoder(output_num_channels=F, position_encoding_type='none')(
        z[0, 0], z, is_training=False)
  helpers.raises_on_init(bad_query, z, match=r'query must be \[B, O, E\] or \[O, E\]')

  def bad_z(z):
    return decoders.BasicDecoder(output_num_channels=F, position_encoding_type='none')(
        z, z[0], is_training=False)
  helpers.raises_on_init(bad_z, z, match='z must have rank 3')


class HeadDecodersTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_classification_decoder(self):
    inputs, z = helpers.rand(B, N, C), helpers.rand(B, M, D, seed=1)
    make = lambda: decoders.ClassificationDecoder(
        7, trainable_position_encoding_kwargs=dict(num_channels=8))
    t, params = helpers.init(decode_fn(make), inputs, z)
    apply = self.variant(t.apply)
    out = apply(params, None, inputs, z)
    chex.assert_shape(out, (B, 7))
    chex.assert_tree_all_finite(out)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, inputs, z)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  @chex.variants(with_jit=True, without_jit=True)
  def test_projection_decoder_mean_pools(self):
    inputs, z = helpers.rand(B, N, C), helpers.rand(B, M, D, seed=1)

    def fn(inputs, z):
      dec = decoders.ProjectionDecoder(5)
      assert dec.decoder_query(inputs) is None
      return dec(None, z, is_training=False)

    real = hk.transform(fn).init(jax.random.PRNGKey(0), inputs, z)
    np.testing.assert_array_equal(real['projection_decoder/logits']['w'], 0.0)
    t, params = helpers.init(fn, inputs, z)
    apply = self.variant(t.apply)
    out = apply(params, None, inputs, z)
    chex.assert_shape(out, (B, 5))
    p = params['projection_decoder/logits']
    np.testing.assert_allclose(out, z.mean(1) @ p['w'] + p['b'], rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, inputs, z)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  def test_head_decoders_reject_bad_config(self):
    for fn, match in [(lambda: decoders.ClassificationDecoder(0), 'num_classes'),
                      (lambda: decoders.ProjectionDecoder(0), 'num_classes'),
                      (lambda: decoders.FlowDecoder((2, 3, 4)), 'output_image_shape'),
                      (lambda: decoders.BasicVideoAutoencodingDecoder(
                          output_shape=(2, 3), position_encoding_type='fourier'),
                       'output_shape')]:
      helpers.raises_on_init(fn, match=match)
    helpers.raises_on_init(
        lambda z: decoders.ProjectionDecoder(3)(None, z[0], is_training=False),
        helpers.rand(B, M, D), match='z must have rank 3')


class FlowDecoderTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_flow(self):
    inputs, z = helpers.rand(B, 6, C), helpers.rand(B, M, D, seed=1)

    def fn(rescale):
      return decode_fn(lambda: decoders.FlowDecoder(
          (2, 3), rescale_factor=rescale, num_heads=1))

    t, params = helpers.init(fn(100.0), inputs, z)
    apply = self.variant(t.apply)
    flow = apply(params, None, inputs, z)
    chex.assert_shape(flow, (B, 2, 3, 2))
    chex.assert_tree_all_finite(flow)
    raw = hk.transform(fn(1.0)).apply(params, None, inputs, z)
    np.testing.assert_allclose(flow, np.asarray(raw) / 100.0, rtol=1e-5, atol=1e-7)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, inputs, z)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  def test_flow_rejects_bad_inputs(self):
    z = helpers.rand(B, M, D)
    make = lambda: decoders.FlowDecoder((2, 3))
    helpers.raises_on_init(decode_fn(make), helpers.rand(B, 5, C), z,
                           match=r'expected H\*W = 6')
    helpers.raises_on_init(decode_fn(make), helpers.rand(B, 6, C), z,
                           np.arange(2), match='subsampled_points')


class VideoDecoderTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_video_grid_and_subsampling(self):
    inputs, z = helpers.rand(B, N, C), helpers.rand(B, M, D, seed=1)
    make = lambda: decoders.BasicVideoAutoencodingDecoder(
        output_shape=(2, 2, 3), output_num_channels=F, **FOURIER)
    t, params = helpers.init(decode_fn(make), inputs, z)
    apply = self.variant(t.apply)
    video = apply(params, None, inputs, z)
    chex.assert_shape(video, (B, 2, 2, 3, F))
    chex.assert_tree_all_finite(video)
    flat = apply(params, None, inputs, z, np.array([0, 4, 11], np.int32))
    chex.assert_shape(flat, (B, 3, F))
    chex.assert_tree_all_finite(flat)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, inputs, z)))(params)
    helpers.assert_every_leaf_has_gradient(grads)


def multimodal():
  return decoders.MultimodalDecoder(
      modalities={
          'image': decoders.BasicDecoder(output_num_channels=F, output_index_dims=(2, 2),
                                         **FOURIER),
          'audio': decoders.BasicDecoder(
              output_num_channels=F, output_index_dims=(3,),
              trainable_position_encoding_kwargs=dict(num_channels=4)),
          'label': decoders.ClassificationDecoder(
              4, trainable_position_encoding_kwargs=dict(num_channels=6)),
      },
      output_num_channels=F, min_padding_size=2, num_heads=1)


SIZES = {'image': 2, 'audio': 3, 'label': 1}
PAD = 'multimodal_decoder/~decoder_query'  # the padding vectors' module path


class MultimodalDecoderTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_queries_outputs_and_gradients(self):
    inputs, z = helpers.rand(B, 6, C), helpers.rand(B, M, D, seed=1)

    def fn(inputs, z, query_mask=None):
      dec = multimodal()
      query = dec.decoder_query(inputs, modality_sizes=SIZES)
      return query, dec(query, z, is_training=False, query_mask=query_mask)

    t, params = helpers.init(fn, inputs, z)
    # Queries 4 (audio), 10 (image), 6 (label) wide, padded to 10 + 2.
    for m, width in [('audio', 8), ('image', 2), ('label', 6)]:
      chex.assert_shape(params[f'{PAD}/{m}_padding']['pos_embs'],
                        (1, width))
    apply = self.variant(t.apply)
    query, out = apply(params, None, inputs, z)
    # 4 audio + 4 image + 1 label queries, width max(4, 10, 6) + 2, sorted by name.
    chex.assert_shape([query, out], [(B, 8, 12), (B, 8, F)])
    chex.assert_tree_all_finite(out)
    audio_embs = params['basic_decoder_1/~/trainable_position_encoding']['pos_embs']
    np.testing.assert_array_equal(np.asarray(query)[:, :3, :4],
                                  np.broadcast_to(audio_embs, (B, 3, 4)))
    np.testing.assert_array_equal(
        np.asarray(query)[:, :3, 4:],
        np.broadcast_to(params[f'{PAD}/audio_padding']['pos_embs'][0],
                        (B, 3, 8)))
    np.testing.assert_allclose(
        np.asarray(query)[0, 3:7, :10],
        np.asarray(hk.transform(lambda: decoders.BasicDecoder(
            output_num_channels=F, output_index_dims=(2, 2),
            **FOURIER).decoder_query(inputs)).apply({}, None)), atol=1e-6)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, inputs, z)[1]))(
        params)
    helpers.assert_every_leaf_has_gradient(grads)
    # Query masks pass through to the shared decoder.
    mask = np.ones((B, 8), bool)
    mask[:, -1] = False
    _, masked = apply(params, None, inputs, z, mask)
    np.testing.assert_allclose(np.asarray(masked)[:, :-1], np.asarray(out)[:, :-1],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(masked)[0, -1], np.asarray(masked)[1, -1],
                               rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_subsampling_and_sizes(self):
    inputs = helpers.rand(B, 6, C)

    def fn(inputs, image_idx):
      dec = multimodal()
      points = {'image': image_idx}
      return (dec.decoder_query(inputs, modality_sizes=SIZES, subsampled_points=points),
              dec.output_modality_sizes(points), dec.output_modality_sizes(),
              dec.num_outputs)

    t, params = helpers.init(fn, inputs, np.array([0, 3], np.int32))
    query, sub_sizes, sizes, num = self.variant(
        lambda p, x: t.apply(p, None, x, np.array([0, 3], np.int32)))(params, inputs)
    chex.assert_shape(query, (B, 3 + 2 + 1, 12))
    assert sub_sizes == {'image': 2, 'audio': 3, 'label': 1}
    assert sizes == {'image': 4, 'audio': 3, 'label': 1} and num == 8

  def test_rejects_bad_inputs(self):
    inputs = helpers.rand(B, 6, C)
    helpers.raises_on_init(lambda x: multimodal().decoder_query(x), inputs,
                           match='modality_sizes')
    helpers.raises_on_init(lambda x: multimodal().decoder_query(
        x, modality_sizes=SIZES, subsampled_points={'video': np.arange(2)}), inputs,
                           match='unknown modalities')
    helpers.raises_on_init(lambda x: multimodal().decoder_query(
        x, modality_sizes={'image': 2, 'audio': 3, 'label': 2}), inputs,
                           match='modality_sizes')
    helpers.raises_on_init(lambda: decoders.MultimodalDecoder(
        modalities={}, output_num_channels=F), match='modalities')


def test_split_modalities_sorted_by_name():
  x = np.arange(2 * 5 * 1).reshape(2, 5, 1)
  parts = decoders.split_modalities({'b': 3, 'a': 2}, x)
  np.testing.assert_array_equal(parts['a'], x[:, :2])
  np.testing.assert_array_equal(parts['b'], x[:, 2:])
  with pytest.raises(ValueError, match='modality_sizes'):
    decoders.split_modalities({'a': 4}, x)


@pytest.mark.parametrize('chunk', [None, 3])
def test_shared_queries_decode_like_repeated_queries(chunk):
  """A shared [O, E] query (with and without decode chunks) == its [B, O, E] copies."""
  def fn(query, z, mask):
    return decoders.BasicDecoder(output_num_channels=F, position_encoding_type='none',
                                 use_query_residual=True, decode_chunk_size=chunk)(
                                     query, z, is_training=False, query_mask=mask)
  t = hk.transform(fn)
  query, z = helpers.rand(7, C), helpers.rand(B, M, D, seed=1)
  mask = np.arange(7)[None] < np.array([[7], [4]])[:B]
  params = t.init(jax.random.PRNGKey(0), query, z, mask)
  shared = t.apply(params, None, query, z, mask)
  chex.assert_shape(shared, (B, 7, F))
  np.testing.assert_allclose(
      shared, t.apply(params, None, jnp.broadcast_to(query, (B, 7, C)), z, mask),
      rtol=1e-5, atol=1e-6)


def _multimodal_chunked(chunk, lazy):
  fourier = dict(FOURIER, lazy_queries=lazy)
  return decoders.MultimodalDecoder(
      modalities={
          'image': decoders.BasicDecoder(output_num_channels=F,
                                         output_index_dims=(2, 3), **fourier),
          'audio': decoders.BasicDecoder(
              output_num_channels=F, output_index_dims=(5,),
              trainable_position_encoding_kwargs=dict(num_channels=4)),
          'label': decoders.ClassificationDecoder(
              4, trainable_position_encoding_kwargs=dict(num_channels=6)),
      },
      output_num_channels=F, min_padding_size=2, num_heads=1,
      decode_chunk_size=chunk)


class _Post(hk.Module):
  """A position-wise postprocessor that records the row counts it is called on."""
  position_wise = True
  calls = []

  def __call__(self, x, *, is_training, pos=None, modality_sizes=None):
    _Post.calls.append(x.shape[1])
    return hk.Linear(2)(x)


@pytest.mark.parametrize('lazy', [False, True])
def test_chunked_multimodal_decoder_equals_unchunked(lazy):
  """decode_chunk_size: per-modality PaddedQueries, decoded (and position-wise
  postprocessed) chunk by chunk: the same outputs and gradients as all at once."""
  from perceiver_agents.encoders import multimodal, outputs  # pylint: disable=g-import-not-at-top
  inputs, z = helpers.rand(B, 6, C), helpers.rand(B, M, D, seed=1)
  sizes = {'image': 2, 'audio': 3, 'label': 1}
  mask = np.ones((B, 12), bool)
  mask[:, 4] = False  # an audio query (audio 0-4, image 5-10, label 11)

  def fn(inputs, z, chunk, with_post):
    dec = _multimodal_chunked(chunk, lazy)
    post = multimodal.MultimodalPostprocessor(modalities={
        'image': _Post(name='image_post'),
        'label': outputs.ClassificationPostprocessor(num_classes=3)})
    query = dec.decoder_query(inputs, modality_sizes=sizes)
    if chunk is None:  # the flat [B, O, E] path, postprocessed afterwards
      out = dec(query, z, is_training=False, query_mask=mask)
      return out, post(out, is_training=False,
                       modality_sizes={'audio': 5, 'image': 6, 'label': 1})
    flat = dec(query, z, is_training=False, query_mask=mask)
    return flat, (dec(query, z, is_training=False, query_mask=mask,
                      postprocessor=post) if with_post else None)

  t = hk.transform(fn)
  params = t.init(jax.random.PRNGKey(0), inputs, z, None, False)
  want_flat, want_post = t.apply(params, None, inputs, z, None, False)
  chex.assert_shape(want_flat, (B, 12, F))
  _Post.calls.clear()
  got_flat, got_post = t.apply(params, None, inputs, z, 4, True)
  assert max(_Post.calls) <= 4  # the image postprocessor saw chunks only
  np.testing.assert_allclose(got_flat, want_flat, rtol=1e-5, atol=1e-6)
  assert sorted(got_post) == ['image', 'label']
  for m in got_post:
    np.testing.assert_allclose(got_post[m], want_post[m], rtol=1e-5, atol=1e-6)
  grad = lambda chunk: jax.grad(lambda p: helpers.random_loss(
      t.apply(p, None, inputs, z, chunk, chunk is not None)[1]))(params)
  chex.assert_trees_all_close(grad(4), grad(None), rtol=1e-4, atol=1e-6)


def test_chunked_multimodal_queries_stay_unexpanded():
  inputs = helpers.rand(B, 6, C)

  def fn(inputs):
    return _multimodal_chunked(4, True).decoder_query(
        inputs, modality_sizes={'image': 2, 'audio': 3, 'label': 1})

  t = hk.transform(fn)
  queries = t.apply(t.init(jax.random.PRNGKey(0), inputs), None, inputs)
  assert isinstance(queries['image'], decoders.PaddedQueries)
  assert isinstance(queries['image'].queries, position.LazyFourierFeatures)
  assert queries['image'].shape == (1, 6, 12)  # shared: batch 1, width 10 + 2
  assert queries['audio'].shape == (1, 5, 12)
  chex.assert_shape(queries['image'].padding, (1, 1, 2))


def test_lazy_queries_need_a_plain_fourier_grid():
  with pytest.raises(ValueError, match='lazy_queries'):
    hk.transform(lambda: decoders.BasicDecoder(
        output_num_channels=F, output_index_dims=(3,), lazy_queries=True,
        trainable_position_encoding_kwargs=dict(num_channels=4))).init(None)
  with pytest.raises(ValueError, match='decode_chunk_size'):
    hk.transform(lambda q, z: _multimodal_chunked(None, False)(
        q, z, is_training=False, postprocessor=lambda *a, **k: a)).init(
            None, helpers.rand(B, 4, C), helpers.rand(B, M, D))
