"""Fuzzing the public blocks: random shapes, ranks, dtypes and configuration values.

Every case either builds (and has the documented output shape) or fails with one
ValueError that names an argument; anything else escaping from inside JAX or Haiku is a
failure. Each block is traced (jax.eval_shape of init and apply), so a case costs
milliseconds. The number of cases tried is reported in the terminal summary.
"""

import os
import pathlib
import sys

import haiku as hk
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents import blocks

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import fuzzing  # noqa: E402  (tests/fuzzing.py)

# Whole tracebacks, so that the frame that raised is the real one (see outcome()).
jax.config.update('jax_traceback_filtering', 'off')

SETTINGS = fuzzing.settings(max_examples=40)


def mostly(valid, invalid):
  """Valid values three times in four, so that many cases get past the checks."""
  return st.one_of(valid, valid, valid, invalid)


DTYPES = mostly(st.sampled_from(['float32', 'bfloat16']),
                st.sampled_from(['float16', 'int32', 'bool', 'complex64']))
DIM = mostly(st.sampled_from([2, 4]), st.integers(0, 5))
SMALL = mostly(st.sampled_from([None, 4, 8]), st.integers(-2, 7))
HEADS = mostly(st.sampled_from([1, 2]), st.integers(-1, 4))


def shape(valid_rank=3, *, ranks=(1, 2, 3, 4)):
  rank = mostly(st.just(valid_rank), st.sampled_from(ranks))
  return rank.flatmap(lambda r: st.tuples(*[DIM] * r))


def _raised_in_project(error: BaseException) -> bool:
  """Whether the innermost frame of `error`'s traceback is this project's own code."""
  tb = error.__traceback__
  while tb.tb_next is not None:
    tb = tb.tb_next
  return f'{os.sep}perceiver_agents{os.sep}' in tb.tb_frame.f_code.co_filename


def outcome(fn, *, names):
  """Runs fn(); returns its value, or None for a ValueError raised by the project's own
  checks (not from inside JAX or Haiku) whose one-line message names one of `names`."""
  try:
    return fn()
  except ValueError as e:
    message = str(e)
    assert _raised_in_project(e), f'raised inside a library: {message!r}'
    assert message and '\n' not in message.strip(), message
    assert any(n in message for n in names), f'{message!r} names none of {names}'
    return None


def trace(module_fn, *args):
  """eval_shape of init then apply of hk.transform(module_fn) on `args`."""
  f = hk.transform(module_fn)
  params = jax.eval_shape(f.init, jax.random.PRNGKey(0), *args)
  return jax.eval_shape(f.apply, params, jax.random.PRNGKey(1), *args)


def array(shape_, dtype):
  return jnp.zeros(shape_, dtype)


ATTENTION_NAMES = ('inputs_q', 'inputs_kv', 'attention_mask', 'num_heads', 'qk_channels',
                   'v_channels', 'output_channels', 'chunk_size', 'dtype')


@SETTINGS
@hypothesis.given(heads=HEADS, qk=SMALL, v=SMALL, out=SMALL, q_shape=shape(),
                  kv_shape=shape(), mask=st.one_of(st.none(), shape(3)),
                  dtype=DTYPES, chunks=st.sampled_from(
                      [(None, None), (2, None), (None, 2), (0, None), (None, -1), (1, 1)]))
def _attention(cases, heads, qk, v, out, q_shape, kv_shape, mask, dtype, chunks):
  cases.count += 1
  q_chunk, kv_chunk = chunks

  def run():
    def f(q, kv, m):
      return blocks.Attention(num_heads=heads, qk_channels=qk, v_channels=v,
                              output_channels=out, query_chunk_size=q_chunk,
                              kv_chunk_size=kv_chunk)(q, kv, attention_mask=m)
    return trace(f, array(q_shape, dtype), array(kv_shape, dtype),
                 None if mask is None else jnp.ones(mask, bool))

  result = outcome(run, names=ATTENTION_NAMES)
  if result is not None:
    channels = out or v or qk or q_shape[-1]
    assert result.shape == (kv_shape[0], q_shape[-2], channels)
    cases.built += 1


