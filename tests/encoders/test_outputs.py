"""chex-verified tests of encoders/outputs.py: one-hot inputs, linear heads and the
embedding decoder tied to the input embedding."""
import pathlib
import sys

import haiku as hk
import jax
import numpy as np

import chex
from perceiver_agents.encoders import outputs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402  (tests/helpers.py)

B, O, C = 2, 3, 6


class AdaptersTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_one_hot_preprocessor(self):
    x = np.eye(C, dtype=np.float32)[[1, 4]]
    t = hk.transform(lambda x: outputs.OneHotPreprocessor()(x, is_training=False))
    with_pos, sizes, without_pos = self.variant(t.apply)({}, None, x)
    assert sizes is None
    chex.assert_shape([with_pos, without_pos], [(B, 1, C)] * 2)
    np.testing.assert_array_equal(with_pos[:, 0], x)
    np.testing.assert_array_equal(without_pos, with_pos)

  @chex.variants(with_jit=True, without_jit=True)
  def test_classification_postprocessor_uses_first_output(self):
    x = helpers.rand(B, O, C)
    t, params = helpers.init(lambda x: outputs.ClassificationPostprocessor(
        num_classes=4)(x, is_training=False), x)
    apply = self.variant(t.apply)
    out = apply(params, None, x)
    chex.assert_shape(out, (B, 4))
    lin = params['classification_postprocessor/linear']
    np.testing.assert_allclose(out, x[:, 0] @ lin['w'] + lin['b'], rtol=1e-5, atol=1e-5)
    x2 = x.copy()
    x2[:, 1:] += 3.0
    np.testing.assert_array_equal(apply(params, None, x2), out)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)))(params)
    helpers.assert_every_leaf_has_gradient(grads)

  @chex.variants(with_jit=True, without_jit=True)
  def test_projection_and_identity_postprocessors(self):
    x = helpers.rand(B, O, C)
    t, params = helpers.init(lambda x: outputs.ProjectionPostprocessor(num_outputs=5)(
        x, is_training=False), x)
    apply = self.variant(t.apply)
    out = apply(params, None, x)
    chex.assert_shape(out, (B, O, 5))
    lin = params['projection_postprocessor/linear']
    np.testing.assert_allclose(out, x @ lin['w'] + lin['b'], rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, x)))(params)
    helpers.assert_every_leaf_has_gradient(grads)
    tree = {'a': x, 'b': x[:, :1]}
    same = hk.transform(lambda t: outputs.IdentityPostprocessor()(
        t, is_training=False)).apply({}, None, tree)
    chex.assert_trees_all_equal(same, tree)

  @chex.variants(with_jit=True, without_jit=True)
  def test_embedding_decoder_is_tied(self):
    ids = np.array([[1, 4, 2], [0, 3, 3]], np.int32)
    vocab, d = 7, C

    def fn(ids):
      embed = hk.Embed(vocab, d, name='embed')
      return outputs.EmbeddingDecoder(embedding_matrix=embed.embeddings)(embed(ids))

    t, params = helpers.init(fn, ids)
    chex.assert_shape(params['embedding_decoder']['bias'], (vocab,))
    apply = self.variant(t.apply)
    logits = apply(params, None, ids)
    chex.assert_shape(logits, (B, 3, vocab))
    e, b = params['embed']['embeddings'], params['embedding_decoder']['bias']
    np.testing.assert_allclose(logits, e[ids] @ e.T + b, rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: helpers.random_loss(apply(p, None, ids)))(params)
    helpers.assert_every_leaf_has_gradient(grads)
    # The output side alone also reaches every row of the matrix.
    x = helpers.rand(B, 3, d)
    out_grad = jax.grad(lambda e: helpers.random_loss(hk.transform(
        lambda x: outputs.EmbeddingDecoder(embedding_matrix=e)(x)).apply(
            {'embedding_decoder': {'bias': b}}, None, x)))(e)
    assert np.all(np.any(np.asarray(out_grad) != 0, axis=1))


def test_adapters_reject_bad_inputs():
  helpers.raises_on_init(lambda x: outputs.OneHotPreprocessor()(x, is_training=False),
                         helpers.rand(B, 1, C), match='inputs must have rank 2')
  helpers.raises_on_init(lambda: outputs.ClassificationPostprocessor(num_classes=0),
                         match='num_classes')
  helpers.raises_on_init(lambda: outputs.EmbeddingDecoder(
      embedding_matrix=np.zeros((7,))), match='embedding_matrix must have rank 2')
  helpers.raises_on_init(lambda x: outputs.EmbeddingDecoder(
      embedding_matrix=np.zeros((7, C)))(x), helpers.rand(B, C),
                         match='embeddings must have rank 3')
  helpers.raises_on_init(lambda x: outputs.EmbeddingDecoder(
      embedding_matrix=np.zeros((7, C)))(x), helpers.rand(B, 3, C + 1),
                         match=r'embeddings have 7 channels')
