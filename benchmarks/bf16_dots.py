"""Where language_small's bfloat16 forward spends its time: its products alone vs whole.

    .venv/bin/python benchmarks/bf16_dots.py

Compiles the forward of benchmarks/peer.py's language_small in float32 and in bfloat16
compute, then times every distinct dot of the bfloat16 program as a standalone XLA dot
(float32 operands, and bfloat16 operands accumulated in float32, alternately) times its
count, and the two whole forwards alternately (medians of 100 calls). Prints one line
per dot shape, the sums and the whole forwards.
"""

import collections
import re
import sys

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

sys.path.insert(0, 'benchmarks')
import peer  # pylint: disable=g-import-not-at-top,wrong-import-position


def medians(fns: dict, repeats: int = 20) -> dict:
  """Median seconds of each no-argument call, the calls alternating (peer.alternate)."""
  return {name: float(np.median(t)) for name, t in peer.alternate(fns, repeats).items()}


def dot_specs(hlo: str) -> collections.Counter:
  """(lhs shape, rhs shape, dimension numbers) -> count, for every dot of `hlo`."""
  shapes = {m.group(1): tuple(int(x) for x in m.group(3).split(',') if x)
            for m in re.finditer(r'%([\w.\-]+) = (\w+)\[([0-9,]*)\]', hlo)}
  specs = collections.Counter()
  for m in re.finditer(r'dot\(%([\w.\-]+), %([\w.\-]+)\), ([^\n]*)', hlo):
    def dims(name, rest=m.group(3)):
      found = re.search(name + r'=\{([0-9,]*)\}', rest)
      return tuple(int(x) for x in found.group(1).split(',')) if found and found.group(1) else ()
    specs[(shapes[m.group(1)], shapes[m.group(2)],
           ((dims('lhs_contracting_dims'), dims('rhs_contracting_dims')),
            (dims('lhs_batch_dims'), dims('rhs_batch_dims'))))] += 1
  return specs


def main():
  cfg = peer.CONFIGS['language_small']
  compiled = {}
  for dtype in ('float32', 'bfloat16'):
    (forward, args), _, _ = peer.jax_step_functions(cfg, dtype)
    compiled[dtype] = (jax.jit(forward).lower(*args).compile(), args)
  totals = {'float32': 0.0, 'bfloat16': 0.0}
  for (a, b, dn), count in dot_specs(compiled['bfloat16'][0].as_text()).items():
    x, y = jnp.ones(a, jnp.float32), jnp.ones(b, jnp.float32)
    xb, yb = x.astype(jnp.bfloat16), y.astype(jnp.bfloat16)
    f32 = jax.jit(lambda x, y, dn=dn: lax.dot_general(x, y, dn))
    bf16 = jax.jit(lambda x, y, dn=dn: lax.dot_general(
        x, y, dn, preferred_element_type=jnp.float32))
    t = medians({'float32': lambda: f32(x, y).block_until_ready(),
                 'bfloat16': lambda: bf16(xb, yb).block_until_ready()})
    for dtype in totals:
      totals[dtype] += count * t[dtype]
    print(f"{count:3d} x {a} . {b} {dn}: float32 {t['float32'] * 1e3:.2f} ms, "
          f"bfloat16 {t['bfloat16'] * 1e3:.2f} ms ({t['float32'] / t['bfloat16']:.2f}x)",
          flush=True)
  print(f"sum of the dots: float32 {totals['float32'] * 1e3:.1f} ms, "
        f"bfloat16 {totals['bfloat16'] * 1e3:.1f} ms")
  whole = medians({dtype: lambda p=program, a=args: jax.block_until_ready(p(*a))
                   for dtype, (program, args) in compiled.items()}, repeats=100)
  print(', '.join(f'{dtype} whole forward {t * 1e3:.1f} ms' for dtype, t in whole.items()))


if __name__ == '__main__':
  main()
