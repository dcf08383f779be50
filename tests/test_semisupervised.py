"""M2 (Kingma et al., 2014): the unlabelled bound against a loop over the classes in
float64, Jensen's bound and its equality, gradients into the classifier through both
terms, class-balanced draws of the labelled rows."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import labels
from vae_jax import models
from vae_jax import semisupervised as ss

K = 3


def _m2():
  vae = models.VAE(input_dim=6, latent_dim=2, hidden_sizes=(8,), activation="tanh",
                   num_classes=K)
  model = ss.M2Model(ss.M2(vae, classifier_sizes=(5,), activation="tanh"))
  return model, model.init(jax.random.key(0))


# Compiled, as the library calls them: one program each, not hundreds of eager ops.
unlabelled_bound = jax.jit(ss.unlabelled_bound, static_argnums=0,
                           static_argnames="num_samples")
labelled_bound = jax.jit(ss.labelled_bound, static_argnums=0, static_argnames="num_samples")
classify = jax.jit(lambda model, params, x: model.classify(params, x), static_argnums=0)


def _loss(model, **kwargs):
  return jax.jit(ss.m2_loss(model, **kwargs), static_argnums=3)


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def test_the_unlabelled_bound_is_the_classifiers_mix_of_the_labelled_ones_in_float64():
  """U(x) from one vmapped pass over the classes equals sum_k q(k|x) L(x, k) + H(q(.|x))
  with each L(x, k) computed on its own, to float64 rounding; the loss's labelled and
  unlabelled terms are those bounds."""
  with jax.enable_x64(True):
    model, params = _m2()
    params = _f64(params)
    x = jax.random.bernoulli(jax.random.key(1), 0.4, (7, 6)).astype(jnp.float64)
    key = jax.random.key(2)
    got = unlabelled_bound(model, params, x, key, num_samples=3)
    log_q = np.asarray(jax.nn.log_softmax(classify(model, params, x)), np.float64)
    loop = [np.asarray(labelled_bound(model, params, x, jnp.full((7,), k), key,
                                      num_samples=3)) for k in range(K)]
    want = sum(np.exp(log_q[:, k]) * loop[k] for k in range(K)) - np.sum(
        np.exp(log_q) * log_q, axis=1)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    y = jnp.asarray([0, 2, ss.UNLABELLED, 1, ss.UNLABELLED, ss.UNLABELLED, 0])
    loss, m = _loss(model, alpha=0.5, num_samples=3)(params, labels.Batch(x, y), key, 0)
    lab = np.asarray(y) >= 0
    y0 = np.maximum(np.asarray(y), 0)
    bound = np.where(lab, np.choose(y0, loop), want)
    classification = -log_q[np.arange(7), y0][lab].mean()
    np.testing.assert_allclose(float(loss), -bound.mean() + 0.5 * classification, rtol=1e-12)
    assert float(m["labelled_rows"]) == 4
    np.testing.assert_allclose(float(m["unlabelled_bound"]), want[~lab].mean(), rtol=1e-12)


def test_a_laid_out_batch_bounds_its_labelled_rows_for_their_own_class_alone():
  """Training batches end with their labelled rows: the loss that knows it is the same
  J^alpha (each hidden row's U(x), each labelled row's L(x, y), alpha times the labelled
  rows' -log q(y|x)), computed without the other classes of the labelled rows, in
  float64; its classifier gradient is that of the loss on the same rows with every
  class computed, in expectation (the two draw their z differently)."""
  with jax.enable_x64(True):
    model, params = _m2()
    params = _f64(params)
    x = jax.random.bernoulli(jax.random.key(1), 0.4, (7, 6)).astype(jnp.float64)
    y = jnp.asarray([ss.UNLABELLED] * 4 + [2, 0, 1])
    key = jax.random.key(2)
    loss, m = _loss(model, alpha=0.5, num_samples=3, labelled_rows=3)(
        params, labels.Batch(x, y), key, 0)
    hidden = unlabelled_bound(model, params, x[:4], jax.random.fold_in(key, 0), num_samples=3)
    shown = labelled_bound(model, params, x[4:], y[4:], jax.random.fold_in(key, 1),
                           num_samples=3)
    log_q = np.asarray(jax.nn.log_softmax(classify(model, params, x[4:])))
    classification = -np.mean(log_q[np.arange(3), np.asarray(y[4:])])
    want = -np.mean(np.concatenate([hidden, shown])) + 0.5 * classification
    np.testing.assert_allclose(float(loss), want, rtol=1e-12)
    np.testing.assert_allclose(float(m["labelled_bound"]), np.mean(shown), rtol=1e-12)
    np.testing.assert_allclose(float(m["unlabelled_bound"]), np.mean(hidden), rtol=1e-12)
    assert float(m["labelled_rows"]) == 3

    def classifier_grads(labelled_rows):
      loss_fn = ss.m2_loss(model, alpha=0.5, labelled_rows=labelled_rows)
      grad = jax.grad(lambda p, k: loss_fn(p, labels.Batch(x, y), k, 0)[0])
      keys = jax.random.split(jax.random.key(9), 4000)
      g = jax.jit(jax.vmap(lambda k: jax.flatten_util.ravel_pytree(
          grad(params, k)["params"]["classifier"])[0]))(keys)
      return np.asarray(g.mean(0)), np.asarray(g.var(0)) / len(keys)
    (a, va), (b, vb) = classifier_grads(3), classifier_grads(0)
    assert np.all(np.abs(a - b) < 5 * np.sqrt(va + vb) + 1e-9), np.max(np.abs(a - b))


def test_the_test_sets_unlabelled_bound_is_the_mean_of_its_batches_bounds():
  model, params = _m2()
  x = jax.random.bernoulli(jax.random.key(1), 0.4, (7, 6)).astype(jnp.float32)
  key = jax.random.key(3)
  whole = ss.mean_unlabelled_bound(model, params, x, key, batch_size=7)
  np.testing.assert_allclose(whole, float(jnp.mean(unlabelled_bound(
      model, params, x, jax.random.fold_in(key, 0)))), rtol=1e-6)
  parts = [unlabelled_bound(model, params, x[i:i + 3], jax.random.fold_in(key, i // 3))
           for i in (0, 3, 6)]
  np.testing.assert_allclose(ss.mean_unlabelled_bound(model, params, x, key, batch_size=3),
                             float(jnp.mean(jnp.concatenate(parts))), rtol=1e-6)


def test_the_k_sample_bound_with_the_label_a_latent_is_the_mixture_of_the_classes_bounds():
  """With M2's label a latent (`marginal_parts`), the k-sample bound of x estimates
  log p(x) = logsumexp_y log p(x|y) - log K: in float64 at k = 20,000 it agrees with that
  sum over the classes' own k-sample bounds of log p(x|y) within 5 Monte Carlo standard
  errors (each under 0.02 nats); the ELBO of (y, z) is below it; the posterior's
  density is the one it draws with."""
  from vae_jax import objectives  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    model, params = _m2()
    params = _f64(params)
    x = jax.random.bernoulli(jax.random.key(1), 0.4, (5, 6)).astype(jnp.float64)
    key = jax.random.key(3)

    def iwae(parts, key, k=20000):  # the bound [n] and its Monte Carlo s.e. [n]
      return objectives.iwae_bound_and_stderr(parts.encoder, parts.decoder, x, key,
                                              prior=parts.prior, num_samples=k,
                                              chunk_size=min(k, 2000))

    @jax.jit
    def bounds(params, x, key):
      parts = model.marginal_parts(params)
      marginal = iwae(parts, key)
      elbo = jnp.mean(objectives.log_weights(parts.encoder, parts.decoder, x, key,
                                             prior=parts.prior, num_samples=2000), 0)
      per_class, class_se = jnp.stack([jnp.stack(iwae(model.parts(params, jnp.full((5,), k)),
                                                      jax.random.fold_in(key, k)))
                                       for k in range(K)], 1)
      want = jax.nn.logsumexp(per_class, 0) - np.log(K)
      # The sum's s.e. by the delta method: class k's share of p(x) times its s.e.
      want_se = jnp.sqrt(jnp.sum((jnp.exp(per_class - want - np.log(K)) * class_se) ** 2, 0))
      q = model.marginal_parts(params).encoder(x)
      z, log_q = q.sample_and_log_prob(key)
      return marginal, elbo, (want, want_se), log_q, q.log_prob(z)
    (marginal, marginal_se), elbo, (want, want_se), log_q, again = bounds(params, x, key)
    assert np.all(np.abs(marginal - want) < 5 * np.hypot(marginal_se, want_se)), (
        marginal, want, marginal_se, want_se)
    assert np.all(marginal_se < 0.02)
    assert np.all(elbo < marginal - 0.1)  # the ELBO of (y, z): Jensen's gap below it
    np.testing.assert_allclose(log_q, again, rtol=1e-12)


def test_the_marginal_bound_is_at_most_logsumexp_and_equal_at_the_softmax():
  per_class = jax.random.normal(jax.random.key(3), (5, K), jnp.float32) * 4
  any_q = jax.nn.log_softmax(jax.random.normal(jax.random.key(4), (5, K)))
  lse = jax.nn.logsumexp(per_class, axis=-1)
  assert bool(jnp.all(ss.marginal_bound(any_q, per_class) <= lse + 1e-5))
  np.testing.assert_allclose(ss.marginal_bound(jax.nn.log_softmax(per_class), per_class), lse,
                             rtol=1e-5)


def test_the_classifier_learns_through_both_terms_and_only_through_them():
  """From unlabelled rows (through U) and from labelled rows with alpha > 0 (through
  log q(y|x)); labelled rows with alpha = 0 leave it untouched (L(x, y) has no q(y|x))."""
  model, params = _m2()
  x = jax.random.bernoulli(jax.random.key(1), 0.4, (6, 6)).astype(jnp.float32)
  key = jax.random.key(5)

  def classifier_grad(y, alpha):
    loss = lambda p: ss.m2_loss(model, alpha=alpha)(p, labels.Batch(x, y), key, 0)[0]
    g = jax.jit(jax.grad(loss))(params)["params"]
    return sum(float(jnp.sum(jnp.abs(v))) for v in jax.tree_util.tree_leaves(g["classifier"]))

  unlabelled = jnp.full((6,), ss.UNLABELLED)
  labelled = jnp.arange(6) % K
  assert classifier_grad(unlabelled, 0.0) > 0
  assert classifier_grad(labelled, 0.1) > 0
  assert classifier_grad(labelled, 0.0) == 0.0


def test_a_balanced_draw_takes_as_many_of_each_class_and_follows_its_key():
  y = np.repeat(np.arange(10), 50)
  np.random.default_rng(0).shuffle(y)
  a = ss.balanced_draw(y, 100, jax.random.key(0))
  assert len(a) == 100 == len(set(a.tolist()))
  assert np.bincount(y[a], minlength=10).tolist() == [10] * 10
  np.testing.assert_array_equal(a, ss.balanced_draw(y, 100, jax.random.key(0)))
  assert set(a.tolist()) != set(ss.balanced_draw(y, 100, jax.random.key(1)).tolist())
  b = ss.balanced_draw(y, 23, jax.random.key(0))  # 23 = 10 x 2 + 3: the first 3 get one more
  assert np.bincount(y[b], minlength=10).tolist() == [3, 3, 3] + [2] * 7
  hidden = ss.hide_labels(y, a)
  assert (hidden >= 0).sum() == 100 and set(hidden[hidden < 0]) == {ss.UNLABELLED}
  short = np.repeat(np.arange(10), [40] + [50] * 9)  # class 0: 40 images, 49 wanted
  with pytest.raises(ValueError, match="labelled_examples=490: class 0 has 40 training images, "
                                       "fewer than the 49"):
    ss.balanced_draw(short, 490, jax.random.key(0))
  with pytest.raises(ValueError, match="labelled_examples=600: must be between 1 and the 500"):
    ss.balanced_draw(y, 600, jax.random.key(0))


def test_an_epochs_batches_mix_every_row_unlabelled_with_the_labelled_ones():
  """Every row once per epoch with its label hidden, then M labelled rows a batch,
  drawn from the N kept (class-balanced, by the key) and cycled; each image with its
  own label; replicas draw their own labelled rows."""
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  y = np.arange(60, dtype=np.int32) % 3
  images = np.broadcast_to(y[:, None, None, None], (60, 2, 2, 1)).astype(np.uint8) + 1
  rows = labels.Batch(images, y)
  root = jax.random.key(7)
  b = train.epoch_batches(rows, root, 0, 10, labelled=(6, 4))
  assert b.x.shape == (6, 14, 2, 2, 1) and b.labels.shape == (6, 14)
  lab, hidden = np.asarray(b.labels[:, 10:]), np.asarray(b.labels[:, :10])
  assert (hidden == ss.UNLABELLED).all() and (lab >= 0).all()
  np.testing.assert_array_equal(np.asarray(b.x)[:, 10:, 0, 0, 0], lab + 1)  # image and label
  kept = ss.labelled_rows(y, 6, root)
  assert np.bincount(y[kept], minlength=3).tolist() == [2, 2, 2]
  seen = np.asarray(b.x)[:, :10, 0, 0, 0].ravel() - 1
  assert sorted(np.bincount(seen, minlength=3).tolist()) == [20, 20, 20]  # each row once
  assert sorted(lab.ravel().tolist()) == sorted(np.repeat(y[kept], 4).tolist())  # 24 = 4 cycles
  two = train.epoch_batches(rows, jnp.stack([jax.random.key(7), jax.random.key(8)]), 0, 10,
                            labelled=(6, 4))
  np.testing.assert_array_equal(np.asarray(two.labels[0]), np.asarray(b.labels))


def test_m1_m2s_input_transform_draws_each_row_from_its_stored_posterior():
  """Stored M1 posteriors (mean, s.d.) `[n, 2, Z]` become fresh draws `[n, Z]`: over
  4,000 keys each entry's sample mean is its mean and its sample s.d. its s.d. (within
  5 standard errors), a zero s.d. gives the mean itself, and the labels ride along."""
  mean = jnp.asarray([[0.5, -2.0, 0.0], [3.0, 0.25, 1.0]])
  sd = jnp.asarray([[1.0, 0.1, 0.0], [2.0, 0.5, 0.3]])
  rows = labels.Batch(jnp.stack([mean, sd], axis=1), jnp.asarray([4, 7]))
  draws = jax.jit(jax.vmap(lambda k: ss.draw_features(k, rows).x))(
      jax.random.split(jax.random.key(0), 4000))  # [4000, 2, 3]
  n = draws.shape[0]
  safe_sd = np.where(np.asarray(sd) > 0, sd, 1.0)
  np.testing.assert_array_less(np.abs(np.mean(draws, 0) - mean), 5 * safe_sd / np.sqrt(n))
  np.testing.assert_array_less(np.abs(np.std(draws, 0) - sd), 5 * safe_sd / np.sqrt(2 * n))
  np.testing.assert_array_equal(draws[:, 0, 2], 0.0)
  assert ss.draw_features(jax.random.key(1), rows).labels.tolist() == [4, 7]
  assert ss.draw_features(jax.random.key(1), rows.x).shape == (2, 3)  # x alone


def test_hiding_labels_needs_a_model_that_learns_without_them():
  import vae_jax  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"labelled_examples=100: hides labels, which model=mlp "
                                       r"cannot learn without; use --model=m2"):
    vae_jax.RunConfig(labelled_examples=100)
  m2 = vae_jax.RunConfig(model="m2", labelled_examples=100)
  assert m2.labelled and not m2.conditional and m2.has_closed_form_kl()


@pytest.mark.slow  # two commands of the tiny shape
def test_m2_from_the_command_line_trains_on_hidden_labels_and_reports_its_test_error(
    data_root, tmp_path, capfd):
  import json  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  args = ["--model=m2", "--labelled_examples=20", "--labelled_batch_size=16", "--epochs=2",
          *helpers.TINY_FLAGS, f"--workdir={tmp_path}"]
  code, err = helpers.cli(capfd, "experiments.mnist", *args)
  assert code == 0, err[-3000:]
  assert "test error " in err
  records = helpers.run_metrics(tmp_path)
  assert [r["epoch"] for r in records] == [1, 2]
  assert 0 <= records[-1]["test_error"] <= 1 and records[-1]["train_classification_loss"] > 0
  assert records[-1]["test_bound_unlabelled"] < 0  # a bound on log p(x), y marginalised
  assert records[-1]["train_labelled_rows"] == 16 and records[-1]["step"] == 2 * (512 // 64)
  code, err = helpers.cli(capfd, "experiments.evaluate", f"--workdir={tmp_path}",
                          "--method=elbo,classification,iwae", "--large_L=2", "--k=20",
                          f"--test_examples={helpers.TINY_TEST}")
  assert code == 0, err[-3000:]
  result = json.loads((tmp_path / "evaluation.json").read_text())
  assert result["classification"]["test_error"] == pytest.approx(records[-1]["test_error"])
  # The k-sample bound with the label a latent: log p(x), not the true label's log p(x|y).
  assert result["bound_of"] == "log p(x)" and "test log p(x) ~ " in err
  assert result["log_px_k20"]["log_px"] < 0


@pytest.mark.slow  # two commands of the tiny shape
def test_m1_m2_trains_m2_on_the_latent_means_of_an_m1_run(reference_run, data_root, tmp_path,
                                                          capfd):
  """The reference run is M1 (its posteriors, 2-d, are M2's data: training rows stored
  as (mean, s.d.), test rows as means): M2 trains on draws from them with a Gaussian
  likelihood and reports its test error; its config records the M1 run."""
  import json  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  args = ["--model=m2", "--labelled_examples=20", "--labelled_batch_size=16", "--epochs=1",
          f"--m1_workdir={reference_run}", "--binarize=none", "--likelihood=gaussian",
          *helpers.TINY_FLAGS, f"--workdir={tmp_path}"]
  code, err = helpers.cli(capfd, "experiments.mnist", *args)
  assert code == 0, err[-3000:]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["m1_workdir"] == str(reference_run) and saved["data"]["image_shape"] == [2]
  # Its data: M1's posterior of every training image, the means of the test images.
  import dataclasses  # pylint: disable=g-import-not-at-top
  from vae_jax import data, datasets, evaluate, runner  # pylint: disable=g-import-not-at-top
  config = runner.load_run(tmp_path)[0]
  options = datasets.DataOptions(train_examples=helpers.TINY_TRAIN,
                                 test_examples=helpers.TINY_TEST)
  features = datasets.load_for(config, options)
  images = datasets.load_for(dataclasses.replace(config, m1_workdir=None), options)
  _, m1, m1_state, _ = runner.load_run(reference_run)
  mean, sd = evaluate.encoder_moments(m1.parts, m1_state.params,
                                      data.to_unit_interval(jnp.asarray(images.train)))
  np.testing.assert_allclose(features.train, np.stack([mean, sd], 1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(features.test, evaluate.encoder_means(
      m1.parts, m1_state.params, data.to_unit_interval(jnp.asarray(images.test))),
                             rtol=1e-5, atol=1e-6)
  assert 0 <= helpers.run_metrics(tmp_path)[-1]["test_error"] <= 1
  with pytest.raises(ValueError, match="m1_workdir=runs/m1: M1\\+M2 trains M2 on M1's latent "
                                       "means; use --model=m2"):
    import vae_jax  # pylint: disable=g-import-not-at-top
    vae_jax.RunConfig(m1_workdir="runs/m1")
