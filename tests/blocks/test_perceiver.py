"""chex-verified tests of blocks/perceiver.py: PerceiverEncoder (weight sharing, repeated
cross-attention, input masks) and the Perceiver wrapper end to end."""
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
from perceiver_agents.blocks import perceiver
from perceiver_agents.encoders import image
from perceiver_agents.encoders import outputs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

B, N, C, M, D = 2, 5, 6, 4, 8


def encoder(**kwargs):
  config = dict(num_self_attends_per_block=2, num_blocks=2, z_index_dim=M,
                num_z_channels=D, num_self_attend_heads=2, num_cross_attend_heads=2)
  config.update(kwargs)
  return perceiver.PerceiverEncoder(**config)


def encode_fn(is_training=False, **kwargs):
  def fn(x, input_mask=None):
    enc = encoder(**kwargs)
    return enc(x, enc.latents(x), is_training=is_training, input_mask=input_mask)
  return fn


def n_params(params):
  return sum(np.size(x) for x in jax.tree_util.tree_leaves(params))


CONFIGS = (
    ('perceiver_io', dict()),
    ('repeated_shared', dict(cross_attend_every_block=True)),
    ('repeated_unshared', dict(cross_attend_every_block=True,
                               share_cross_attend_weights=False)),
    ('q_shape_no_residual', dict(cross_attention_shape_for_attn='q',
                                 use_query_residual=False, qk_channels=8,
                                 v_channels=8)),
)


class PerceiverEncoderTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*CONFIGS)
  def test_shape_finite_and_gradients(self, kwargs):
    x = helpers.rand(B, N, C)
    t, params = helpers.init(encode_fn(**kwargs), x)
    apply = self.variant(t.apply)
    z = apply(params, None, x)
    chex.assert_shape(z, (B, M, D))
    chex.assert_tree_all_finite(z)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  def test_latents_are_the_learned_array(self):
    def fn(x):
      return encoder().latents(x)
    t, params = helpers.init(fn, helpers.rand(B, N, C))
    z = t.apply(params, None, helpers.rand(B, N, C))
    chex.assert_shape(z, (B, M, D))
    embs = params['perceiver_encoder/~/trainable_position_encoding']['pos_embs']
    np.testing.assert_array_equal(z, np.broadcast_to(embs, z.shape))

  @chex.variants(with_jit=True, without_jit=True)
  def test_weights_shared_across_blocks(self):
    x = helpers.rand(B, N, C)
    shapes = {n: jax.eval_shape(hk.transform(encode_fn(num_blocks=n)).init,
                                jax.random.PRNGKey(0), x) for n in (1, 3)}
    assert jax.tree_util.tree_structure(shapes[1]) == jax.tree_util.tree_structure(
        shapes[3])
    assert n_params(shapes[1]) == n_params(shapes[3])
    # Two self-attends per block: two self-attention modules, whatever num_blocks.
    assert {k.split('/')[2] for k in shapes[3] if 'self_attention' in k} == {
        'self_attention', 'self_attention_1'}
    _, params = helpers.init(encode_fn(num_blocks=3), x)
    one = self.variant(hk.transform(encode_fn(num_blocks=1)).apply)(params, None, x)
    three = hk.transform(encode_fn(num_blocks=3)).apply(params, None, x)
    chex.assert_tree_all_finite((one, three))
    assert not np.allclose(one, three, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_repeated_cross_attention(self):
    x = helpers.rand(B, N, C)
    shapes = lambda **kw: jax.eval_shape(hk.transform(encode_fn(num_blocks=3, **kw)).init,
                                         jax.random.PRNGKey(0), x)
    single = shapes()
    shared = shapes(cross_attend_every_block=True)
    unshared = shapes(cross_attend_every_block=True, share_cross_attend_weights=False)
    assert jax.tree_util.tree_map(np.shape, shared) == jax.tree_util.tree_map(
        np.shape, single)
    extra = sorted(set(unshared) - set(single))
    assert {k.split('/')[2] for k in extra} == {'cross_attention_1',
                                                'cross_attention_2'}
    cross = [k for k in single if '/cross_attention/' in k]
    assert len(extra) == 2 * len(cross)
    assert n_params(unshared) == n_params(single) + 2 * n_params(
        {k: single[k] for k in cross})

    _, params = helpers.init(encode_fn(num_blocks=3), x)
    once = self.variant(hk.transform(encode_fn(num_blocks=3)).apply)(params, None, x)
    every = hk.transform(encode_fn(num_blocks=3, cross_attend_every_block=True)).apply(
        params, None, x)
    chex.assert_tree_all_finite((once, every))
    assert not np.allclose(once, every, atol=1e-4)

    # Unshared with every cross-attention given the first one's weights is the shared model.
    _, unshared_params = helpers.init(encode_fn(
        num_blocks=3, cross_attend_every_block=True,
        share_cross_attend_weights=False), x)
    tied = dict(unshared_params)
    for k in extra:
      tied[k] = params[k.replace('cross_attention_1', 'cross_attention').replace(
          'cross_attention_2', 'cross_attention')]
    for k in single:
      tied[k] = params[k]
    untied_out = hk.transform(encode_fn(
        num_blocks=3, cross_attend_every_block=True,
        share_cross_attend_weights=False)).apply(tied, None, x)
    np.testing.assert_allclose(untied_out, every, rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('once', False), ('every_block', True))
  def test_masked_inputs_do_not_influence_latents(self, every_block):
    x = helpers.rand(B, N, C)
    input_mask = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], bool)
    t, params = helpers.init(encode_fn(cross_attend_every_block=every_block), x,
                             input_mask)
    apply = self.variant(t.apply)
    z = apply(params, None, x, input_mask)
    x_masked_changed = np.where(input_mask[..., None], x, 50 * helpers.rand(B, N, C, seed=3))
    x_valid_changed = np.where(input_mask[..., None], helpers.rand(B, N, C, seed=4), x)
    np.testing.assert_allclose(apply(params, None, x_masked_changed, input_mask), z,
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(apply(params, None, x_valid_changed, input_mask), z,
                           atol=1e-4)
    assert not np.allclose(apply(params, None, x, None), z, atol=1e-4)
    # An example with no valid input at all stays finite.
    empty = np.array([[0] * N, [1] * N], bool)
    chex.assert_tree_all_finite(apply(params, None, x, empty))

  @chex.variants(with_jit=True, without_jit=True)
  def test_dropout_only_when_training(self):
    x = helpers.rand(B, N, C)
    kw = dict(dropout_prob=0.3, attention_dropout_prob=0.3)
    t, params = helpers.init(encode_fn(**kw), x)
    key = jax.random.PRNGKey(0)
    train = self.variant(hk.transform(encode_fn(is_training=True, **kw)).apply)(
        params, key, x)
    evaluate = t.apply(params, key, x)
    no_rate = hk.transform(encode_fn()).apply(params, key, x)
    chex.assert_tree_all_finite(train)
    assert not np.allclose(train, evaluate, atol=1e-4)
    np.testing.assert_allclose(evaluate, no_rate, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_z_channels=10, num_self_attend_heads=4),
     r'num_z_channels \(10\) must be divisible by num_self_attend_heads \(4\)'),
    (dict(num_z_channels=8, num_cross_attend_heads=3),
     r'num_z_channels \(8\) must be divisible by num_cross_attend_heads \(3\)'),
    (dict(num_blocks=0), 'num_blocks must be positive'),
    (dict(z_index_dim=0), 'z_index_dim must be positive'),
    (dict(num_self_attends_per_block=0), 'num_self_attends_per_block'),
    (dict(cross_attention_shape_for_attn='z'), 'shape_for_attn'),
])
def test_encoder_rejects_bad_config(kwargs, match):
  helpers.raises_on_init(encode_fn(**kwargs), helpers.rand(B, N, C), match=match)


