"""Semi-supervised learning with deep generative models (Kingma, Rezende, Mohamed &
Welling, 2014): model M2, the label a latent variable where it is missing.

M2 is a conditional VAE, q(z|x, y) and p(x|y, z) with p(z) = N(0, I), beside a
classifier q(y|x), with p(y) uniform over K classes. A labelled row (x, y) has the
bound L(x, y) = E_q(z|x,y)[log p(x|y, z)] - KL(q(z|x, y) || p(z)) + log p(y); an
unlabelled row has U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)), all K terms in one
vmapped pass. The loss of a batch whose unlabelled rows carry the label -1 is the
batch mean of -L(x, y) (labelled rows) and -U(x) (the others) plus alpha times the
labelled rows' mean of -log q(y|x) (the paper's J^alpha, eq. 9, divided by its N).
"""

import dataclasses
import functools
import math
from typing import Callable, Sequence

from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions
from vae_jax import labels as labels_lib
from vae_jax import models
from vae_jax import objectives

UNLABELLED = -1  # the label of a row whose label is hidden


class M2(nn.Module):
  """M2's networks: `vae`, a conditional VAE of `num_classes` classes (q(z|x, y),
  p(x|y, z)), and an MLP classifier q(y|x) over the flattened x."""
  vae: models.VAE
  classifier_sizes: Sequence[int] = (500,)
  activation: str = "softplus"

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self.vae.event_shape

  def setup(self):
    if not self.vae.num_classes:
      raise ValueError("M2: its vae must be conditional (num_classes > 0)")
    self.classifier = models.MLP(tuple(self.classifier_sizes) + (self.vae.num_classes,),
                                 self.activation)

  def __call__(self, x: jax.Array):
    """Both networks on x (what `init` runs to create every parameter)."""
    return self.vae(x), self.classify(x)

  def classify(self, x: jax.Array) -> jax.Array:
    """`[..., *event_shape]` -> the logits of q(y|x), `[..., K]`."""
    return self.classifier(models.flatten_event(x, self.event_shape))


@dataclasses.dataclass(frozen=True)
class M2Model:
  """M2 as the runner's model: `init`, `parts(params, labels)` (the conditional VAE's,
  as any conditional model's) and `classify(params, x)` (q(y|x)'s logits `[n, K]`)."""
  module: M2

  @property
  def num_classes(self) -> int:
    return self.module.vae.num_classes

  def init(self, key: jax.Array):
    return models.init_params(self.module, key)

  def parts(self, params, labels=None) -> objectives.Parts:
    return self.module.vae.parts({"params": params["params"]["vae"]}, labels)

  def classify(self, params, x: jax.Array) -> jax.Array:
    return self.module.apply(params, x, method=M2.classify)

  def marginal_parts(self, params) -> objectives.Parts:
    """M2 with its label as a latent too, for bounds on log p(x): the latent is
    [z, one_hot(y)] `[..., Z + K]`, the posterior `LabelAndLatent`, the prior p(z) p(y)
    with p(y) uniform, the decoder p(x|y, z). Any estimator over (encoder, decoder,
    prior), such as the k-sample bound, then marginalises the label."""
    vae = self.module.vae.bind({"params": params["params"]["vae"]})
    k, dim = self.num_classes, self.module.vae.latent_dim
    encoder = lambda x: LabelAndLatent(proposal_log_probs(self.classify(params, x)), x,
                                       vae.encode)
    decoder = lambda latent: vae.decode(latent[..., :dim], latent[..., dim:])
    return objectives.Parts(encoder, decoder, LabelAndLatentPrior(dim, k))


def proposal_log_probs(logits: jax.Array) -> jax.Array:
  """log of the label proposal `[..., K]`: half q(y|x) (softmax of `logits`), half the
  uniform, so that every class is drawn (defensive importance sampling: a weight is at
  most 2K times that of its class's z alone, however sure and wrong the classifier)."""
  k = logits.shape[-1]
  return jnp.logaddexp(jax.nn.log_softmax(logits, axis=-1) + math.log(0.5),
                       math.log(0.5 / k))


