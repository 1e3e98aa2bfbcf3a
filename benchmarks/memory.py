"""Memory at scale: chunked decoding / cross-attention and rematerialised latent layers.

(a) Full-resolution optical flow inference with the published flow model
    (zoo.PUBLISHED['optical_flow']: 368x496 -> 182,528 inputs and 182,528 flow queries,
    2048 x 512 latents, 24 latent layers, 41M random parameters), one frame pair:
      unchunked; decode_chunk_size only; decode_chunk_size + the encoder's
      cross_attend_kv_chunk_size. With chunking the zoo keeps the inputs (which are
      also the queries) compact, 64 features + 2 coordinates per position, and expands
      their 258 Fourier channels chunk by chunk (lazy_position_features), so the
      [1, 182528, 322] inputs (0.22 GiB) are never alive in full.
(b) A training step (value_and_grad) of a PerceiverEncoder with many latent layers,
    with and without remat_latents.
(c) Whole-clip reconstruction with the published video autoencoder
    (zoo.PUBLISHED['video_autoencoder']: 16 x 224 x 224 pixels + 1,920 audio patches +
    the label = 804,737 queries in one call, 17.5M random parameters): unchunked;
    decode_chunk_size (the queries built, decoded and postprocessed chunk by chunk,
    each modality on its own); and with the encoder's cross_attend_kv_chunk_size too.

Each variant runs in its own subprocess. Peak memory is reported two ways: XLA's
compiled memory analysis (temp + argument + output bytes of the jitted function) and
the subprocess's peak RSS (resource.getrusage ru_maxrss; includes Python, JAX and
compilation). Outputs are compared to the unchunked ones (max |difference|).

    taskset -c 1 .venv/bin/python benchmarks/memory.py   # ~8 min on one core
    taskset -c 1 .venv/bin/python benchmarks/memory.py --kinds flow   # (a) only

Writes benchmarks/results/memory.json (the kinds run replace theirs; the others' are
kept) and prints a markdown table of the kinds run.
"""
import argparse
import copy
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

RESULTS = pathlib.Path(__file__).parent / 'results' / 'memory.json'
FLOW_VARIANTS = {
    'unchunked': dict(decode_chunk_size=None, kv_chunk_size=None),
    'decode_chunk_size=8192': dict(decode_chunk_size=8192, kv_chunk_size=None),
    'decode_chunk_size=8192 + cross_attend_kv_chunk_size=8192': dict(
        decode_chunk_size=8192, kv_chunk_size=8192),
}
REMAT_ENCODER = dict(num_self_attends_per_block=24, num_blocks=1, z_index_dim=256,
                     num_z_channels=256, num_self_attend_heads=8,
                     num_cross_attend_heads=1, self_attend_widening_factor=4)
REMAT_BATCH, REMAT_INPUTS, REMAT_CHANNELS = 8, 512, 64


def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  return dict(temp=m.temp_size_in_bytes, argument=m.argument_size_in_bytes,
              output=m.output_size_in_bytes,
              total=m.temp_size_in_bytes + m.argument_size_in_bytes
              + m.output_size_in_bytes)


def _peak_rss() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_flow(variant: str, out_path: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from perceiver_agents import zoo  # pylint: disable=g-import-not-at-top
  options = FLOW_VARIANTS[variant]
  kwargs = copy.deepcopy(zoo.PUBLISHED['optical_flow'][1])
  kwargs['encoder']['cross_attend_kv_chunk_size'] = options['kv_chunk_size']
  # The parameters do not depend on the image size: initialise at a small one, then
  # perturb every leaf (the published init zeroes the flow head, a trivial output).
  small = dict(copy.deepcopy(kwargs), train_size=(8, 8))
  params = zoo.optical_flow_perceiver(**small).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 2, 8, 8, 3)))
  rng = np.random.RandomState(0)
  params = jax.tree.map(lambda p: np.asarray(p) + 0.02 * rng.randn(*p.shape).astype(
      np.float32), params)
  net = zoo.optical_flow_perceiver(decode_chunk_size=options['decode_chunk_size'],
                                   **kwargs)
  frames = np.random.RandomState(1).uniform(
      -1, 1, (1, 2) + tuple(kwargs['train_size']) + (3,)).astype(np.float32)
  fn = jax.jit(lambda p, x: net.apply(p, None, x))
  start = time.perf_counter()
  compiled = fn.lower(params, frames).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  flow = np.asarray(compiled(params, frames))
  run_s = time.perf_counter() - start
  np.save(out_path, flow)
  return dict(memory=_memory(compiled), peak_rss=_peak_rss(), compile_s=compile_s,
              forward_s=run_s, output_shape=list(flow.shape),
              output_abs_max=float(np.abs(flow).max()))


def run_remat(variant: str, out_path: str) -> dict:
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from perceiver_agents.blocks import perceiver  # pylint: disable=g-import-not-at-top

  def forward(x):
    encoder = perceiver.PerceiverEncoder(remat_latents=variant == 'remat_latents',
                                         **REMAT_ENCODER)
    return encoder(x, encoder.latents(x), is_training=True)

  net = hk.transform(forward)
  x = np.random.RandomState(0).randn(REMAT_BATCH, REMAT_INPUTS,
                                     REMAT_CHANNELS).astype(np.float32)
  params = net.init(jax.random.PRNGKey(0), x)
  target = np.random.RandomState(1).randn(
      REMAT_BATCH, REMAT_ENCODER['z_index_dim'],
      REMAT_ENCODER['num_z_channels']).astype(np.float32)

  def loss(p):
    return ((net.apply(p, None, x) - target) ** 2).mean()

  compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
  value, grads = compiled(params)  # warm-up
  times = []
  for _ in range(3):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params))
    times.append(time.perf_counter() - start)
  leaves = [np.asarray(g).ravel() for g in jax.tree.leaves(grads)]
  np.save(out_path, np.concatenate([np.asarray([value])] + leaves))
  return dict(memory=_memory(compiled), peak_rss=_peak_rss(),
              step_s=float(np.median(times)),
              params=int(sum(np.size(p) for p in jax.tree.leaves(params))))


