"""The compiled training step and epoch: same numbers as a Python loop, one
trace, NaN handling, and the same result sharded over 4 devices."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
import vae_jax
from vae_jax import data, losses, multihost, objectives, optimizers, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 64


@pytest.fixture(scope="module")
def images(mnist):
  return mnist.train[:1000]  # 15 full batches and a dropped partial one


def _setup(lr=1e-3):
  model = vae_jax.VAE(latent_dim=8, hidden_sizes=(64,), image_shape=(28, 28, 1))
  opt = optimizers.make_optimizer("adam", lr)
  root = jax.random.key(0)
  return model, opt, root, train.init_state(vae_jax.init_params(model, train.init_key(root)), opt)


def _loss(model, num_samples=1):
  return losses.elbo_loss(model.parts, num_samples=num_samples)


def _python_loop(model, opt, root, state, images, epochs):
  """The reference: one jitted train_step per batch, keys and order as documented."""
  step = jax.jit(train.make_train_step(_loss(model, 2), opt))
  n = images.shape[0]
  for epoch in range(epochs):
    perm = train.epoch_permutation(root, epoch, n)
    for i in range(n // BATCH):
      data_key, sample_key = jax.random.split(train.step_key(root, state.step))
      x = data.binarize(data_key, jnp.asarray(images)[perm[i * BATCH:(i + 1) * BATCH]], "dynamic")
      state, _ = step(state, x, sample_key)
  return state


def test_epoch_scan_equals_step_by_step_python_loop(images):
  model, opt, root, state = _setup()
  ref = _python_loop(model, opt, root, state, images, epochs=2)
  epoch_fn = train.make_train_epoch(_loss(model, 2), opt, transform=data.binarizer("dynamic"))
  _, _, _, state = _setup()
  for e in range(2):
    state, metrics = epoch_fn(state, train.epoch_batches(images, root, e, BATCH), root)
  assert int(state.step) == int(ref.step) == 2 * (1000 // BATCH)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
                         state.params, ref.params)
  assert metrics["nonfinite_steps"] == 0 and metrics["first_nonfinite_step"] == -1


@pytest.mark.slow
def test_host_loop_epoch_equals_the_scanned_epoch(images):
  # The conv models' path on a CPU (jax-ml/jax#12868): same keys, same steps, same metrics,
  # through the ahead-of-time compile the runner uses, with non-finite steps located.
  for lr in (1e-3, 1e6):
    results = []
    for host_loop in (False, True):
      model, opt, root, state = _setup(lr=lr)
      epoch_fn = train.make_train_epoch(_loss(model, 2), opt, transform=data.binarizer("dynamic"),
                                        host_loop=host_loop)
      batches = train.epoch_batches(images, root, 0, BATCH)
      compiled = epoch_fn.lower(state, batches, root).compile()
      assert compiled.memory_analysis() is not None
      for e in range(2):
        state, metrics = compiled(state, train.epoch_batches(images, root, e, BATCH), root)
      results.append((state, jax.device_get(metrics)))
    (scan_state, scan_m), (loop_state, loop_m) = results
    assert int(loop_state.step) == int(scan_state.step) == 2 * (1000 // BATCH)
    assert scan_m.keys() == loop_m.keys()
    assert loop_m["nonfinite_steps"] == scan_m["nonfinite_steps"]
    assert loop_m["first_nonfinite_step"] == scan_m["first_nonfinite_step"]
    if lr < 1:
      assert scan_m["nonfinite_steps"] == 0
      jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
                             loop_state.params, scan_state.params)
      np.testing.assert_allclose(loop_m["elbo"], scan_m["elbo"], rtol=1e-5)
    else:
      assert scan_m["first_nonfinite_step"] >= 0


def test_train_step_is_traced_once_across_steps_and_epochs(images, monkeypatch):
  traces = []
  real = objectives.elbo_terms
  monkeypatch.setattr(objectives, "elbo_terms", lambda *a, **k: traces.append(1) or real(*a, **k))
  model, opt, root, state = _setup()
  epoch_fn = train.make_train_epoch(_loss(model), opt, transform=data.binarizer("dynamic"))
  for e in range(3):
    state, _ = epoch_fn(state, train.epoch_batches(images, root, e, BATCH), root)
  assert len(traces) == 1
  assert epoch_fn._cache_size() == 1  # pylint: disable=protected-access
  step = jax.jit(train.make_train_step(_loss(model), opt))
  traces.clear()
  for s in range(3):
    state, _ = step(state, jnp.asarray(images[:BATCH], jnp.float32) / 255, jax.random.key(s))
  assert len(traces) == 1


def test_training_improves_the_bound(images):
  model, opt, root, state = _setup()
  epoch_fn = train.make_train_epoch(_loss(model), opt, transform=data.binarizer("dynamic"))
  bounds = []
  for e in range(4):
    state, m = epoch_fn(state, train.epoch_batches(images, root, e, BATCH), root)
    bounds.append(float(m["elbo"]))
  assert bounds[-1] > bounds[0] + 20, bounds


def test_nonfinite_steps_are_reported_or_skipped(images):
  for skip in (False, True):
    model, opt, root, state = _setup(lr=1e6)
    epoch_fn = train.make_train_epoch(_loss(model), opt, transform=data.binarizer("dynamic"),
                                      skip_nonfinite=skip)
    state, m = epoch_fn(state, train.epoch_batches(images, root, 0, BATCH), root)
    assert m["nonfinite_steps"] > 0 and m["first_nonfinite_step"] >= 0
    finite = all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(state.params))
    assert finite == skip


def _train_sharded(mnist_dir) -> dict:
  """One step, then two epochs, over every device of this process: the first step's
  update and gradient norm, each epoch's mean ELBO and gradient norm, and the params."""
  images = data.load_mnist(mnist_dir).train[:1024]
  # An IAF posterior and the VampPrior: the pseudo-inputs' gradient is summed across devices too.
  model = vae_jax.VAE(latent_dim=8, hidden_sizes=(64,), image_shape=(28, 28, 1),
                      flow=vae_jax.IAF(1, (16,), context_dim=8), pseudo_inputs=16)
  opt = optimizers.make_optimizer("adam", 1e-3)
  root = jax.random.key(0)
  mesh = multihost.data_mesh()
  start = lambda: multihost.replicate(
      train.init_state(vae_jax.init_params(model, train.init_key(root)), opt), mesh)
  epoch = train.make_train_epoch(losses.elbo_loss(model.parts, estimator="monte_carlo"), opt,
                                 transform=data.binarizer("dynamic"), mesh=mesh, grad_norm=True)
  leaves = lambda params: [np.asarray(p, np.float64).ravel()
                           for p in jax.tree_util.tree_leaves(params)]
  before = leaves(start().params)
  one_step, m = epoch(start(), train.epoch_batches(images[:64], root, 0, 64, mesh), root)
  out = {"step_grad_norm": float(m["grad_norm"]), "elbo": [], "grad_norm": [],
         "step_update": [(a - b).tolist() for a, b in zip(leaves(one_step.params), before)]}
  state = start()
  for e in range(2):
    state, m = epoch(state, train.epoch_batches(images, root, e, 64, mesh), root)
    out["elbo"].append(float(m["elbo"]))
    out["grad_norm"].append(float(m["grad_norm"]))
  out["params"] = [a.tolist() for a in leaves(state.params)]
  return out