def test_fuzz_attention(record_property):
  with fuzzing.Cases(record_property, 'Attention', at_least=40) as cases:
    _attention(cases)  # pylint: disable=no-value-for-parameter


@SETTINGS
@hypothesis.given(heads=HEADS, widening=st.integers(-1, 2), shape_for_attn=st.sampled_from(
    ['kv', 'q', 'x']), q_shape=shape(), kv_shape=shape(), dtype=DTYPES,
                  residual=st.booleans(), qk=SMALL)
def _cross_attention(cases, heads, widening, shape_for_attn, q_shape, kv_shape, dtype,
                     residual, qk):
  cases.count += 1

  def run():
    def f(q, kv):
      return blocks.CrossAttention(num_heads=heads, widening_factor=widening,
                                   shape_for_attn=shape_for_attn, qk_channels=qk,
                                   use_query_residual=residual)(q, kv, is_training=False)
    return trace(f, array(q_shape, dtype), array(kv_shape, dtype))

  result = outcome(run, names=ATTENTION_NAMES + ('widening_factor', 'shape_for_attn'))
  if result is not None:
    assert result.shape == (kv_shape[0], q_shape[-2], q_shape[-1])
    cases.built += 1


def test_fuzz_cross_attention(record_property):
  with fuzzing.Cases(record_property, 'CrossAttention', at_least=40) as cases:
    _cross_attention(cases)  # pylint: disable=no-value-for-parameter


ENCODER_NAMES = ('inputs', 'input_mask', 'num_self_attends_per_block', 'num_blocks',
                 'z_index_dim', 'num_z_channels', 'num_self_attend_heads',
                 'num_cross_attend_heads', 'chunk_size', 'qk_channels', 'v_channels',
                 'dtype', 'widening_factor')


@SETTINGS
@hypothesis.given(per_block=mostly(st.just(1), st.integers(-1, 2)),
                  num_blocks=mostly(st.sampled_from([1, 2]), st.integers(-1, 0)),
                  latents=mostly(st.just(3), st.integers(-1, 4)),
                  channels=mostly(st.sampled_from([4, 8]), st.integers(-1, 7)),
                  self_heads=HEADS, cross_heads=HEADS, every=st.booleans(),
                  kv_chunk=st.sampled_from([None, 0, 2]), in_shape=shape(),
                  mask=st.one_of(st.none(), shape(2)), dtype=DTYPES)
def _encoder(cases, per_block, num_blocks, latents, channels, self_heads, cross_heads,
             every, kv_chunk, in_shape, mask, dtype):
  cases.count += 1

  def run():
    def f(x, m):
      encoder = blocks.PerceiverEncoder(
          num_self_attends_per_block=per_block, num_blocks=num_blocks,
          z_index_dim=latents, num_z_channels=channels, num_self_attend_heads=self_heads,
          num_cross_attend_heads=cross_heads, cross_attend_every_block=every,
          cross_attend_kv_chunk_size=kv_chunk)
      return encoder(x, encoder.latents(), is_training=False, input_mask=m)
    return trace(f, array(in_shape, dtype), None if mask is None else jnp.ones(mask, bool))

  result = outcome(run, names=ENCODER_NAMES)
  if result is not None:
    assert result.shape == (in_shape[0], latents, channels)
    cases.built += 1


def test_fuzz_perceiver_encoder(record_property):
  with fuzzing.Cases(record_property, 'PerceiverEncoder', at_least=40) as cases:
    _encoder(cases)  # pylint: disable=no-value-for-parameter


DECODER_NAMES = ('output_num_channels', 'position_encoding_type', 'output_index_dims',
                 'num_heads', 'decode_chunk_size', 'num_channels', 'z', 'inputs', 'query',
                 'qk_channels', 'v_channels', 'dtype', 'num_classes', 'index_dim',
                 'max_resolution', 'num_bands')