VIDEO_VARIANTS = {
    'unchunked': dict(decode_chunk_size=None, kv_chunk_size=None),
    'decode_chunk_size=16384': dict(decode_chunk_size=16384, kv_chunk_size=None),
    'decode_chunk_size=16384 + cross_attend_kv_chunk_size=16384': dict(
        decode_chunk_size=16384, kv_chunk_size=16384),
}


def run_video(variant: str, out_path: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from perceiver_agents import zoo  # pylint: disable=g-import-not-at-top
  options = VIDEO_VARIANTS[variant]
  kwargs = copy.deepcopy(zoo.PUBLISHED['video_autoencoder'][1])
  kwargs['encoder']['cross_attend_kv_chunk_size'] = options['kv_chunk_size']
  net = zoo.video_autoencoder(decode_chunk_size=options['decode_chunk_size'], **kwargs)
  t, s = kwargs['num_frames'], kwargs['image_size']
  rng = np.random.RandomState(0)
  images = jnp.asarray(rng.rand(1, t, s, s, 3), jnp.float32)
  audio = jnp.asarray(rng.randn(1, t * kwargs['audio_samples_per_frame'], 1),
                      jnp.float32)
  # Random parameters (the same in every variant: same key), initialised on a
  # one-query subsample; then the whole clip in one call.
  params, state = net.init(jax.random.PRNGKey(0), images, audio,
                           {'image': jnp.arange(1), 'audio': jnp.arange(1)})
  fn = jax.jit(lambda p, st, x, a: net.apply(p, st, None, x, a)[0])
  compiled = fn.lower(params, state, images, audio).compile()
  start = time.perf_counter()
  outputs = jax.block_until_ready(compiled(params, state, images, audio))
  forward_s = time.perf_counter() - start
  np.save(out_path, np.concatenate([np.ravel(outputs[k]) for k in sorted(outputs)]))
  return dict(memory=_memory(compiled), peak_rss=_peak_rss(), forward_s=forward_s)


def _child(kind: str, variant: str, tmp: str) -> tuple:
  out = os.path.join(tmp, f'{kind}_{len(os.listdir(tmp))}.npy')
  cmd = [sys.executable, __file__, '--child', kind, '--variant', variant, '--out', out]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1]), out


KINDS = ('flow', 'remat', 'video')


def main(kinds=KINDS):
  import numpy as np  # pylint: disable=g-import-not-at-top
  gib = 2.0 ** 30
  results = {'flow': {}, 'remat': {}, 'video': {}}
  if RESULTS.exists():
    results.update(json.loads(RESULTS.read_text()))
  results['command'] = 'taskset -c 1 .venv/bin/python benchmarks/memory.py'  # all kinds
  lines = ['| case | XLA temp | XLA temp+arg+out | peak RSS | reduction (XLA total) '
           '| max abs diff vs baseline | time |', '|---|---|---|---|---|---|---|']
  with tempfile.TemporaryDirectory() as tmp:
    for kind, variants, runner_key in (
        ('flow', list(FLOW_VARIANTS), 'forward_s'),
        ('remat', ['plain', 'remat_latents'], 'step_s'),
        ('video', list(VIDEO_VARIANTS), 'forward_s')):
      if kind not in kinds:
        continue
      results[kind] = {}
      base_out, base_total, base_time = None, None, None
      for variant in variants:
        res, out = _child(kind, variant, tmp)
        y = np.load(out)
        if base_out is None:
          base_out, base_total, base_time = y, res['memory']['total'], res[runner_key]
        res['max_abs_diff'] = float(np.abs(y - base_out).max())
        res['reduction'] = base_total / res['memory']['total']
        res['time_ratio'] = res[runner_key] / base_time
        results[kind][variant] = res
        m = res['memory']
        lines.append(
            f'| {kind}: {variant} | {m["temp"] / gib:.3f} GiB | {m["total"] / gib:.3f} GiB '
            f'| {res["peak_rss"] / gib:.2f} GiB | {res["reduction"]:.2f}x '
            f'| {res["max_abs_diff"]:.2e} | {runner_key} {res[runner_key]:.2f} s '
            f'({res["time_ratio"]:.2f}x) |')
        print(lines[-1], flush=True)
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(results, indent=1))
  print('\n'.join(lines))


if __name__ == '__main__':
  parser = argparse.ArgumentParser()
  parser.add_argument('--kinds', nargs='+', choices=KINDS, default=list(KINDS),
                      help='which of (a) flow, (b) remat, (c) video to run')
  parser.add_argument('--child', choices=KINDS)
  parser.add_argument('--variant')
  parser.add_argument('--out')
  args = parser.parse_args()
  if args.child:
    runner = {'flow': run_flow, 'remat': run_remat, 'video': run_video}[args.child]
    print(json.dumps(runner(args.variant, args.out)))
  else:
    main(tuple(args.kinds))
