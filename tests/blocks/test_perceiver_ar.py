"""Tests of blocks/perceiver_ar.py and blocks/ar_generation.py: causality, rotary
positions, context dropout, remat, exact cached decoding, sampling and input errors."""
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chex
from perceiver_agents.blocks import ar_generation
from perceiver_agents.blocks import perceiver_ar
from perceiver_agents.blocks.ar_generation import Generator
from perceiver_agents.blocks.perceiver_ar import PerceiverAR

B, V, N, M = 2, 11, 16, 4
KWARGS = dict(vocab_size=V, max_context=N, num_latents=M, num_channels=16, num_heads=2,
              num_cross_heads=1, num_layers=2, widening_factor=2, rotary_fraction=0.5)


def _model(**overrides):
  kwargs = dict(KWARGS, **overrides)
  return hk.transform(lambda tokens, is_training=False, num_latents=None: PerceiverAR(
      **kwargs)(tokens, is_training=is_training, num_latents=num_latents))


def _tokens(length=N, seed=0):
  return np.random.RandomState(seed).randint(0, V, (B, length)).astype(np.int32)


@pytest.fixture(scope='module')
def generator(params):
  """One Generator (default cache slots) shared by tests, so it compiles once."""
  return Generator(KWARGS, params)


@pytest.fixture(scope='module')
def params():
  """Initialised parameters plus noise, so that zero biases/offsets are not special."""
  p = jax.jit(_model().init)(jax.random.PRNGKey(0), _tokens(8))
  rng = np.random.RandomState(1)
  return jax.tree.map(lambda x: x + 0.3 * rng.randn(*x.shape).astype(np.float32), p)


def _apply(model, params, tokens, **kw):
  return np.asarray(model.apply(params, jax.random.PRNGKey(0), jnp.asarray(tokens), **kw))


@pytest.mark.parametrize('jit', [False, True])
def test_logits_shape_and_causality(params, jit):
  model = _model()
  apply = jax.jit(model.apply, static_argnames=('is_training', 'num_latents')) if jit \
      else model.apply
  tokens = _tokens()
  logits = np.asarray(apply(params, None, tokens))
  chex.assert_shape(logits, (B, M, V))
  chex.assert_tree_all_finite(logits)
  # Latent i sits at position N - M + i: changing position p changes only latents >= p.
  for p in (3, N - M + 1):
    changed = tokens.copy()
    changed[:, p] = (changed[:, p] + 1) % V
    diff = np.abs(np.asarray(apply(params, None, changed)) - logits).max(axis=(0, 2))
    first = max(p - (N - M), 0)
    np.testing.assert_array_equal(diff[:first], 0.0)
    assert np.all(diff[first:] > 1e-6), diff


def test_rotary_scores_depend_only_on_offset():
  rng = np.random.RandomState(0)
  q = jnp.asarray(rng.randn(1, 1, 1, 8), jnp.float32)
  k = jnp.asarray(rng.randn(1, 1, 1, 8), jnp.float32)
  def score(pq, pk):
    rq = perceiver_ar.rotary_embed(q, jnp.array([[pq]]), rotary_dims=6)
    rk = perceiver_ar.rotary_embed(k, jnp.array([[pk]]), rotary_dims=6)
    return float(jnp.sum(rq * rk))
  np.testing.assert_allclose(score(10, 7), score(1003, 1000), rtol=1e-4)
  assert abs(score(10, 7) - score(10, 2)) > 1e-3
  # Unrotated channels and rotary_dims=0 pass through.
  out = perceiver_ar.rotary_embed(q, jnp.array([[5]]), rotary_dims=6)
  np.testing.assert_array_equal(out[..., 6:], q[..., 6:])
  np.testing.assert_array_equal(perceiver_ar.rotary_embed(q, jnp.array([[5]]),
                                                          rotary_dims=0), q)


