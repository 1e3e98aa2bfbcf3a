"""This library against Hugging Face transformers' PyTorch Perceiver, same configs, one run.

    .venv/bin/python benchmarks/peer.py [--configs language_small image_small]
        [--repeats 5] [--rounds 2] [--batch N] [--json benchmarks/results/peer.json]
        [--variants jax jax_bf16 torch torch_bf16 torch_compile torch_compile_bf16]

Variants (the table's rows): this library in float32 and with bfloat16 compute (as
`train.compute_dtype=bfloat16`: float32 master weights, bfloat16 operands, float32
accumulation), HF eager and `torch.compile`, each in float32 and under
`torch.autocast(device, torch.bfloat16)`. MFU is reported against the framework's measured
float32 and bfloat16 matmul peaks.

Needs the benchmark extra (`pip install -c constraints.txt -e '.[bench]'`: torch 2.13.0
CPU, transformers). For each configuration both models are built with the same sizes
(HF's PerceiverForMaskedLM / PerceiverForImageClassificationLearned against
`perceiver_agents.zoo`'s builders; dropout off, tanh GELU in both) and run on the same
batch. Each framework runs in a process of its own (side by side in one process they
slowed each other), JAX and torch alternating for --rounds rounds of --repeats timed
calls, so that all see the same machine load; medians over all calls are reported:

  forward     logits from inputs (inference mode, no gradients);
  train step  forward + cross-entropy + backward + AdamW update.

Each process also measures its framework's float32 matmul peak ([M, K] @ [K, N] with
M = N = K = 2048, 8192 on a GPU; best of several, before and after), and the JAX process
the model FLOPs per step from XLA's cost analysis of the lowered functions (the same
count on every platform: see model_flops); model FLOP utilisation = FLOPs / time / that
framework's peak. Both frameworks' MFU use this library's count: HF projects queries
shared by the batch (latents, the decoder's grid) once per example, so its own count is
higher (BENCHMARKS.md, "CPU train step against the PyTorch peer") and its MFU is
understated by that ratio. Prints a markdown table and writes
--json after each configuration; `--table_from JSON...` prints the table of saved
results (e.g. a GPU run's, copied here).

Configurations ('full' variants are the released model sizes, slow on a CPU):
  language_small  9M params: 512 bytes, d_model 256, 128 x 512 latents, 6 self-attends,
                  batch 8.
  language_full   the published 201M-parameter model, batch 4 x 2048 bytes.
  image_small     64x64 RGB, conv1x1 + learned positions (256 + 256 channels),
                  128 x 512 latents, 6 self-attends, 1000 classes, batch 8.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CONFIGS = {
    'language_small': dict(kind='language', batch=8, seq_len=512, d_model=256,
                           num_latents=128, d_latents=512, layers=6, heads=8,
                           cross_heads=8, qk_channels=256, v_channels=512),
    'language_full': dict(kind='language', batch=4, seq_len=2048, d_model=768,
                          num_latents=256, d_latents=1280, layers=26, heads=8,
                          cross_heads=8, qk_channels=256, v_channels=1280),
    'image_small': dict(kind='image', batch=8, image_size=64, num_latents=128,
                        d_latents=512, layers=6, heads=8, cross_heads=1,
                        num_classes=1000),
}
LEARNING_RATE = 1e-4


# ---------------------------------------------------------------------- JAX side.

def jax_model(cfg: dict):
  """(forward_fn(params, state, inputs), loss_fn, params, state, inputs, labels)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from perceiver_agents import zoo  # pylint: disable=g-import-not-at-top

  rng = np.random.RandomState(0)
  # The released configurations (zoo.PUBLISHED), resized.
  sizes = dict(num_self_attends_per_block=cfg['layers'], num_blocks=1,
               z_index_dim=cfg['num_latents'], num_z_channels=cfg['d_latents'],
               num_self_attend_heads=cfg['heads'],
               num_cross_attend_heads=cfg['cross_heads'])
  if cfg['kind'] == 'language':
    _, published = zoo.PUBLISHED['language_perceiver']
    model = zoo.language_perceiver(**dict(
        published, max_seq_len=cfg['seq_len'], d_model=cfg['d_model'],
        encoder=dict(published['encoder'], qk_channels=cfg['qk_channels'],
                     v_channels=cfg['v_channels'], **sizes),
        decoder=dict(published['decoder'], output_num_channels=cfg['d_latents'],
                     output_index_dims=cfg['seq_len'],
                     num_z_channels=cfg['d_latents'], v_channels=cfg['d_model'],
                     trainable_position_encoding_kwargs=dict(
                         num_channels=cfg['d_model']))))
    tokens = jnp.asarray(rng.randint(0, 262, (cfg['batch'], cfg['seq_len'])))
    mask = jnp.ones(tokens.shape, bool)
    inputs, labels = (tokens, mask), tokens
    params = model.init(jax.random.PRNGKey(0), *inputs)
    state = {}
    apply = lambda p, s, x, training: (model.apply(p, None, *x, is_training=training),
                                       s)
  else:
    _, published = zoo.PUBLISHED['imagenet_learned_position_encoding']
    model = zoo.imagenet_perceiver(**dict(
        published, num_classes=cfg['num_classes'],
        encoder=dict(published['encoder'], **sizes),
        # HF's classification decoder adds the query back (use_query_residual=True).
        decoder=dict(published['decoder'], num_z_channels=cfg['d_latents'],
                     use_query_residual=True,
                     trainable_position_encoding_kwargs=dict(
                         init_scale=0.02, num_channels=cfg['d_latents']))))
    size = cfg['image_size']
    inputs = (jnp.asarray(rng.randn(cfg['batch'], size, size, 3), jnp.float32),)
    labels = jnp.asarray(rng.randint(0, cfg['num_classes'], cfg['batch']))
    params, state = model.init(jax.random.PRNGKey(0), *inputs)
    apply = lambda p, s, x, training: model.apply(p, s, None, *x,
                                                  is_training=training)
  return apply, params, state, inputs, labels


