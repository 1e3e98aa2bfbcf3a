"""Optical flow on CPU: train a small Perceiver IO flow model on procedural pairs, then
compare it with zero flow and scikit-image's TV-L1 on

  * held-out procedural pairs (a seed never trained on, the task's eval set), and
  * scikit-image's real stereo pair (data.stereo_motorcycle): its ground-truth disparity d
    is horizontal flow u = -d (a left-image pixel at column x is at x - d in the right
    image), v = 0; pixels without disparity are left out. Both images are downscaled by
    --downscale (block means; the disparity with them) so that the disparities (7-60 px
    at full size) fall in the range the small model trains on.

Results go to stdout and, as JSON, to --out. The learned model runs on images of any size
by overlapping tiles at its training size (zoo.tiled_flow).

    python benchmarks/flow.py --workdir /tmp/flow_bench --steps 1500
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def stereo_pair(downscale: int):
  """(frames uint8 [2, H, W, 3], flow [H, W, 2], valid [H, W]) of the motorcycle pair.

  Downscaled by averaging downscale x downscale blocks; a block's flow is valid when every
  full-resolution disparity in it is known.
  """
  from skimage import data  # pylint: disable=g-import-not-at-top
  left, right, disparity = data.stereo_motorcycle()
  h, w = left.shape[0] // downscale, left.shape[1] // downscale
  blocks = lambda x: x[:h * downscale, :w * downscale].reshape(
      h, downscale, w, downscale, *x.shape[2:])
  frames = np.stack([np.round(blocks(image.astype(np.float64)).mean(axis=(1, 3)))
                     for image in (left, right)]).astype(np.uint8)
  finite = np.isfinite(disparity)
  valid = blocks(finite).all(axis=(1, 3))
  disp = blocks(np.where(finite, disparity, 0.0)).mean(axis=(1, 3)) / downscale
  flow = np.stack([-disp, np.zeros_like(disp)], -1).astype(np.float32)
  return frames, flow, valid


def epe(flow, target, valid):
  return float(np.mean(np.sqrt(np.sum((flow - target)**2, -1))[valid]))


def tvl1(frames):
  """scikit-image TV-L1 on grey frames -> flow [H, W, 2] as (u, v)."""
  from skimage import color, registration  # pylint: disable=g-import-not-at-top
  grey = [color.rgb2gray(f) for f in frames]
  v, u = registration.optical_flow_tvl1(grey[0], grey[1])
  return np.stack([u, v], -1)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--downscale', type=int, default=12)
  parser.add_argument('--num_eval', type=int, default=128)
  parser.add_argument('--out', default=None, help='JSON results (default WORKDIR/flow.json)')
  parser.add_argument('overrides', nargs='*', help='extra FIELD=VALUE config overrides')
  args = parser.parse_args(argv)

  from perceiver_agents import learner  # pylint: disable=g-import-not-at-top
  from perceiver_agents.data import flow_batches, procedural_flow  # pylint: disable=g-import-not-at-top
  from perceiver_agents.tasks import optical_flow, workdir  # pylint: disable=g-import-not-at-top

  config = optical_flow.get_config()
  overrides = [f'train.steps={args.steps}', 'train.progress_bar=false',
               f'data.num_eval={args.num_eval}', 'eval.every=0',
               f'checkpoint.every={max(args.steps // 4, 1)}'] + list(args.overrides)
  learner.apply_overrides(config, overrides)
  task = optical_flow.build(config)
  os.makedirs(args.workdir, exist_ok=True)
  record = lambda _: workdir.record_run(  # As the CLI does: `predict` reads it.
      args.workdir, task='optical_flow', command='train', new=overrides,
      overrides=overrides)
  start = time.time()
  result = learner.train(task, config, args.workdir, on_ready=record)
  train_s = time.time() - start
  _, ts = learner.load_state(task, config, args.workdir)
  params, state, step = ts.params, ts.state, int(ts.step)
  predict = optical_flow.make_predictor(config, params, state)

  # Held-out procedural pairs (the task's eval stream).
  d = config.data
  size = tuple(d.eval_size) if tuple(d.eval_size) != (0, 0) else tuple(config.model.train_size)
  rows = {'perceiver_io': [], 'zero_flow': [], 'tvl1': []}
  for i in range(args.num_eval):
    pair = procedural_flow.make_pair(seed=config.seed + flow_batches.EVAL_SEED_OFFSET, index=i,
                                     height=size[0], width=size[1],
                                     max_displacement=d.max_displacement)
    valid = pair['valid']
    rows['perceiver_io'].append(epe(predict(pair['frames']), pair['flow'], valid))
    rows['zero_flow'].append(epe(np.zeros_like(pair['flow']), pair['flow'], valid))
    rows['tvl1'].append(epe(tvl1(pair['frames']), pair['flow'], valid))
  procedural = {k: float(np.mean(v)) for k, v in rows.items()}

  frames, flow, valid = stereo_pair(args.downscale)
  stereo = {'perceiver_io': epe(predict(frames), flow, valid),
            'zero_flow': epe(np.zeros_like(flow), flow, valid),
            'tvl1': epe(tvl1(frames), flow, valid)}

  results = {'command': 'python benchmarks/flow.py ' + ' '.join(sys.argv[1:] if argv is None
                                                                 else argv),
             'steps': step, 'train_seconds': round(train_s, 1),
             'final_train_metrics': result.train_metrics,
             'task_eval': result.eval_metrics,
             'train_size': list(config.model.train_size),
             'procedural_eval_epe': procedural, 'num_eval': args.num_eval,
             'stereo_size': list(flow.shape[:2]), 'stereo_valid_pixels': int(valid.sum()),
             'stereo_epe': stereo}
  out = args.out or os.path.join(args.workdir, 'flow.json')
  with open(out, 'w') as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))
  print('\n| data | Perceiver IO (learned) | zero flow | TV-L1 (skimage) |\n|---|---|---|---|')
  for name, r in (('procedural held-out', procedural), ('stereo_motorcycle', stereo)):
    print(f'| {name} | {r["perceiver_io"]:.3f} | {r["zero_flow"]:.3f} | {r["tvl1"]:.3f} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
