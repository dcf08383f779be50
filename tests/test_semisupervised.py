"""M2 (Kingma et al., 2014): the unlabelled bound against a loop over the classes in
float64, Jensen's bound and its equality, gradients into the classifier through both
terms, class-balanced draws of the labelled rows."""

import jax
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
    got = ss.unlabelled_bound(model, params, x, key, num_samples=3)
    log_q = np.asarray(jax.nn.log_softmax(model.classify(params, x)), np.float64)
    loop = [np.asarray(ss.labelled_bound(model, params, x, jnp.full((7,), k), key,
                                         num_samples=3)) for k in range(K)]
    want = sum(np.exp(log_q[:, k]) * loop[k] for k in range(K)) - np.sum(
        np.exp(log_q) * log_q, axis=1)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    y = jnp.asarray([0, 2, ss.UNLABELLED, 1, ss.UNLABELLED, ss.UNLABELLED, 0])
    loss, m = ss.m2_loss(model, alpha=0.5, num_samples=3)(params, labels.Batch(x, y), key, 0)
    lab = np.asarray(y) >= 0
    per_row = np.where(lab, -np.choose(np.maximum(np.asarray(y), 0), loop)
                       - 0.5 * log_q[np.arange(7), np.maximum(np.asarray(y), 0)], -want)
    np.testing.assert_allclose(float(loss), per_row.mean(), rtol=1e-12)
    assert float(m["labelled_rows"]) == 4
    np.testing.assert_allclose(float(m["unlabelled_bound"]), want[~lab].mean(), rtol=1e-12)


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
    g = jax.grad(loss)(params)["params"]
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
