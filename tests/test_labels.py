"""Conditional models: the label travels with its image through training, every
evaluation and the pictures, and the bounds are on log p(x|y) (checked against a
conditional linear-Gaussian model's exact value)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from vae_jax import ais, data, evaluate, labels, losses, models, train


@pytest.fixture(scope="module")
def problem():
  return helpers.conditional_linear_gaussian_problem()


def test_every_evaluation_of_labelled_rows_is_the_exact_log_p_x_given_y(problem):
  """With the exact posterior every importance weight is p(x|y): the ELBO, the k-sample
  bound (37 rows in padded batches of 5, blocks of 11) and the training loss all equal
  the exact mean of log p(x|y). Rows and labels out of step would not."""
  model, params, x, y, exact = problem
  key = jax.random.key(0)
  want = float(np.mean(exact))
  # Estimator A: log p(x, z) - log q(z|x) is log p(x|y) at every z (B has noise).
  assert evaluate.elbo_means(model.parts, params, labels.Batch(x, y), key, batch_size=5,
                             estimator="monte_carlo")["elbo"] == pytest.approx(want, abs=2e-3)
  ll = evaluate.marginal_log_likelihood(model.parts, params, labels.Batch(x, y), key, num_samples=20,
                                        chunk_size=7, batch_size=5, block_size=11,
                                        progress=False)
  assert ll["log_px"] == pytest.approx(want, abs=2e-3) and ll["n"] == 37
  loss, _ = losses.elbo_loss(model.parts, estimator="monte_carlo")(params, labels.Batch(x, y),
                                                                   key, 0)
  assert float(loss) == pytest.approx(-want, abs=2e-3)
  # Another class for each row: the same images are far less likely.
  wrong = evaluate.elbo_means(model.parts, params, labels.Batch(x, (y + 1) % 3), key,
                              estimator="monte_carlo")["elbo"]
  assert wrong < want - 5


@pytest.mark.slow
def test_ais_of_labelled_rows_is_the_exact_log_p_x_given_y(problem):
  """AIS from q = the exact posterior: every chain's weight is p(x|y), in batches of 8
  (the last one padded)."""
  model, params, x, y, exact = problem
  result = ais.log_likelihood(model.parts, params, labels.Batch(x, y), jax.random.key(0),
                              num_chains=2,
                              num_intermediate=3, start="posterior", batch_size=8,
                              target_acceptance=None, progress=False)
  assert result["log_px"] == pytest.approx(float(np.mean(exact)), abs=2e-3)


def test_the_label_enters_as_a_one_hot_input_of_both_networks(problem):
  """The ELBO of rows of class 1 has no gradient in the label rows of the other classes,
  and a non-zero one in its own, in the encoder's first layer and the decoder's."""
  model, params, x, y, _ = problem
  ones = labels.Batch(x[y == 1], y[y == 1])
  grads = jax.jit(jax.grad(
      lambda p: losses.elbo_loss(model.parts)(p, ones, jax.random.key(0), 0)[0]))(params)["params"]
  for net, inputs in (("encoder", x.shape[1]), ("decoder", 3)):
    rows = np.abs(np.asarray(grads[net]["mlp"]["dense_0"]["kernel"][inputs:])).sum(1)
    assert rows[1] > 0 and rows[0] == 0 and rows[2] == 0, (net, rows)


def test_a_conditional_model_needs_labels_and_a_plain_one_takes_none(problem):
  model, params, x, y, _ = problem
  with pytest.raises(ValueError, match="num_classes=3 takes labels"):
    model.parts(params)
  plain = models.LinenModel(models.VAE(input_dim=6, latent_dim=3, hidden_sizes=()))
  with pytest.raises(ValueError, match="num_classes=0 takes no labels"):
    plain.parts(plain.init(jax.random.key(0)), y)


def test_epoch_batches_keep_each_image_with_its_label():
  """Images whose pixels are their label: every batch of every replica pairs them."""
  y = np.arange(50, dtype=np.int32) % 7
  images = np.broadcast_to(y[:, None, None, None], (50, 2, 2, 1)).astype(np.uint8)
  roots = jnp.stack([jax.random.key(3), jax.random.key(4)])
  for root in (roots[0], roots):
    batches = train.epoch_batches(labels.Batch(images, y), root, 2, 8)
    xb, yb = batches.x, batches.labels
    assert xb.shape[-4:] == (8, 2, 2, 1) and yb.shape == xb.shape[:-3]
    np.testing.assert_array_equal(np.asarray(xb)[..., 0, 0, 0], np.asarray(yb))
  order = np.asarray(train.epoch_permutation(roots[1], 2, 50))[:48].reshape(6, 8)
  np.testing.assert_array_equal(np.asarray(yb[1]), y[order])


def test_model_inputs_check_the_labels_with_one_line(mnist):
  small = data.subset(mnist, 100, 50)
  assert small.num_classes == 10 and data.Dataset(small.train, small.test, None, None,
                                                  (28, 28, 1)).num_classes == 0
  train_rows, test_rows = data.model_inputs(small, "dynamic", 10)
  train_y, test_x, test_y = train_rows.labels, test_rows.x, test_rows.labels
  np.testing.assert_array_equal(train_y, small.train_labels)
  assert test_x.shape == (50, 28, 28, 1) and test_y.dtype == jnp.int32
  with pytest.raises(ValueError, match="the test set has no labels"):
    data.model_inputs(small._replace(test_labels=None), "dynamic", 10)
  with pytest.raises(ValueError, match=r"training label 5 \(row 0\) is outside 0..4"):
    data.model_inputs(small, "dynamic", 5)
  bad = small.train_labels.copy()
  bad[3] = -1
  with pytest.raises(ValueError, match=r"label -1 \(row 3\)"):
    data.model_inputs(small._replace(train_labels=bad), "dynamic", 10)


def test_samples_of_a_conditional_model_are_a_row_per_class(problem):
  """`model_images` with parts bound to each class in turn: the samples are the decoder's
  means for the prior's z under each row's class, and at equal z two classes' means
  differ by their label rows (B_c - B_0)."""
  from vae_jax import plots  # pylint: disable=g-import-not-at-top
  model, params, x, y, _ = problem
  classes = jnp.repeat(jnp.arange(3), plots.SAMPLES_PER_CLASS)
  key = jax.random.key(0)
  images = plots.model_images(model.parts(params, y), x, key, model.parts(params, classes), 3)
  assert images["samples"].shape == (3 * plots.SAMPLES_PER_CLASS, 6)
  assert "manifold" not in images and images["reconstructions"].shape == (37, 6)
  _, dec, prior = model.parts(params, classes)
  z = prior.sample(jax.random.split(key)[0], (len(classes),))
  np.testing.assert_allclose(images["samples"], dec(z).mean, atol=1e-5)
  B = params["params"]["decoder"]["mlp"]["dense_0"]["kernel"][3:]
  at_zero = dec(jnp.zeros((len(classes), 3))).mean[::plots.SAMPLES_PER_CLASS]
  np.testing.assert_allclose(at_zero[2] - at_zero[0], B[2] - B[0], atol=1e-5)


@pytest.mark.parametrize("stored,message", [
    (np.array([0, 1.5, 2]), r"f.npz\['train_labels'\]: label 1.5 \(row 1\) is not a whole number"),
    (np.array([0, np.nan]), r"label nan \(row 1\) is not a whole number"),
    (np.array([0, 2 ** 40]), r"label 1099511627776 \(row 1\) is outside 0..2147483647"),
    (np.array([3, -1]), r"label -1 \(row 1\) is outside"),
    (np.array(["a", "b"]), r"labels of type <U1; store integer class indices"),
    (np.zeros((2, 2)), r"labels of shape \(2, 2\); store one integer label per image"),
])
def test_labels_are_checked_as_stored_before_any_cast(stored, message):
  with pytest.raises(ValueError, match=message):
    labels.as_labels(stored, "f.npz['train_labels']")
  got = labels.as_labels(np.array([0.0, 3.0, 2147483647.0]), "f")
  assert got.dtype == np.int32 and got.tolist() == [0, 3, 2147483647]
  assert labels.as_labels(np.array([1, 2], np.uint64), "f").tolist() == [1, 2]


def test_an_npz_with_bad_labels_is_one_line_naming_file_and_split(tmp_path):
  from vae_jax import datasets  # pylint: disable=g-import-not-at-top
  images = np.zeros((4, 2, 2), np.uint8)
  np.savez(tmp_path / "d.npz", train=images, test=images, train_labels=[0, 1, 0, 1],
           test_labels=[0.0, 1.0, 2 ** 40, 1.0])
  with pytest.raises(data.DataError, match=r"d.npz\['test_labels'\]: label 1099511627776\.0 "
                                           r"\(row 2\) is outside"):
    datasets.load_npz(tmp_path / "d.npz")


def test_the_classes_are_bounded_by_the_data(caplog):
  images = np.zeros((6, 2, 2, 1), np.uint8)
  make = lambda train_y, test_y: data.Dataset(images, images[:3], np.array(train_y, np.int32),
                                              np.array(test_y, np.int32), (2, 2, 1))
  with pytest.raises(ValueError, match=r"the labels make 600 classes \(the largest is 599\) "
                                       r"for 6 training images"):
    data.check_classes(make([0, 1, 2, 3, 4, 599], [0, 1, 2]))
  with caplog.at_level("WARNING"):
    data.check_classes(make([0, 0, 1, 1, 3, 3], [0, 2, 4]))
  lines = [r.getMessage() for r in caplog.records]
  assert any("2 of the 5 classes have no training image (2, 4)" in l for l in lines), lines
  assert any("test labels 2, 4 never occur in the training set" in l for l in lines), lines
  with pytest.raises(ValueError, match="the test set has no labels"):
    data.check_labels(make([0, 5, 0, 0, 0, 0], [0, 0, 0])._replace(test_labels=None), 1)


def test_a_batch_is_one_record_sliced_together_and_a_tuple_is_refused():
  x, y = jnp.arange(12.0).reshape(6, 2), jnp.arange(6) % 3
  rows = labels.take(labels.Batch(x, y), 2, 5)
  np.testing.assert_array_equal(rows.x, x[2:5])
  np.testing.assert_array_equal(rows.labels, y[2:5])
  assert labels.num_rows(rows) == 3 and labels.bound_of(rows) == "log p(x|y)"
  assert labels.bound_of(x) == "log p(x)" and labels.inputs(x) is x
  assert labels.take(labels.Batch(x), 0, 2).labels is None  # an unlabelled batch
  with pytest.raises(ValueError, match=r"rows: a tuple; give the array x, or "
                                       r"labels.Batch\(x, labels\)"):
    labels.num_rows((x, y))
