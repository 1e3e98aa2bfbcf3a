"""Trains the small Kinetics autoencoder on generated real-format clips, on CPU.

Writes Kinetics-style folders (annotation CSV + MP4 clips with H.263-style mpeg4 video and
AAC audio: a coloured shape moving over a textured background, with a tone whose pitch
is the class) and trains `kinetics_autoencoding` through the learner, decoding through
the same PyAV pipeline as real data. Reports the held-out whole-clip reconstruction PSNR
against two baselines computed on the same eval windows:
  mean-frame   every frame predicted as the mean training frame (the best constant image),
  clip-mean    every frame predicted as its own clip's temporal mean (uses the clip).
and audio PSNR against predicting silence.

    .venv/bin/python benchmarks/kinetics_autoencoding.py --steps 600 --workdir /tmp/kae_bench
"""

import argparse
import json
import os
import shutil
import time

import numpy as np

from perceiver_agents import learner
from perceiver_agents.data import synthetic_media
from perceiver_agents.tasks import kinetics_autoencoding

CLASSES = ('square_low', 'disc_mid', 'bar_high')


def psnr(mse: float) -> float:
  return float(-10 * np.log10(max(mse, 1e-10)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=600)
  parser.add_argument('--train_clips', type=int, default=48)
  parser.add_argument('--eval_clips', type=int, default=12)
  parser.add_argument('--workdir', default='/tmp/kae_bench')
  parser.add_argument('--out', default='', help='also write the results JSON here')
  parser.add_argument('overrides', nargs='*',
                      help='config overrides, e.g. optimizer.learning_rate=2e-3')
  args = parser.parse_args()

  shutil.rmtree(args.workdir, ignore_errors=True)
  data = os.path.join(args.workdir, 'data')
  t0 = time.time()
  synthetic_media.write_kinetics_like(os.path.join(data, 'train'), num_clips=args.train_clips,
                                      classes=CLASSES, seconds=0.64, seed=0)
  synthetic_media.write_kinetics_like(os.path.join(data, 'eval'), num_clips=args.eval_clips,
                                      classes=CLASSES, seconds=0.32, seed=1)
  generate_s = time.time() - t0

  config = kinetics_autoencoding.get_config()
  learner.apply_overrides(config, [
      f'data.train_annotations={data}/train/annotations.csv',
      f'data.train_videos={data}/train/videos',
      f'data.eval_annotations={data}/eval/annotations.csv',
      f'data.eval_videos={data}/eval/videos',
      f'train.steps={args.steps}', 'train.batch_size=8', 'eval.batch_size=4',
      'eval.every=0', f'checkpoint.every={args.steps}', 'train.progress_bar=false',
      'train.log_every=50', 'data.cache_size=1024'] + args.overrides)
  task = kinetics_autoencoding.build(config)

  train_frames = np.concatenate([task.train_batch(s)['image'] for s in range(6)])
  mean_frame = train_frames.mean(axis=(0, 1))  # [S, S, 3]
  eval_sets = list(task.eval_batches(4))
  images = np.concatenate([b['image'] for b in eval_sets])
  audio = np.concatenate([b['audio'] for b in eval_sets])
  mean_frame_psnr = np.mean([psnr(np.mean((v - mean_frame) ** 2)) for v in images])
  clip_mean_psnr = np.mean([psnr(np.mean((v - v.mean(0)) ** 2)) for v in images])
  silence_psnr = np.mean([psnr(np.mean(a ** 2)) for a in audio])

  t0 = time.time()
  result = learner.train(task, config, os.path.join(args.workdir, 'run'))
  train_s = time.time() - t0
  report = {
      'overrides': args.overrides, 'steps': result.step, 'train_clips': args.train_clips, 'eval_clips': args.eval_clips,
      'eval': result.eval_metrics,
      'baseline_video_psnr_mean_frame': float(mean_frame_psnr),
      'baseline_video_psnr_clip_mean': float(clip_mean_psnr),
      'baseline_audio_psnr_silence': float(silence_psnr),
      'generate_s': round(generate_s, 1), 'train_s': round(train_s, 1),
  }
  print(json.dumps(report, indent=2))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(report, f, indent=2)


if __name__ == '__main__':
  main()
