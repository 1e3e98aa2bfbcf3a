"""`perceiver-agents convert`: transformers' Perceiver folders <-> the project's .npz.

    perceiver-agents convert --from-transformers ./language-perceiver --out lm.npz
        # writes lm.npz (params_io.save_params) and lm.json (zoo name, kwargs, config)
    perceiver-agents convert --to-transformers ./out --params lm.npz [--model lm.json |
        --model language_perceiver] [--hidden-act gelu_new] [--dtype float32]
        # writes ./out/config.json + model.safetensors for from_pretrained

`--model` is the JSON written next to the .npz (its kwargs and transformers config), or
a zoo name (its published kwargs); default: the .json next to --params.
"""

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='perceiver-agents convert',
      description="Convert transformers' Perceiver checkpoints to and from .npz.")
  way = parser.add_mutually_exclusive_group(required=True)
  way.add_argument('--from-transformers', metavar='DIR',
                   help='folder with config.json + model.safetensors or pytorch_model.bin')
  way.add_argument('--to-transformers', metavar='DIR', help='folder to write')
  parser.add_argument('--out', help='--from-transformers: the .npz to write')
  parser.add_argument('--params', help='--to-transformers: the .npz to read')
  parser.add_argument('--model', help='--to-transformers: the .json written with the '
                      '.npz, or a zoo name (default: the .json next to --params)')
  parser.add_argument('--hidden-act', default=None,
                      help="--to-transformers: the MLP's GELU (default: the .json's, "
                      "else 'gelu_new', the published tanh approximation)")
  parser.add_argument('--dtype', default=None, choices=('float32', 'float16'),
                      help='--to-transformers: tensor dtype (default: float32)')
  return parser


def _sidecar(npz: str) -> str:
  return os.path.splitext(npz)[0] + '.json'


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  from perceiver_agents import convert  # pylint: disable=g-import-not-at-top
  from perceiver_agents import params_io  # pylint: disable=g-import-not-at-top
  try:
    if args.from_transformers:
      if not args.out:
        raise ValueError('--out: required with --from-transformers (the .npz to write).')
      c = convert.from_transformers(args.from_transformers)
      params_io.save_params(args.out, c.params, state=c.state)
      with open(_sidecar(args.out), 'w') as f:
        json.dump({'name': c.name, 'kwargs': c.kwargs, 'config': c.config}, f, indent=2)
      count = sum(int(np.size(v)) for m in c.params.values() for v in m.values())
      print(json.dumps({'model': c.name, 'params': count, 'out': args.out,
                        'model_json': _sidecar(args.out)}))
      return 0
    if not args.params:
      raise ValueError('--params: required with --to-transformers (the .npz to read).')
    spec = args.model or _sidecar(args.params)
    if os.path.isfile(spec):
      with open(spec) as f:
        described = json.load(f)
      name, kwargs, base = described['name'], described['kwargs'], described.get('config')
    elif args.model:
      name, kwargs, base = args.model, None, None
    else:
      raise ValueError(f'--model: {spec} not found; pass the .json written with the '
                       '.npz or a zoo name.')
    params, state = params_io.load_params(args.params)
    out = convert.to_transformers(name, params, state, args.to_transformers,
                                  kwargs=kwargs, hidden_act=args.hidden_act,
                                  base_config=base, dtype=args.dtype)
    print(json.dumps({'model': name, 'out': out}))
    return 0
  except (ValueError, OSError) as e:
    print(f'perceiver-agents convert: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