def jax_step_functions(cfg: dict, dtype: str = 'float32'):
  """Forward and train step (uncompiled), with their arguments and parameter count.

  dtype 'bfloat16' computes as `train.compute_dtype=bfloat16` does: parameters and
  inputs cast to bfloat16 inside the functions (float32 master weights and AdamW
  state), logits and loss in float32.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from perceiver_agents.learner import update  # pylint: disable=g-import-not-at-top

  apply, params, state, inputs, labels = jax_model(cfg)
  optimizer = optax.adamw(LEARNING_RATE)
  opt_state = optimizer.init(params)
  compute = update.compute_dtype(dtype)

  def run(params, state, inputs, training):
    logits, state = apply(update.cast_floating(params, compute), state,
                          update.cast_floating(inputs, compute), training)
    return logits.astype(jnp.float32), state

  def forward(params, state, inputs):
    return run(params, state, inputs, False)[0]

  def loss_fn(params, state, inputs, labels):
    logits, state = run(params, state, inputs, True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, state

  def train_step(params, opt_state, state, inputs, labels):
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, state, inputs, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, state, loss

  num_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  return ((forward, (params, state, inputs)),
          (train_step, (params, opt_state, state, inputs, labels)), num_params)


def model_flops(forward, train_step) -> dict:
  """XLA's FLOPs per call of the (function, arguments) pairs, the same on every platform.

  Counted on the lowered (unoptimised) module, traced with XLA's products only: a
  compiled module hides products in custom calls the count skips (cuBLAS on a GPU,
  the OpenBLAS kernel of kernels/cpu_gemm.py on a CPU); BENCHMARKS.md's GPU peer section
  gives the size of the difference.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from perceiver_agents.kernels import cpu_gemm  # pylint: disable=g-import-not-at-top
  flops = {}
  with cpu_gemm.xla_only():
    for name, (fn, args) in (('forward', forward), ('train_step', train_step)):
      # A fresh wrapper: JAX caches traces per function, and a later jit of `fn`
      # itself would otherwise reuse this XLA-only trace (cpu_gemm.xla_only).
      analysis = jax.jit(lambda *a, fn=fn: fn(*a)).lower(*args).cost_analysis()
      if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
      flops[name] = float(analysis['flops'])
  return flops