_ON_FOUR_DEVICES = """
import json, sys
import jax
from tests import test_train
assert jax.device_count() == 4, jax.devices()
print(json.dumps(test_train._train_sharded(sys.argv[1])))
"""


def _relative_distance(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.slow
@pytest.mark.system  # a process with four CPU devices
def test_four_devices_match_one(data_root):
  """Sharding the batch over 4 devices changes only the order of the sums over its
  examples. In float32 each reordered sum moves by a few ulps of its terms, so one
  step's gradient norm agrees to 1e-5 and its update, leaf by leaf as a vector, to
  1e-4: an entry whose gradient is ~0 can flip sign and Adam then moves it by the
  learning rate the other way, so entry by entry the update fixes nothing. Over 64
  steps those differences grow as training amplifies them (chaos, not error: 2 of
  50,176 parameters differed by 3e-6 on one CPU, none on another), so the epochs'
  losses are compared, and the parameters as vectors to 1e-3."""
  assert jax.device_count() == 1, jax.devices()
  one = _train_sharded(data_root / "mnist")  # this process: one CPU device
  out = subprocess.run([sys.executable, "-c", _ON_FOUR_DEVICES, str(data_root / "mnist")],
                       env=helpers.cpu_devices_env(4), cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  four = json.loads(out.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(four["step_grad_norm"], one["step_grad_norm"], rtol=1e-5)
  for a, b in zip(four["step_update"], one["step_update"], strict=True):
    assert _relative_distance(a, b) < 1e-4
  np.testing.assert_allclose(four["elbo"], one["elbo"], rtol=1e-5)
  np.testing.assert_allclose(four["grad_norm"], one["grad_norm"], rtol=1e-4)
  for a, b in zip(four["params"], one["params"], strict=True):
    assert _relative_distance(a, b) < 1e-3


@pytest.mark.slow
def test_conv_vae_one_short_epoch_on_mnist_improves_the_test_bound(mnist):
  """Images flow as [batch, 28, 28, 1] through the scanned epoch and the padded
  evaluation, whose value does not depend on its batch size."""
  from vae_jax import evaluate  # pylint: disable=g-import-not-at-top
  model = vae_jax.conv_mnist(latent_dim=8)
  opt = optimizers.make_optimizer("adam", 1e-3)
  root = jax.random.key(0)
  state = train.init_state(vae_jax.init_params(model, train.init_key(root)), opt)
  test_x = data.to_unit_interval(jnp.asarray(data.fixed_binarization(mnist.test[:200], 1)))
  key = jax.random.key(1)
  bound = lambda params, bs: evaluate.elbo_means(model.parts, params, test_x, key,
                                                 batch_size=bs)["elbo"]
  before = bound(state.params, 64)
  epoch_fn = train.make_train_epoch(_loss(model), opt, transform=data.binarizer("dynamic"))
  state, metrics = epoch_fn(state, train.epoch_batches(mnist.train[:1280], root, 0, BATCH), root)
  after = bound(state.params, 64)
  assert int(state.step) == 20 and np.isfinite(float(metrics["objective"]))
  assert after > before + 100, (before, after)  # about -545 -> -200 nats
  for bs in (7, 200):
    assert bound(state.params, bs) == pytest.approx(after, rel=1e-5)


def test_hyperparameters_as_inputs_give_the_constants_numbers_and_compile_once(images):
  """beta, the KL warm-up and the learning rate as the epoch's inputs (`hparams`, the
  optimizer at a peak of 1): the same losses and parameters as the same values built
  into the program as constants, and a second set of values compiles nothing."""
  model, _, root, _ = _setup()
  steps = images.shape[0] // BATCH
  const = optimizers.make_optimizer("adam", 3e-3, schedule="burda", steps_per_epoch=steps)
  unit = optimizers.make_optimizer("adam", 1.0, schedule="burda", steps_per_epoch=steps)
  warmup = losses.kl_warmup(20)
  built_in = train.make_train_epoch(
      losses.elbo_loss(model.parts, beta=lambda s: 0.5 * warmup(s)), const,
      transform=data.binarizer("dynamic"))
  traced = train.make_train_epoch(_loss(model), unit, transform=data.binarizer("dynamic"))
  hparams = {"learning_rate": jnp.float32(3e-3), "beta": jnp.float32(0.5),
             "kl_warmup_steps": jnp.int32(20)}
  init = lambda opt: train.init_state(vae_jax.init_params(model, train.init_key(root)), opt)
  a, b = init(const), init(unit)
  for e in range(2):
    batches = train.epoch_batches(images, root, e, BATCH)
    a, ma = built_in(a, batches, root)
    b, mb = traced(b, batches, root, hparams)
    for k in ("elbo", "kl", "beta", "objective"):
      np.testing.assert_allclose(mb[k], ma[k], rtol=1e-5, err_msg=k)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
                         b.params, a.params)
  with helpers.count_compiles() as compiles:
    traced(b, batches, root, {"learning_rate": jnp.float32(1e-4), "beta": jnp.float32(2.0),
                              "kl_warmup_steps": jnp.int32(0)})
  assert not compiles, compiles