def test_context_dropout_keeps_latents_and_positions():
  keep_rate = 0.5

  def drop(x):
    module = PerceiverAR(**dict(KWARGS, context_dropout=keep_rate))
    return module._drop_context(x, jnp.broadcast_to(jnp.arange(N), (B, N)), N - M)  # pylint: disable=protected-access

  x = jnp.broadcast_to(jnp.arange(N, dtype=jnp.float32)[None, :, None], (B, N, 3))
  kept, positions = hk.transform(drop).apply({}, jax.random.PRNGKey(3), x)
  prefix_kept = (N - M) - round(keep_rate * (N - M))
  chex.assert_shape(positions, (B, prefix_kept + M))
  for row in np.asarray(positions):
    np.testing.assert_array_equal(row[-M:], np.arange(N - M, N))  # latents never dropped
    assert len(set(row[:-M])) == prefix_kept and row[:-M].max() < N - M
  # Inputs keep their own positions (x holds its position index as value).
  np.testing.assert_array_equal(np.asarray(kept)[..., 0], np.asarray(positions))
  assert not np.array_equal(positions[0], positions[1])  # drawn per example


def test_context_dropout_only_in_training(params):
  apply = jax.jit(_model(context_dropout=0.5).apply, static_argnames='is_training')
  tokens = _tokens()
  eval_a = apply(params, jax.random.PRNGKey(0), tokens)
  eval_b = apply(params, jax.random.PRNGKey(1), tokens)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = apply(params, jax.random.PRNGKey(0), tokens, is_training=True)
  train_b = apply(params, jax.random.PRNGKey(1), tokens, is_training=True)
  assert np.abs(np.asarray(train_a) - np.asarray(train_b)).max() > 1e-6


def test_remat_same_loss_and_gradients_every_parameter_trained(params):
  tokens = _tokens()

  def loss_fn(p, remat):
    logits = _model(use_remat=remat).apply(p, jax.random.PRNGKey(0), tokens,
                                           is_training=True)
    w = np.random.RandomState(7).randn(*logits.shape).astype(np.float32)
    return jnp.sum(logits * w)

  value_and_grad = jax.jit(jax.value_and_grad(loss_fn), static_argnums=1)
  plain = value_and_grad(params, False)
  remat = value_and_grad(params, True)
  np.testing.assert_allclose(plain[0], remat[0], rtol=1e-5)
  chex.assert_trees_all_close(plain[1], remat[1], rtol=1e-4, atol=1e-5)
  dead = [k for k, v in jax.tree_util.tree_flatten_with_path(plain[1])[0]
          if not np.any(np.asarray(v) != 0)]
  assert not dead, dead


@pytest.mark.parametrize('max_latents', [6, M])
def test_cached_decoding_matches_uncached_forward_at_every_step(params, max_latents):
  """Each cached step's logits equal the full forward on the same tokens and window."""
  model = _model()
  generator = Generator(KWARGS, params, max_latents=max_latents)
  prompt, steps = _tokens(5, seed=2), N - 5
  result = generator.generate(prompt, num_tokens=steps, return_logits=True)
  sequence = np.concatenate([prompt, result.tokens], axis=1)
  if max_latents == 6:  # The window restarted at least twice.
    assert len(set(result.window_starts.tolist())) >= 3
  else:  # S = M: the window slides by one each token.
    np.testing.assert_array_equal(np.diff(result.window_starts[1:]), 1)
  for t in range(steps):
    length = prompt.shape[1] + t
    window = length - int(result.window_starts[t])
    expected = _apply(model, params, sequence[:, :length], num_latents=window)[:, -1]
    np.testing.assert_allclose(result.logits[:, t], expected, atol=1e-5, rtol=1e-5)
    if max_latents == M and length >= M:  # ... which is the plain M-latent model.
      plain = _apply(model, params, sequence[:, :length])[:, -1]
      np.testing.assert_allclose(result.logits[:, t], plain, atol=1e-5, rtol=1e-5)
  uncached = generator.generate(prompt, num_tokens=steps, cached=False, return_logits=True)
  np.testing.assert_array_equal(uncached.tokens, result.tokens)
  np.testing.assert_allclose(uncached.logits, result.logits, atol=1e-5, rtol=1e-5)


def test_prompt_shorter_than_latents(params, generator):
  prompt = _tokens(2, seed=3)
  result = generator.generate(prompt, num_tokens=3, return_logits=True)
  expected = _apply(_model(), params, prompt, num_latents=2)[:, -1]
  np.testing.assert_allclose(result.logits[:, 0], expected, atol=1e-5)


