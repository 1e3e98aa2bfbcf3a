"""Sampling from a Perceiver AR: cached decoding, and full recomputation as the reference.

Shape letters: B batch, P prompt length, T generated tokens, V vocabulary, N max_context,
M latents, S latent cache slots (`max_latents`).

    generator = Generator(model_kwargs, params)           # kwargs of blocks.PerceiverAR
    result = generator.generate(prompt, num_tokens=64, rng=jax.random.PRNGKey(0),
                                temperature=0.8, top_k=40, top_p=0.95)
    result.tokens                                          # int32 [B, T]

The latent window starts on the last min(M, P) prompt positions and grows by one latent
per generated token; when it reaches S latents it restarts on the last M - 1 positions
(see blocks/perceiver_ar.py). Both paths (cached and `cached=False`) compute the logits of
the same model on the same window, so their greedy outputs agree.
"""
import functools
from typing import Any, Mapping, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_agents.blocks.perceiver_ar import PerceiverAR


def check_sampling(*, temperature: float, top_k: int, top_p: float,
                   vocab_size: int) -> None:
  """Raises ValueError naming the sampling parameter that is out of range."""
  if not np.isfinite(temperature) or temperature < 0:
    raise ValueError(f'temperature must be >= 0 (0 = greedy), got {temperature}.')
  if int(top_k) != top_k or not 0 <= top_k <= vocab_size:
    raise ValueError(f'top_k must be an integer in [0, vocab_size={vocab_size}] '
                     f'(0 = off), got {top_k}.')
  if not 0 < top_p <= 1:
    raise ValueError(f'top_p must be in (0, 1] (1 = off), got {top_p}.')