def jax_functions(cfg: dict, dtype: str = 'float32'):
  """Compiled forward and train step as no-argument calls, XLA's FLOPs per call, and
  the parameter count."""
  import jax  # pylint: disable=g-import-not-at-top
  from perceiver_agents.kernels import cpu_gemm  # pylint: disable=g-import-not-at-top
  (forward, forward_args), (train_step, step_args), num_params = jax_step_functions(
      cfg, dtype)
  flops = model_flops((forward, forward_args), (train_step, step_args))
  fwd = jax.jit(forward).lower(*forward_args).compile()
  step = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(*step_args).compile()
  if (dtype == 'float32' and cpu_gemm.enabled() and
      'pa_strided_gemm' not in step.as_text()):
    raise RuntimeError('the compiled train step does not call the CPU GEMM kernel '
                       'although it is enabled (a stale XLA-only trace?)')
  carry = dict(zip(('params', 'opt_state', 'state'), step_args[:3]))
  inputs, labels = step_args[3:]

  def run_forward():
    jax.block_until_ready(fwd(carry['params'], carry['state'], inputs))

  def run_step():
    out = step(carry['params'], carry['opt_state'], carry['state'], inputs, labels)
    jax.block_until_ready(out)
    carry['params'], carry['opt_state'], carry['state'], _ = out

  return run_forward, run_step, flops, num_params


# -------------------------------------------------------------------- PyTorch side.

def torch_device():
  """'cuda' when JAX runs on a GPU (and torch sees one), else 'cpu'."""
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  return 'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'