@struct.dataclass
class LabelAndLatent:
  """A posterior over [z, one_hot(y)] `[..., Z + K]` for rows x `[n, ...]`: y from the
  proposal of log-probabilities `log_q_y` `[n, K]`, then z from the conditional encoder's
  q(z|x, y)."""
  log_q_y: jax.Array
  x: jax.Array
  encode: Callable = struct.field(pytree_node=False)  # (x, one-hot y) -> q(z|x, y)

  def _q_z(self, y_hot: jax.Array):
    x = jnp.broadcast_to(self.x, y_hot.shape[:-2] + self.x.shape)
    return self.encode(x, y_hot)

  def sample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One draw `[n, Z + K]` and its log density `[n]`."""
    y_key, z_key = jax.random.split(key)
    y_hot = jax.nn.one_hot(jax.random.categorical(y_key, self.log_q_y), self.log_q_y.shape[-1])
    z, log_q_z = distributions.sample_and_log_prob(self._q_z(y_hot), z_key)
    return jnp.concatenate([z, y_hot], -1), log_q_z + jnp.sum(y_hot * self.log_q_y, -1)

  def sample(self, key: jax.Array) -> jax.Array:
    return self.sample_and_log_prob(key)[0]

  def log_prob(self, latent: jax.Array) -> jax.Array:
    """`[..., n, Z + K]` (y one-hot) -> `[..., n]`."""
    k = self.log_q_y.shape[-1]
    z, y_hot = latent[..., :-k], latent[..., -k:]
    return self._q_z(y_hot).log_prob(z) + jnp.sum(y_hot * self.log_q_y, -1)


@struct.dataclass
class LabelAndLatentPrior:
  """p(z) p(y) over [z, one_hot(y)]: N(0, I) of `dim` entries and the uniform over K
  (a density for the bounds; nothing draws from it)."""
  dim: int = struct.field(pytree_node=False)
  num_classes: int = struct.field(pytree_node=False)

  def log_prob(self, latent: jax.Array) -> jax.Array:
    return (distributions.standard_normal_log_prob(latent[..., :self.dim])
            - math.log(self.num_classes))


def labelled_bound(model, params, x, y, key, *, num_samples: int = 1,
                   estimator: str = "analytic") -> jax.Array:
  """L(x, y) `[n]` for rows x `[n, ...]` of labels y `[n]`: the conditional ELBO plus
  log p(y) = -log K (nats)."""
  enc, dec, prior = model.parts(params, y)
  bound = objectives.elbo(enc, dec, x, key, prior=prior, num_samples=num_samples,
                          estimator=estimator)
  return bound - math.log(model.num_classes)


def bounds_over_classes(model, params, x, key, **kwargs) -> jax.Array:
  """L(x, k) for every class k, `[K, n]`: one vmapped pass over the classes (each
  class's z drawn with the same key, so the classes differ by y alone)."""
  n = labels_lib.num_rows(x)
  return jax.vmap(lambda k: labelled_bound(model, params, x, jnp.full((n,), k), key,
                                           **kwargs))(jnp.arange(model.num_classes))


def marginal_bound(log_q: jax.Array, per_class: jax.Array) -> jax.Array:
  """sum_y q(y) L(y) + H(q) over the last axis of log q(y) and L(y), `[..., K]` -> `[...]`:
  at most logsumexp_y L(y) (Jensen), equal to it where q(y) is softmax(L)."""
  q = jnp.exp(log_q)
  return jnp.sum(q * per_class, axis=-1) - jnp.sum(q * log_q, axis=-1)


def unlabelled_bound(model, params, x, key, **kwargs) -> jax.Array:
  """U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)), `[n]` (nats): the bound on log p(x) with
  the label marginalised under the classifier."""
  log_q = jax.nn.log_softmax(model.classify(params, x), axis=-1)  # [n, K]
  return marginal_bound(log_q, bounds_over_classes(model, params, x, key, **kwargs).T)


def m2_loss(model, *, alpha: float, num_samples: int = 1, estimator: str = "analytic",
            labelled_rows: int = 0):
  """The paper's J^alpha (eq. 9) per row, over a `labels.Batch` whose unlabelled rows
  carry `UNLABELLED`: the batch mean of -L(x, y) (labelled rows) and -U(x) (the others),
  plus alpha times the labelled rows' mean of -log q(y|x) (the paper's alpha divided by
  its N: 0.1 in its experiments).

  labelled_rows: 0, any rows may be labelled: every class's L(x, k) is computed for every
    row. M > 0, the batch is laid out as `mixed_order` lays out training batches: its
    last M rows labelled, the others not; a labelled row's bound is computed for its own
    class only (K times less work for those rows), the others' z drawn with
    `fold_in(key, 0)` and the labelled rows' with `fold_in(key, 1)`.

  Returns:
    loss_fn(params, batch, key, step) -> (loss, {"objective", "elbo" (the batch's mean
    bound), "labelled_bound", "unlabelled_bound", "classification_loss"}).
  """
  objectives.check(num_samples, estimator)
  kwargs = dict(num_samples=num_samples, estimator=estimator)

  def masked(params, x, y, key):
    """(bound, is_labelled, log q(y|x)) `[n]` each, any rows labelled."""
    log_q = jax.nn.log_softmax(model.classify(params, x), axis=-1)  # [n, K]
    per_class = bounds_over_classes(model, params, x, key, **kwargs).T  # [n, K]
    is_labelled = y >= 0
    y_safe = jnp.where(is_labelled, y, 0)
    lab = jnp.take_along_axis(per_class, y_safe[:, None], axis=-1)[:, 0]
    bound = jnp.where(is_labelled, lab, marginal_bound(log_q, per_class))
    return bound, is_labelled, jnp.take_along_axis(log_q, y_safe[:, None], axis=-1)[:, 0]

  def laid_out(params, x, y, key):
    """The same for a batch whose last `labelled_rows` rows alone are labelled."""
    hidden = labels_lib.num_rows(x) - labelled_rows
    tail, tail_y = x[hidden:], y[hidden:]
    bound = jnp.concatenate([
        unlabelled_bound(model, params, x[:hidden], jax.random.fold_in(key, 0), **kwargs),
        labelled_bound(model, params, tail, tail_y, jax.random.fold_in(key, 1), **kwargs)])
    log_q = jax.nn.log_softmax(model.classify(params, tail), axis=-1)
    log_q_y = jnp.take_along_axis(log_q, tail_y[:, None], axis=-1)[:, 0]
    is_labelled = jnp.arange(hidden + labelled_rows) >= hidden
    return bound, is_labelled, jnp.concatenate([jnp.zeros(hidden), log_q_y])

  def loss_fn(params, batch, key, step):
    del step
    bound, is_labelled, log_q_y = (laid_out if labelled_rows else masked)(
        params, batch.x, batch.labels, key)
    mean_of = lambda v, mask: jnp.sum(jnp.where(mask, v, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
    classification = mean_of(-log_q_y, is_labelled)
    loss = -jnp.mean(bound) + alpha * classification
    return loss, {"objective": -loss, "elbo": jnp.mean(bound),
                  "labelled_bound": mean_of(bound, is_labelled),
                  "unlabelled_bound": mean_of(bound, ~is_labelled),
                  "classification_loss": classification,
                  "labelled_rows": jnp.sum(is_labelled).astype(jnp.float32)}
  return loss_fn


def balanced_draw(labels: np.ndarray, num_labelled: int, key: jax.Array) -> np.ndarray:
  """The rows that keep their labels: `num_labelled` of them, as many of each class
  (num_labelled / K; the first classes one more where it does not divide), drawn by
  `key`; sorted indices `[num_labelled]`."""
  labels = np.asarray(labels)
  classes = int(labels.max()) + 1
  if not 0 < num_labelled <= len(labels):
    raise ValueError(f"labelled_examples={num_labelled}: must be between 1 and the "
                     f"{len(labels)} training images")
  picked = []
  for c in range(classes):
    rows = np.flatnonzero(labels == c)
    want = num_labelled // classes + (c < num_labelled % classes)
    if want > len(rows):
      raise ValueError(f"labelled_examples={num_labelled}: class {c} has {len(rows)} "
                       f"training images, fewer than the {want} a balanced draw needs")
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, c), len(rows)))
    picked.append(rows[order[:want]])
  return np.sort(np.concatenate(picked))