@SETTINGS
@hypothesis.given(out_channels=mostly(st.just(4), st.integers(-1, 6)),
                  encoding=mostly(st.sampled_from(['trainable', 'fourier']),
                                  st.just('bogus')),
                  index_dims=mostly(st.just((2, 3)), st.one_of(
                      st.none(), st.tuples(st.integers(-1, 4)),
                      st.tuples(st.integers(0, 3), st.integers(0, 3)))),
                  heads=HEADS, chunk=st.sampled_from([None, 0, 1, 3]),
                  z_shape=shape(), in_shape=shape(), dtype=DTYPES,
                  classes=mostly(st.just(3), st.integers(-1, 4)), classify=st.booleans())
def _decoder(cases, out_channels, encoding, index_dims, heads, chunk, z_shape, in_shape,
             dtype, classes, classify):
  cases.count += 1
  kwargs = dict(trainable_position_encoding_kwargs=dict(num_channels=8),
                fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(4, 4),
                                                      concat_pos=True, sine_only=False))

  def run():
    def f(inputs, z):
      if classify:
        decoder = blocks.ClassificationDecoder(classes, position_encoding_type=encoding,
                                               num_heads=heads, **kwargs)
      else:
        decoder = blocks.BasicDecoder(output_num_channels=out_channels,
                                      position_encoding_type=encoding,
                                      output_index_dims=index_dims, num_heads=heads,
                                      decode_chunk_size=chunk, **kwargs)
      query = decoder.decoder_query(inputs)
      return decoder(query, z, is_training=False)
    return trace(f, array(in_shape, dtype), array(z_shape, dtype))

  result = outcome(run, names=DECODER_NAMES)
  if result is not None:
    if classify:
      assert result.shape == (z_shape[0], classes)
    else:
      assert result.shape == (z_shape[0], int(np.prod(index_dims)), out_channels)
    cases.built += 1


def test_fuzz_decoders(record_property):
  with fuzzing.Cases(record_property, 'BasicDecoder/ClassificationDecoder',
                     at_least=40) as cases:
    _decoder(cases)  # pylint: disable=no-value-for-parameter


AR_NAMES = ('vocab_size', 'max_context', 'num_latents', 'num_channels', 'num_heads',
            'num_layers', 'rotary_fraction', 'context_dropout', 'dropout_prob', 'tokens',
            'widening_factor')


@SETTINGS
@hypothesis.given(vocab=mostly(st.just(5), st.integers(-1, 8)),
                  context=mostly(st.just(6), st.integers(-1, 8)),
                  latents=mostly(st.just(2), st.integers(-1, 8)),
                  channels=mostly(st.just(8), st.integers(-1, 8)), heads=HEADS,
                  layers=mostly(st.just(1), st.integers(-1, 2)),
                  rotary=mostly(st.just(0.5), st.sampled_from([-0.5, 0.0, 1.0, 1.5])),
                  dropout=mostly(st.just(0.0), st.sampled_from([0.5, 1.0])),
                  token_shape=mostly(st.tuples(st.just(2), st.sampled_from([4, 6])),
                                     shape(2)),
                  token_dtype=mostly(st.just('int32'),
                                     st.sampled_from(['float32', 'bool', 'uint8'])),
                  training=st.booleans())
def _perceiver_ar(cases, vocab, context, latents, channels, heads, layers, rotary, dropout,
                  token_shape, token_dtype, training):
  cases.count += 1

  def run():
    def f(tokens):
      model = blocks.PerceiverAR(vocab_size=vocab, max_context=context, num_latents=latents,
                                 num_channels=channels, num_heads=heads, num_layers=layers,
                                 rotary_fraction=rotary, context_dropout=dropout)
      return model(tokens, is_training=training)
    return trace(f, array(token_shape, token_dtype))

  result = outcome(run, names=AR_NAMES)
  if result is not None:
    assert result.shape == (token_shape[0], latents, vocab)
    cases.built += 1


def test_fuzz_perceiver_ar(record_property):
  with fuzzing.Cases(record_property, 'PerceiverAR', at_least=40) as cases:
    _perceiver_ar(cases)  # pylint: disable=no-value-for-parameter


if __name__ == '__main__':
  pytest.main([__file__, '-q'])
