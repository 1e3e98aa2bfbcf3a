"""Tests of the `glue` task: official metrics, inputs, MLM weight reuse, the CLI on mock data."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_agents import cli
from perceiver_agents.tasks import base
from perceiver_agents.tasks import glue
from perceiver_agents.tasks import glue_metrics
from perceiver_agents.tasks import mlm

TINY = {'preset': 'local', 'train.steps': 2, 'train.progress_bar': False,
        'train.log_every': 1}
TINY_ARGS = [f'--config.{k}={v}' for k, v in TINY.items()]


def test_metrics_match_hand_computed_values():
  p = np.array([1, 1, 0, 0, 1, 0])
  y = np.array([1, 0, 0, 1, 1, 0])
  # TP=2, FP=1, FN=1, TN=2.
  assert glue_metrics.accuracy(p, y) == pytest.approx(4 / 6)
  assert glue_metrics.f1(p, y) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
  assert glue_metrics.matthews_corr(p, y) == pytest.approx((2 * 2 - 1 * 1) / 9)
  assert glue_metrics.matthews_corr(np.zeros(4), np.array([0, 1, 0, 1])) == 0.0
  # Pearson of (1, 2, 3) and (1, 3, 2): centred (-1, 0, 1), (-1, 1, 0) -> 1 / 2.
  assert glue_metrics.pearson([1., 2., 3.], [1., 3., 2.]) == pytest.approx(0.5)
  # Spearman with a tie: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4) -> 4.5 / sqrt(4.5 * 5).
  assert glue_metrics.spearman([0.1, 0.5, 0.5, 9.0], [1., 2., 3., 4.]) == \
      pytest.approx(4.5 / np.sqrt(4.5 * 5))
  scores = glue_metrics.task_scores('mrpc', p, y)
  assert scores['score'] == pytest.approx((4 / 6 + 2 / 3) / 2)
  table = glue_metrics.results_table({'mrpc': scores,
                                      'cola': glue_metrics.task_scores('cola', p, y)})
  assert '| **GLUE average** (2 tasks) | mean of scores | ' \
         f'{100 * (scores["score"] + 1 / 3) / 2:.2f} |' in table
  with pytest.raises(ValueError, match='one length'):
    glue_metrics.accuracy([1, 0], [1])
  with pytest.raises(ValueError, match='unknown GLUE task'):
    glue_metrics.task_scores('squad', p, y)


def test_parse_tasks():
  assert glue.parse_tasks('all') == ('cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli',
                                     'qnli', 'rte')
  assert glue.parse_tasks('RTE, stsb') == ('rte', 'stsb')
  with pytest.raises(ValueError, match="unknown GLUE task 'mrcp'.*Did you mean mrpc"):
    glue.parse_tasks('mrcp')
  with pytest.raises(ValueError, match='twice'):
    glue.parse_tasks('rte,rte')


def test_encode_example_truncates_the_longer_sentence_and_allows_empty():
  ids = glue.encode_example((b'a' * 40, b'bb'), window=16)
  assert len(ids) == 16
  tok = glue.TOKENIZER
  assert ids[0] == tok.cls_token and ids[-1] == tok.sep_token
  assert list(ids).count(tok.sep_token) == 2
  assert list(ids[-3:-1]) == [ord('b') + 6] * 2  # the short sentence is kept whole
  np.testing.assert_array_equal(glue.encode_example((b'',), window=8),
                                [tok.cls_token, tok.sep_token])


def test_classifier_reuses_the_mlm_encoder_by_path():
  config = base.make_config(glue, [f'{k}={v}' for k, v in TINY.items()])
  batch = {'inputs': np.zeros((1, 32), np.int32), 'input_mask': np.ones((1, 32), bool)}
  key = jax.random.PRNGKey(0)
  rng = np.random.default_rng(0)
  random_like = lambda tree: jax.tree.map(  # shapes only: no Haiku init is run
      lambda x: rng.normal(size=x.shape).astype(np.float32), tree)
  lm_params = random_like(jax.eval_shape(mlm.make_model(config.model).init, key, batch)[0])
  model = glue.make_model(config.model, ('cola', 'stsb', 'mnli'))
  params = random_like(jax.eval_shape(model.init, key, batch)[0])
  merged, copied = glue.merge_pretrained(params, lm_params)
  reused = {m for m in params if glue.is_reused(m)}
  assert {'embed', 'trainable_position_encoding'} <= reused
  assert 'basic_decoder/~/trainable_position_encoding' not in reused
  assert 'embedding_decoder' not in params
  assert params['basic_decoder/~/trainable_position_encoding']['pos_embs'].shape == (3, 16)
  assert len(copied) == sum(len(params[m]) for m in reused)
  for module in reused:
    for name in params[module]:
      np.testing.assert_array_equal(merged[module][name], lm_params[module][name])
  np.testing.assert_array_equal(merged['mnli_head']['w'], params['mnli_head']['w'])
  outputs, _ = jax.eval_shape(lambda p: model.apply(p, {}, None, batch), merged)
  assert {k: v.shape for k, v in outputs.items()} == {
      'cola': (1, 2), 'stsb': (1, 1), 'mnli': (1, 3)}
  bad = dict(lm_params, embed={'embeddings': np.zeros((262, 8), np.float32)})
  with pytest.raises(ValueError, match=r'embed/embeddings is \(262, 8\).*needs \(262, 16\)'):
    glue.merge_pretrained(params, bad)


def test_loss_uses_each_examples_own_head():
  names = ('cola', 'stsb')
  outputs = {'cola': jnp.array([[0.0, 0.0], [2.0, 0.0]]),
             'stsb': jnp.array([[9.0], [3.5]])}
  batch = {'task_id': np.array([0, 1]), 'label': np.array([1.0, 2.5], np.float32)}
  np.testing.assert_allclose(glue.make_loss(names)(outputs, batch), [np.log(2), 1.0],
                             rtol=1e-6)
  assert glue.make_metrics(names)(outputs, batch) == {}  # STS-B: no per-example accuracy
  acc = glue.make_metrics(('cola', 'rte'))(
      {'cola': outputs['cola'], 'rte': jnp.array([[0., 1.], [0., 1.]])},
      {'task_id': np.array([0, 1]), 'label': np.array([1.0, 1.0])})
  np.testing.assert_allclose(acc['accuracy'], [0.0, 1.0])


def _read_results(workdir):
  with open(workdir / 'glue_results.json') as f:
    return json.load(f)


def test_single_task_from_an_mlm_checkpoint_through_the_cli(tmp_path, capsys):
  tfds = pytest.importorskip('tensorflow_datasets')
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('a few words of text.\nand some more words here.\n')
  with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
    assert cli.main(['train', 'mlm', '--workdir', str(tmp_path / 'mlm'),
                     f'--config.data.files={corpus}'] + TINY_ARGS) == 0
    assert cli.main(['train', 'glue', '--workdir', str(tmp_path / 'rte'),
                     '--config.data.tasks=rte',
                     f'--config.model.init_checkpoint={tmp_path / "mlm"}'] + TINY_ARGS) == 0
    assert 'initialising from project checkpoint of `train mlm`' in capsys.readouterr().err
    assert cli.main(['predict', 'glue', '--workdir', str(tmp_path / 'rte')]) == 0
  out = capsys.readouterr().out
  assert '| rte | accuracy ' in out and '**GLUE average** (1 tasks)' in out
  results = _read_results(tmp_path / 'rte')
  assert results['step'] == 2 and results['results']['rte']['num_examples'] == 10
  assert 0.0 <= results['results']['rte']['accuracy'] <= 1.0
  assert (tmp_path / 'rte' / 'glue_results.md').read_text().count('| rte |') == 1


def test_multi_task_on_all_eight_tasks_through_the_cli(tmp_path, capsys):
  tfds = pytest.importorskip('tensorflow_datasets')
  workdir = tmp_path / 'all'
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    assert cli.main(['train', 'glue', '--workdir', str(workdir),
                     '--config.data.tasks=all'] + TINY_ARGS) == 0
    assert cli.main(['predict', 'glue', '--workdir', str(workdir)]) == 0
    # Unknown task names fail before anything is built.
    assert cli.main(['train', 'glue', '--workdir', str(tmp_path / 'bad'),
                     '--config.data.tasks=cola,sts-b'] + TINY_ARGS) == 2
  captured = capsys.readouterr()
  assert "unknown GLUE task 'sts-b'" in captured.err
  results = _read_results(workdir)
  assert list(results['results']) == list(glue.ALL_TASKS)
  assert set(results['results']['stsb']) == {'pearson', 'spearman', 'score', 'num_examples'}
  assert results['glue_average'] == pytest.approx(
      np.mean([r['score'] for r in results['results'].values()]))
  assert '**GLUE average** (8 tasks)' in captured.out


def test_all_tasks_without_prepared_data_is_one_line(tmp_path, capsys):
  from perceiver_agents import cli  # pylint: disable=g-import-not-at-top
  code = cli.main(['train', 'glue', '--workdir', str(tmp_path / 'run'),
                   '--config.data.tasks=all', f'--config.data.data_dir={tmp_path}/tfds'])
  assert code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert "TFDS dataset 'glue/cola' is not prepared" in err[0] and 'tfds build' in err[0]
  assert not (tmp_path / 'run').exists()