def test_sampling_top_k_top_p_and_greedy():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
  key = jax.random.PRNGKey(0)
  greedy = ar_generation.sample_logits(key, logits, temperature=0.0)
  np.testing.assert_array_equal(greedy, 0)
  top1 = ar_generation.sample_logits(key, logits, temperature=1.0, top_k=1)
  np.testing.assert_array_equal(top1, 0)
  top2 = np.asarray(ar_generation.sample_logits(key, logits, temperature=1.0, top_k=2))
  assert set(top2.tolist()) == {0, 1}
  np.testing.assert_allclose(np.mean(top2 == 0), 0.5 / 0.8, atol=0.03)
  # top_p=0.6: {0.5} does not reach 0.6, {0.5, 0.3} does.
  nucleus = np.asarray(ar_generation.sample_logits(key, logits, temperature=1.0,
                                                   top_p=0.6))
  assert set(nucleus.tolist()) == {0, 1}
  full = np.asarray(ar_generation.sample_logits(key, logits, temperature=1.0))
  assert set(full.tolist()) == {0, 1, 2, 3}


def test_same_seed_same_samples(generator):
  prompt = _tokens(5)
  a = generator.generate(prompt, num_tokens=6, rng=jax.random.PRNGKey(4), temperature=1.0)
  b = generator.generate(prompt, num_tokens=6, rng=jax.random.PRNGKey(4), temperature=1.0)
  np.testing.assert_array_equal(a.tokens, b.tokens)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_latents=N + 1), r'num_latents \(M=17\) must be <= max_context \(N=16\)'),
    (dict(rotary_fraction=1.5), 'rotary_fraction'),
    (dict(context_dropout=1.0), 'context_dropout'),
    (dict(num_channels=15), 'num_channels'),
    (dict(vocab_size=0), 'vocab_size'),
])
def test_bad_config(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _model(**kwargs).init(jax.random.PRNGKey(0), _tokens(8))


def test_bad_inputs(params):
  model = _model()
  with pytest.raises(ValueError, match=r'num_latents \(M=4\) must be between 1 and the '
                                       r'input length \(N=3\)'):
    model.apply(params, None, _tokens(3))
  with pytest.raises(ValueError, match=r'tokens length \(17\) exceeds max_context \(16\)'):
    model.apply(params, None, _tokens(N + 1))
  with pytest.raises(ValueError, match='integer token ids'):
    model.apply(params, None, _tokens().astype(np.float32))
  with pytest.raises(ValueError, match='rank 2'):
    model.apply(params, None, _tokens()[0])


@pytest.mark.parametrize('prompt, kwargs, match', [
    (np.zeros((1, 0), np.int32), {}, 'prompt is empty'),
    (np.zeros((1, N), np.int32), {}, r'prompt length \(16\) \+ num_tokens \(1\) exceeds'),
    (np.zeros((1, 3), np.int32), dict(num_tokens=0), 'num_tokens must be >= 1'),
    (np.full((1, 3), V, np.int32), {}, r'prompt ids must be in \[0, 11\)'),
    (np.zeros((1, 3), np.int32), dict(temperature=-1.0), 'temperature must be >= 0'),
    (np.zeros((1, 3), np.int32), dict(top_k=V + 1), 'top_k must be an integer'),
    (np.zeros((1, 3), np.int32), dict(top_p=0.0), r'top_p must be in \(0, 1\]'),
    (np.zeros((1, 3), np.int32), dict(top_p=1.5), r'top_p must be in \(0, 1\]'),
    (np.zeros((1, 3), np.int32), dict(temperature=1.0), 'needs a PRNG key'),
])
def test_generation_bad_input(generator, prompt, kwargs, match):
  kwargs = dict(dict(num_tokens=1), **kwargs)
  with pytest.raises(ValueError, match=match):
    generator.generate(prompt, **kwargs)


def test_generator_rejects_too_few_cache_slots(params):
  with pytest.raises(ValueError, match=r'max_latents \(3\) must be >= num_latents \(4\)'):
    Generator(KWARGS, params, max_latents=M - 1)