def _torch_sync():
  import torch  # pylint: disable=g-import-not-at-top
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def torch_functions(cfg: dict, *, autocast: bool = False, compiled: bool = False):
  """HF's model: forward and train step as no-argument calls, and the parameter count.

  autocast: `torch.autocast(device, torch.bfloat16)` around forward and loss (float32
  weights and AdamW state). compiled: the model through `torch.compile`.
  """
  import contextlib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  device = torch_device()

  config = transformers.PerceiverConfig(
      num_latents=cfg['num_latents'], d_latents=cfg['d_latents'],
      num_blocks=1, num_self_attends_per_block=cfg['layers'],
      num_self_attention_heads=cfg['heads'],
      num_cross_attention_heads=cfg['cross_heads'],
      qk_channels=cfg.get('qk_channels'), v_channels=cfg.get('v_channels'),
      cross_attention_shape_for_attention='kv', self_attention_widening_factor=1,
      cross_attention_widening_factor=1, hidden_act='gelu_new',
      attention_probs_dropout_prob=0.0, use_query_residual=True)
  rng = np.random.RandomState(0)
  if cfg['kind'] == 'language':
    config.update(dict(d_model=cfg['d_model'], max_position_embeddings=cfg['seq_len'],
                       vocab_size=262))
    model = transformers.PerceiverForMaskedLM(config)
    tokens = torch.as_tensor(rng.randint(0, 262, (cfg['batch'], cfg['seq_len'])))
    kwargs = dict(inputs=tokens, attention_mask=torch.ones_like(tokens))
    labels = tokens
  else:
    config.update(dict(image_size=cfg['image_size'], num_labels=cfg['num_classes']))
    model = transformers.PerceiverForImageClassificationLearned(config)
    size = cfg['image_size']
    # HF's image models take channels-first pixels.
    kwargs = dict(inputs=torch.as_tensor(rng.randn(cfg['batch'], 3, size, size),
                                         dtype=torch.float32))
    labels = torch.as_tensor(rng.randint(0, cfg['num_classes'], cfg['batch']))
  model = model.to(device)
  kwargs = {k: v.to(device) for k, v in kwargs.items()}
  labels = labels.to(device)
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
  loss_fn = torch.nn.CrossEntropyLoss()
  call = torch.compile(model) if compiled else model
  cast = ((lambda: torch.autocast(device, dtype=torch.bfloat16)) if autocast
          else contextlib.nullcontext)

  def run_forward():
    model.eval()
    with torch.inference_mode(), cast():
      call(**kwargs)
    _torch_sync()

  def run_step():
    model.train()
    with cast():
      logits = call(**kwargs).logits
      loss = loss_fn(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    _torch_sync()

  num_params = sum(p.numel() for p in model.parameters())
  return run_forward, run_step, num_params


# ----------------------------------------------------------------- matmul peaks.

def matmul_peak(framework: str, size: int = 0, repeats: int = 10,
                dtype: str = 'float32') -> float:
  """Best [size, size] @ [size, size] GFLOP/s of `framework` ('jax', 'torch') in `dtype`.

  size 0: 2048 on a CPU, 8192 on a GPU. 'bfloat16': bfloat16 operands; JAX accumulates
  and returns float32 (`preferred_element_type`, its fast path and what blocks/ops.py
  asks for), torch returns bfloat16 (what autocast's matmuls do).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  size = size or (8192 if jax.default_backend() == 'gpu' else 2048)
  a = np.random.RandomState(0).randn(size, size).astype(np.float32)
  if framework == 'jax':
    x = jnp.asarray(a, dtype)
    mm = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    run = lambda: jax.block_until_ready(mm(x, x))
  else:
    import torch  # pylint: disable=g-import-not-at-top
    x = torch.as_tensor(a).to(torch_device()).to(getattr(torch, dtype))
    run = lambda: (torch.mm(x, x), _torch_sync())
  run()
  best = 0.0
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e9)
  return best


def alternate(fns: dict, repeats: int) -> dict:
  """Lists of `repeats` timings (seconds) of each function, called in turn."""
  for fn in fns.values():  # Warm-up (compilation, allocator, first-touch).
    fn()
    fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times


# variant -> (framework, dtype, torch.compile): the columns of the table.
VARIANTS = {
    'jax': ('jax', 'float32', False),
    'jax_bf16': ('jax', 'bfloat16', False),
    'torch': ('torch', 'float32', False),
    'torch_bf16': ('torch', 'bfloat16', False),
    'torch_compile': ('torch', 'float32', True),
    'torch_compile_bf16': ('torch', 'bfloat16', True),
}
VARIANT_NAMES = {
    'jax': 'this library, float32', 'jax_bf16': 'this library, bfloat16 compute',
    'torch': 'HF eager, float32', 'torch_bf16': 'HF eager + autocast bfloat16',
    'torch_compile': 'HF torch.compile, float32',
    'torch_compile_bf16': 'HF torch.compile + autocast bfloat16'}


def child(variant: str, name: str, repeats: int, batch: int = 0) -> dict:
  """One variant's measurements of one configuration (run in its own process)."""
  framework, dtype, compiled = VARIANTS[variant]
  # Both frameworks with the allocator settings `perceiver-agents` runs with, so the
  # comparison is of the steps users get (their effect: BENCHMARKS.md, host_memory).
  from perceiver_agents.kernels import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.keep_freed_memory()
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  # float32 everywhere; on a GPU both frameworks may use TF32 tensor cores for matmuls
  # (JAX's default precision there; torch needs it switched on).
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  cfg = dict(CONFIGS[name], **({'batch': batch} if batch else {}))
  out = {'device': jax.devices()[0].device_kind}
  if framework == 'jax':
    forward, step, flops, out['params'] = jax_functions(cfg, dtype)
    out['gflops_per_call'] = {k: v / 1e9 for k, v in flops.items()}
  else:
    forward, step, out['params'] = torch_functions(
        cfg, autocast=dtype == 'bfloat16', compiled=compiled)
  peaks = {d: matmul_peak(framework, dtype=d) for d in ('float32', 'bfloat16')}
  out['seconds'] = alternate({'forward': forward, 'train_step': step}, repeats)
  out['matmul_peak_gflops'] = max(peaks['float32'], matmul_peak(framework))
  out['matmul_peak_gflops_bf16'] = max(peaks['bfloat16'],
                                       matmul_peak(framework, dtype='bfloat16'))
  # Page faults and kernel time of train steps (what host_memory removes from JAX's).
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(2):
    step()
  after = resource.getrusage(resource.RUSAGE_SELF)
  out['per_train_step'] = {'minor_faults': (after.ru_minflt - before.ru_minflt) / 2,
                           'system_s': (after.ru_stime - before.ru_stime) / 2}
  return out


def measure(name: str, repeats: int, rounds: int = 2, batch: int = 0,
            variants=('jax', 'torch')) -> dict:
  """The `variants` on configuration `name`, each in processes of its own.

  In one process the frameworks slow each other (their allocators and thread pools;
  BENCHMARKS.md gives the size), so each variant runs alone, the variants alternating
  for `rounds` rounds of `repeats` timed calls; the medians over all rounds are reported.
  """
  runs = {v: [] for v in variants}
  for _ in range(rounds):
    for variant in runs:
      env = dict(os.environ, PYTHONPATH=os.pathsep.join(
          [REPO, os.environ.get('PYTHONPATH', '')]))
      if VARIANTS[variant][0] == 'torch':  # JAX only names the device: no GPU grab.
        env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
      done = subprocess.run(
          [sys.executable, __file__, '--child', variant, name,
           '--repeats', str(repeats), '--batch', str(batch)], capture_output=True,
          text=True, env=env)
      if done.returncode != 0:
        raise RuntimeError(f'{variant} on {name} failed:\n{done.stderr[-2000:]}')
      runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
  times, peak, peak_bf16 = {}, {}, {}
  for variant, results in runs.items():
    framework = VARIANTS[variant][0]
    peak[framework] = max([peak.get(framework, 0.0)] +
                          [r['matmul_peak_gflops'] for r in results])
    peak_bf16[framework] = max([peak_bf16.get(framework, 0.0)] +
                               [r['matmul_peak_gflops_bf16'] for r in results])
    for what in ('forward', 'train_step'):
      times[f'{variant}_{what}'] = statistics.median(
          t for r in results for t in r['seconds'][what])
  first = {VARIANTS[v][0]: runs[v][0] for v in reversed(variants)}
  counted = next(runs[v][0] for v in variants if VARIANTS[v][0] == 'jax')
  result = dict(config=name, batch=batch or CONFIGS[name]['batch'],
                device=first['jax']['device'], variants=list(variants),
                jax_params=first['jax']['params'],
                torch_params=first.get('torch', first['jax'])['params'], seconds=times,
                matmul_peak_gflops=peak, matmul_peak_gflops_bf16=peak_bf16,
                rounds=rounds, repeats=repeats)
  return with_flops(result, {k: v * 1e9 for k, v in counted['gflops_per_call'].items()})


def with_flops(result: dict, flops: dict) -> dict:
  """`result` with XLA's FLOPs per call and the MFU they give: model FLOPs over each
  variant's time and its framework's float32 (and, 'mfu_bf16', bfloat16) matmul peak."""
  times, peak = result['seconds'], result['matmul_peak_gflops']
  peak_bf16 = result.get('matmul_peak_gflops_bf16', {})
  variants = result.get('variants', ['jax', 'torch'])
  mfu = lambda peaks: {  # pylint: disable=g-long-lambda
      f'{v}_{what}': flops[what] / times[f'{v}_{what}'] / 1e9 / peaks[VARIANTS[v][0]]
      for v in variants for what in ('forward', 'train_step') if VARIANTS[v][0] in peaks}
  return dict(result, gflops_per_call={k: v / 1e9 for k, v in flops.items()},
              mfu=mfu(peak), mfu_bf16=mfu(peak_bf16))


def _time(seconds: float) -> str:
  return f'{seconds:.2f} s' if seconds >= 1 else f'{seconds * 1e3:.3g} ms'


def _rate(gflops: float) -> str:
  return f'{gflops / 1e3:.0f} TFLOP/s' if gflops >= 1e4 else f'{gflops:.0f} GFLOP/s'


def _batch_note(result: dict) -> str:
  """' (batch N)' where a run changed the configuration's batch size."""
  batch = result.get('batch', CONFIGS[result['config']]['batch'])
  return '' if batch == CONFIGS[result['config']]['batch'] else f' (batch {batch})'


def table(results) -> str:
  lines = [
      '| config | params (ours / HF) | forward ours / HF | train step ours / HF | '
      'ratio HF/ours (fwd, step) | GFLOP per step (XLA) | MFU ours (fwd, step) | '
      'MFU HF (fwd, step) | matmul peak JAX / torch |',
      '|---|---|---|---|---|---|---|---|---|']
  for r in results:
    s, m, p = r['seconds'], r['mfu'], r['matmul_peak_gflops']
    lines.append(
        f"| {r['config']}{_batch_note(r)} | {r['jax_params'] / 1e6:.1f}M / "
        f"{r['torch_params'] / 1e6:.1f}M | {_time(s['jax_forward'])} / "
        f"{_time(s['torch_forward'])} | {_time(s['jax_train_step'])} / "
        f"{_time(s['torch_train_step'])} | "
        f"{s['torch_forward'] / s['jax_forward']:.2f}x, "
        f"{s['torch_train_step'] / s['jax_train_step']:.2f}x | "
        f"{r['gflops_per_call']['train_step']:.1f} | {m['jax_forward']:.0%}, "
        f"{m['jax_train_step']:.0%} | {m['torch_forward']:.0%}, "
        f"{m['torch_train_step']:.0%} | {_rate(p['jax'])} / {_rate(p['torch'])} |")
  return '\n'.join(lines)


def variant_table(results) -> str:
  """One row per configuration and variant: times, speed against HF eager float32 and
  MFU against the framework's float32 and bfloat16 matmul peaks."""
  lines = ['| config | variant | forward | train step | vs HF eager f32 (fwd, step) | '
           'MFU vs f32 peak (fwd, step) | MFU vs bf16 peak (fwd, step) |',
           '|---|---|---|---|---|---|---|']
  for r in results:
    s, m, mb = r['seconds'], r['mfu'], r.get('mfu_bf16', {})
    base = 'torch' if 'torch_forward' in s else r['variants'][0]
    for v in r['variants']:
      ratio = ', '.join(f"{s[f'{base}_{w}'] / s[f'{v}_{w}']:.2f}x"
                        for w in ('forward', 'train_step'))
      pct = lambda d: ', '.join(f"{d[f'{v}_{w}']:.0%}" if f'{v}_{w}' in d else '-'  # pylint: disable=g-long-lambda
                                for w in ('forward', 'train_step'))
      lines.append(f"| {r['config']}{_batch_note(r)} | {VARIANT_NAMES[v]} | "
                   f"{_time(s[f'{v}_forward'])} | {_time(s[f'{v}_train_step'])} | "
                   f'{ratio} | {pct(m)} | {pct(mb)} |')
  peaks = results[0]['matmul_peak_gflops']
  peaks_bf16 = results[0].get('matmul_peak_gflops_bf16', {})
  lines.append('')
  lines.append('matmul peaks (2048^3, best in the run): ' + '; '.join(
      f'{fw} float32 {_rate(peaks[fw])}' + (
          f', bfloat16 {_rate(peaks_bf16[fw])}' if fw in peaks_bf16 else '')
      for fw in peaks))
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', nargs='+', default=['language_small', 'image_small'],
                      choices=sorted(CONFIGS))
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--batch', type=int, default=0,
                      help="every configuration's batch size (0: its own; e.g. larger on a "
                      'GPU, which the CPU batches cannot fill)')
  parser.add_argument('--variants', nargs='+', default=list(VARIANTS),
                      choices=list(VARIANTS),
                      help='the columns: this library float32/bfloat16, HF eager and '
                      'torch.compile, float32 and autocast bfloat16')
  parser.add_argument('--child', nargs=2, metavar=('VARIANT', 'CONFIG'))
  parser.add_argument('--json', default=os.path.join(REPO, 'benchmarks', 'results',
                                                     'peer.json'))
  parser.add_argument('--table_from', nargs='+', metavar='JSON',
                      help='print the table of saved results (e.g. a GPU run) instead')
  parser.add_argument('--recount_flops', action='store_true',
                      help='with --table_from: count the FLOPs again here (results '
                      "saved before the count used the lowered module: a GPU's "
                      'compiled count missed the cuBLAS products)')
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child[0], args.child[1], args.repeats, args.batch)))
    return
  if args.table_from:
    results = []
    for path in args.table_from:
      with open(path) as f:
        results += json.load(f)
    if args.recount_flops:
      results = [with_flops(r, model_flops(*jax_step_functions(dict(
          CONFIGS[r['config']], batch=r.get('batch', CONFIGS[r['config']]['batch'])))[:2]))
                 for r in results]
    print(f"device: {results[0]['device']}\n")
    print(variant_table(results) if 'variants' in results[0] else table(results))
    return
  results = []
  for name in args.configs:
    results.append(measure(name, args.repeats, args.rounds, args.batch,
                           tuple(args.variants)))
    print(json.dumps(results[-1]), flush=True)
    if args.json:  # After each configuration: a run cut short keeps what it measured.
      os.makedirs(os.path.dirname(args.json), exist_ok=True)
      with open(args.json, 'w') as f:
        json.dump(results, f, indent=1)
  print(f"\ndevice: {results[0]['device']}\n")
  print(variant_table(results))


if __name__ == '__main__':
  main()