def sample_logits(rng: jax.Array, logits: jax.Array, *, temperature: float,
                  top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Draws one token per row of logits [B, V]; returns int32 [B].

  temperature 0 is greedy (argmax). top_k > 0 keeps the k most likely tokens; top_p < 1
  keeps the smallest set of most likely tokens whose probability reaches top_p.
  """
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # [B, V], descending
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # The smallest logit still needed to reach top_p (the first one always is).
    needed = jnp.sum(cumulative - jax.nn.softmax(sorted_logits, axis=-1) < top_p,
                     axis=-1, keepdims=True)  # [B, 1]
    threshold = jnp.take_along_axis(sorted_logits, needed - 1, axis=-1)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.lru_cache(maxsize=16)
def _sampler(temperature: float, top_k: int, top_p: float):
  """sample_logits compiled once per setting: (key, logits [B, V]) -> int32 [B]."""
  return jax.jit(lambda key, logits: sample_logits(
      key, logits, temperature=temperature, top_k=top_k, top_p=top_p))


class GenerationResult(NamedTuple):
  tokens: np.ndarray                    # int32 [B, T]
  logits: Optional[np.ndarray]          # float32 [B, T, V] when asked for, else None
  window_starts: np.ndarray             # int [T]: latent window start of each token's step


class Generator:
  """Generates from `params` of a PerceiverAR built with `model_kwargs`.

  Args:
    model_kwargs: the keyword arguments of blocks.PerceiverAR used in training (its
      `name` too, if it was not the default), so that parameter names match.
    params: the model's Haiku parameters.
    max_latents: S, latent cache slots (>= num_latents; default 2 * num_latents). S = M
      slides the window by one each token (exactly the M-latent model, but the latent stack
      is recomputed every token); larger S recomputes it once every S - M + 1 tokens.
  """

  def __init__(self, model_kwargs: Mapping[str, Any], params: Any, *,
               max_latents: Optional[int] = None):
    self._kwargs = dict(model_kwargs)
    for key in ('vocab_size', 'max_context', 'num_latents'):
      if key not in self._kwargs:
        raise ValueError(f'model_kwargs must give {key!r}.')
    self.vocab_size = self._kwargs['vocab_size']
    self.max_context = self._kwargs['max_context']
    self.num_latents = self._kwargs['num_latents']
    self.max_latents = 2 * self.num_latents if max_latents is None else max_latents
    if self.max_latents < self.num_latents:
      raise ValueError(f'max_latents ({self.max_latents}) must be >= num_latents '
                       f'({self.num_latents}).')
    self.params = params
    model = lambda: PerceiverAR(**self._kwargs)  # pylint: disable=unnecessary-lambda-assignment
    self._prefill = jax.jit(hk.transform(
        lambda tokens, w: model().prefill(tokens, num_latents=w,
                                          cache_latents=self.max_latents)).apply,
                            static_argnums=(3,))
    self._step = jax.jit(hk.transform(
        lambda token, cache: model().decode_step(token, cache)).apply)
    self._rewindow = jax.jit(hk.transform(
        lambda cache: model().rewindow(cache, num_latents=self.num_latents)).apply)
    self._forward = jax.jit(hk.transform(
        lambda tokens, start, w: model()(tokens, is_training=False, num_latents=w,
                                         latent_start=start)).apply,
                            static_argnums=(3, 4))

  def _check(self, prompt: np.ndarray, num_tokens: int) -> None:
    if prompt.ndim != 2:
      raise ValueError(f'prompt must be int token ids [B, P], got shape {prompt.shape}.')
    if prompt.shape[1] == 0:
      raise ValueError('prompt is empty; give at least one token.')
    if not np.issubdtype(prompt.dtype, np.integer):
      raise ValueError(f'prompt must hold integer token ids, got dtype {prompt.dtype}.')
    if prompt.min() < 0 or prompt.max() >= self.vocab_size:
      raise ValueError(f'prompt ids must be in [0, {self.vocab_size}), got '
                       f'[{prompt.min()}, {prompt.max()}].')
    if num_tokens < 1:
      raise ValueError(f'num_tokens must be >= 1, got {num_tokens}.')
    if prompt.shape[1] + num_tokens > self.max_context:
      raise ValueError(
          f'prompt length ({prompt.shape[1]}) + num_tokens ({num_tokens}) exceeds the '
          f"model's context (max_context={self.max_context}); shorten the prompt or "
          f'generate fewer tokens.')

  def generate(self, prompt, *, num_tokens: int, rng: Optional[jax.Array] = None,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               cached: bool = True, return_logits: bool = False) -> GenerationResult:
    """Continues prompt int [B, P] by `num_tokens` tokens.

    `cached=False` recomputes the full forward (the whole context and latent window) for
    every token; it is the reference the cached path is checked against.
    """
    prompt = np.asarray(prompt)
    self._check(prompt, num_tokens)
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p,
                   vocab_size=self.vocab_size)
    if temperature > 0 and rng is None:
      raise ValueError('rng: sampling with temperature > 0 needs a PRNG key.')
    rng = jax.random.PRNGKey(0) if rng is None else rng
    sample = _sampler(float(temperature), int(top_k), float(top_p))
    batch, length = prompt.shape
    start = length - min(self.num_latents, length)
    if cached:
      logits, cache = self._prefill(self.params, None, jnp.asarray(prompt, jnp.int32),
                                    length - start)
      logits = logits[:, -1]
    else:
      context = np.zeros((batch, self.max_context), np.int32)
      context[:, :length] = prompt
      logits = self._uncached_logits(context, length, start)
    tokens, all_logits, starts = [], [], []
    for t in range(num_tokens):
      token = sample(jax.random.fold_in(rng, t), logits)  # [B]
      tokens.append(token)
      starts.append(start)
      if return_logits:
        all_logits.append(logits)
      if t == num_tokens - 1:
        break
      if length - start == self.max_latents:  # The window is full: restart it.
        if cached:
          cache = self._rewindow(self.params, None, cache)
        start = length - (self.num_latents - 1)
      if cached:
        logits, cache = self._step(self.params, None, token, cache)
      else:
        context[:, length] = np.asarray(token)
        logits = self._uncached_logits(context, length + 1, start)
      length += 1
    return GenerationResult(
        tokens=np.stack(jax.device_get(tokens), axis=1),
        logits=np.stack(jax.device_get(all_logits), axis=1) if return_logits else None,
        window_starts=np.asarray(starts))

  def _uncached_logits(self, context: np.ndarray, length: int, start: int) -> jax.Array:
    """Logits [B, V] of the token after context[:, :length], latents from `start` on.

    The forward runs on the whole padded context [B, N] with the window [start, start + W),
    W = min(S, N - start); causality makes the padding after `length` irrelevant.
    """
    window = min(self.max_latents, self.max_context - start)
    logits = self._forward(self.params, None, jnp.asarray(context), start, window)
    return logits[:, length - 1 - start]