LABEL_DRAW = 0x1AB  # the root key's fold for the draw of the labelled rows


def labelled_rows(labels: np.ndarray, num_labelled: int, root_key: jax.Array) -> np.ndarray:
  """The rows a run (or a replica) of this root key keeps the labels of."""
  return balanced_draw(labels, num_labelled, jax.random.fold_in(root_key, LABEL_DRAW))


def mixed_order(rows, order: np.ndarray, root_key: jax.Array, epoch: int, num_labelled: int,
                per_batch: int):
  """An epoch's batches for M2 (as the paper mixes them): every row of `order`
  `[steps, B]` with its label hidden, then `per_batch` rows of the `num_labelled`
  labelled ones (`labelled_rows`), reshuffled each time they are used up. Returns the
  rows to gather from (the images, and labels with the rows' own hidden) and the order
  `[steps, B + per_batch]` into them: rows n.. stand for the labelled copies."""
  n, (steps, _) = labels_lib.num_rows(rows), order.shape
  keep = labelled_rows(rows.labels, num_labelled, root_key)
  need = steps * per_batch
  key = jax.random.fold_in(jax.random.fold_in(root_key, LABEL_DRAW), epoch)
  cycles = [keep[np.asarray(jax.random.permutation(jax.random.fold_in(key, c), len(keep)))]
            for c in range(-(-need // len(keep)))]
  extra = np.concatenate(cycles)[:need].reshape(steps, per_batch)
  hidden = np.full(n, UNLABELLED, np.int32)
  gathered = labels_lib.Batch(
      np.concatenate([np.asarray(rows.x), np.asarray(rows.x)[keep]]),
      np.concatenate([hidden, np.asarray(rows.labels, np.int32)[keep]]))
  # A labelled row's copy sits at n + its place in `keep`.
  place = np.empty(n, np.int64)
  place[keep] = np.arange(len(keep))
  return gathered, np.concatenate([order, n + place[extra]], axis=1)


def hide_labels(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
  """The labels with every row outside `keep` set to `UNLABELLED`, int32."""
  out = np.full(len(labels), UNLABELLED, np.int32)
  out[keep] = np.asarray(labels, np.int32)[keep]
  return out


@functools.partial(jax.jit, static_argnums=0)
def _wrong(model, params, x, y) -> jax.Array:
  return jnp.sum(jnp.argmax(model.classify(params, x), -1) != y)


@functools.partial(jax.jit, static_argnums=0)
def _unlabelled_sum(model, params, x, key) -> jax.Array:
  return jnp.sum(unlabelled_bound(model, params, x, key))


def mean_unlabelled_bound(model, params, x, key, batch_size: int = 500) -> float:
  """The mean over rows x `[n, ...]` of U(x), the bound on log p(x) with the label
  marginalised under q(y|x) (nats; batch i's z drawn with `fold_in(key, i)`)."""
  total = sum(float(_unlabelled_sum(model, params, x[i:i + batch_size],
                                    jax.random.fold_in(key, i // batch_size)))
              for i in range(0, len(x), batch_size))
  return total / len(x)


def classification_error(model, params, x, y, batch_size: int = 1000) -> float:
  """The share of rows x `[n, ...]` whose most likely class under q(y|x) is not y `[n]`
  (compiled once per model and batch shape)."""
  wrong = sum(int(_wrong(model, params, x[i:i + batch_size], y[i:i + batch_size]))
              for i in range(0, len(y), batch_size))
  return wrong / len(y)


M1_ACTIVE_SPREAD = 0.1  # Kingma et al.'s code: an M1 unit whose mean varies less is dropped


def m1_features(dataset, m1_workdir):
  """M1+M2's data: every image of `dataset` through the M1 run in `m1_workdir` (a
  built-in model trained on the same images), on the units M1 uses (those whose
  posterior mean's s.d. over the training images exceeds `M1_ACTIVE_SPREAD`, as Kingma
  et al.'s code keeps them). Training rows are stored as M1's posterior, (mean, s.d.)
  `[n, 2, Z]` float32, and each use draws a fresh z from it (`draw_features`, the
  run's input transform), as the paper's code does: on the means alone M2's Gaussian
  likelihood shrinks onto them and its classes drift from the digits. Test rows are
  the means `[n, Z]`; the labels are kept and `image_shape` is (Z,). The M1 run's
  checkpoint is read, never its code: a run of your own model is refused as
  `load_run` refuses it."""
  import pathlib  # pylint: disable=g-import-not-at-top
  from vae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vae_jax import data  # pylint: disable=g-import-not-at-top
  from vae_jax import evaluate  # pylint: disable=g-import-not-at-top
  from vae_jax import runner  # pylint: disable=g-import-not-at-top
  _, model, state, _ = runner.load_run(m1_workdir)
  shape = tuple(config_lib.read_run_config(pathlib.Path(m1_workdir) / "config.json")[1][
      "image_shape"])
  if shape != tuple(dataset.image_shape):
    raise ValueError(f"m1_workdir={m1_workdir}: its run was trained on images of shape "
                     f"{shape}, not this data set's {tuple(dataset.image_shape)}")

  def moments(images) -> tuple[np.ndarray, np.ndarray]:
    x = data.to_unit_interval(jnp.asarray(images))  # grey levels as probabilities
    parts = [evaluate.encoder_moments(model.parts, state.params, x[i:i + 1000])
             for i in range(0, len(x), 1000)]
    return tuple(np.concatenate([np.asarray(p[j]) for p in parts]).astype(np.float32)
                 for j in (0, 1))
  (train_mean, train_sd), (test_mean, _) = moments(dataset.train), moments(dataset.test)
  used = train_mean.std(axis=0) > M1_ACTIVE_SPREAD
  if not used.any():
    raise ValueError(f"m1_workdir={m1_workdir}: none of its {used.size} latent units varies "
                     f"over the images (posterior means' s.d. <= {M1_ACTIVE_SPREAD}); train "
                     f"M1 longer")
  train = np.stack([train_mean[:, used], train_sd[:, used]], axis=1)
  return data.Dataset(train, test_mean[:, used], dataset.train_labels, dataset.test_labels,
                      (int(used.sum()),))


def draw_features(key: jax.Array, batch):
  """M1+M2's input transform: stored M1 posteriors (mean, s.d.) `[..., 2, Z]` -> a
  draw `[..., Z]` (a `labels.Batch`'s x drawn, its labels kept)."""
  rows = labels_lib.as_batch(batch)
  mean, sd = rows.x[..., 0, :], rows.x[..., 1, :]
  x = mean + sd * jax.random.normal(key, mean.shape, mean.dtype)
  return rows.replace(x=x) if isinstance(batch, labels_lib.Batch) else x