def test_encoder_rejects_bad_inputs():
  helpers.raises_on_init(encode_fn(), helpers.rand(B, N, C), np.ones((B, N + 1), bool),
                         match=r'input_mask must have shape \(2, 5\)')
  helpers.raises_on_init(encode_fn(), helpers.rand(B, N, C), np.ones((B, N, 1), bool),
                         match='input_mask')

  def bad_rank(x):
    enc = encoder()
    return enc(x[0], enc.latents(x), is_training=False)
  helpers.raises_on_init(bad_rank, helpers.rand(B, N, C),
                         match='inputs must have rank 3')

  def bad_z(x):
    return encoder()(x, x[0, 0], is_training=False)
  helpers.raises_on_init(bad_z, helpers.rand(B, N, C), match=r'z must be \[B, M, D\] or \[M, D\]')


# The Perceiver wrapper, end to end: image -> patches + Fourier positions -> latents
# -> Fourier output queries -> pixels.

IMG = (B, 4, 4, 3)


def perceiver_fn(decoder='fourier', postprocess=True, is_training=False):
  def fn(images, subsampled=None, input_mask=None, query_mask=None):
    pre = image.ImagePreprocessor(
        prep_type='patches', spatial_downsample=2, position_encoding_type='fourier',
        fourier_position_encoding_kwargs=dict(num_bands=2))
    if decoder == 'fourier':
      dec = decoders.BasicDecoder(
          output_num_channels=3, output_index_dims=(4, 4), num_heads=1,
          position_encoding_type='fourier',
          fourier_position_encoding_kwargs=dict(num_bands=2), qk_channels=8)
    else:
      dec = decoders.BasicDecoder(
          output_num_channels=3, output_index_dims=(4, 4), num_heads=1,
          trainable_position_encoding_kwargs=dict(num_channels=8))
    post = (outputs.ProjectionPostprocessor(num_outputs=2) if postprocess
            else None)
    model = perceiver.Perceiver(encoder=encoder(num_self_attends_per_block=1),
                                decoder=dec,
                                input_preprocessor=pre, output_postprocessor=post)
    return model(images, is_training=is_training, subsampled_output_points=subsampled,
                 input_mask=input_mask, query_mask=query_mask)
  return fn


class PerceiverTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('fourier_queries', 'fourier'),
                                  ('trainable_queries', 'trainable'))
  def test_end_to_end(self, decoder):
    images = helpers.rand(*IMG)
    t, params = helpers.init(perceiver_fn(decoder), images)
    apply = self.variant(t.apply)
    out = apply(params, None, images)
    chex.assert_shape(out, (B, 16, 2))
    chex.assert_tree_all_finite(out)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, images)))(params)
    helpers.assert_every_leaf_has_gradient(grads)
    assert not np.allclose(apply(params, None, helpers.rand(*IMG, seed=5)), out)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('fourier_queries', 'fourier'),
                                  ('trainable_queries', 'trainable'))
  def test_subsampled_outputs(self, decoder):
    images = helpers.rand(*IMG)
    t, params = helpers.init(perceiver_fn(decoder), images)
    idx = np.array([0, 5, 15], np.int32)
    apply = self.variant(t.apply)
    sub = apply(params, None, images, idx)
    chex.assert_shape(sub, (B, 3, 2))
    chex.assert_tree_all_finite(sub)
    if decoder == 'trainable':  # the learned queries at those indices
      full = apply(params, None, images)
      np.testing.assert_allclose(sub, np.asarray(full)[:, idx], rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_input_and_query_masks(self):
    images = helpers.rand(*IMG)
    t, params = helpers.init(perceiver_fn(postprocess=False), images)
    apply = self.variant(t.apply)
    # 4 input tokens (2x2 patches) and 16 queries.
    input_mask = np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool)
    query_mask = np.ones((B, 16), bool)
    query_mask[0, 3] = query_mask[1, 7] = False
    out = apply(params, None, images, None, input_mask, query_mask)
    chex.assert_shape(out, (B, 16, 3))
    chex.assert_tree_all_finite(out)
    # Changing the masked patch (top right of example 0, bottom right of 1) does nothing.
    changed = images.copy()
    changed[0, :2, 2:] += 5.0
    changed[1, 2:, 2:] -= 5.0
    np.testing.assert_allclose(apply(params, None, changed, None, input_mask,
                                     query_mask), out, rtol=1e-5, atol=1e-5)
    # A masked query attends to nothing: its output ignores the image entirely.
    other = apply(params, None, helpers.rand(*IMG, seed=9), None, input_mask,
                  query_mask)
    np.testing.assert_allclose(np.asarray(other)[0, 3], np.asarray(out)[0, 3],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(other)[1, 7], np.asarray(out)[1, 7],
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(other)[0, 4], np.asarray(out)[0, 4])

  def test_rejects_bad_inputs(self):
    images = helpers.rand(*IMG)
    helpers.raises_on_init(perceiver_fn(), images, None, np.ones((B, 5), bool),
                           match='input_mask')
    helpers.raises_on_init(perceiver_fn(), images, None, None, np.ones((B, 4), bool),
                           match='query_mask')

    def no_preprocessor(x):
      model = perceiver.Perceiver(encoder=encoder(), decoder=decoders.ProjectionDecoder(3))
      return model(x, is_training=False)
    helpers.raises_on_init(no_preprocessor, helpers.rand(B, N),
                           match=r'inputs \(after preprocessing\) must have rank 3')


def test_shared_latents_match_repeated_latents():
  """`latents()` [M, D] (shared) gives the encoder output of `latents(x)` [B, M, D]."""
  def fn(x, shared):
    enc = encoder(cross_attend_every_block=True)
    z = enc.latents() if shared else enc.latents(x)
    chex.assert_rank(z, 2 if shared else 3)
    mask = jnp.arange(N)[None] < jnp.array([[N], [N - 2]])[:B]
    return enc(x, z, is_training=False, input_mask=mask)
  t = hk.transform(fn)
  x = helpers.rand(B, N, C)
  params = t.init(jax.random.PRNGKey(0), x, True)
  np.testing.assert_allclose(t.apply(params, None, x, True),
                             t.apply(params, None, x, False), rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p, s=s: helpers.random_loss(t.apply(p, None, x, s)))(params)
           for s in (True, False)]
  chex.assert_trees_all_close(*grads, rtol=1e-4, atol=1e-5)
