"""Whole-data-set evaluation against a slow, obviously correct reference."""

import jax
import numpy as np
import pytest
from scipy import special, stats

import vae_jax
from vae_jax import engine, evaluate, optimizers
import vae_jax.objectives  # pylint: disable=unused-import
from tests import helpers


@pytest.fixture(scope="module")
def problem():
  return helpers.small_vae(12, 2, 8, n=7)


def _reference_log_px(model, params, x, key, k):
  """A plain loop over images and samples in float64 numpy: the documented keys
  (image j: fold_in(key, j); sample i: fold_in(that, i)) and nothing else shared."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])
  enc, dec = p["encoder"]["mlp"], p["decoder"]["mlp"]
  out = []
  for j, xj in enumerate(np.asarray(x, np.float64)):
    h = np.tanh(xj @ enc["dense_0"]["kernel"] + enc["dense_0"]["bias"])
    mean, logvar = np.split(h @ enc["dense_1"]["kernel"] + enc["dense_1"]["bias"], 2)
    keys = [jax.random.fold_in(jax.random.fold_in(key, j), i) for i in range(k)]
    logw = []
    for i in range(k):
      eps = np.asarray(jax.random.normal(keys[i], (1, 2)), np.float64)[0]
      z = mean + np.exp(logvar / 2) * eps
      logits = np.tanh(z @ dec["dense_0"]["kernel"] + dec["dense_0"]["bias"]) \
          @ dec["dense_1"]["kernel"] + dec["dense_1"]["bias"]
      log_px_z = np.sum(xj * logits - np.logaddexp(0, logits))
      log_pz = stats.norm.logpdf(z).sum()
      log_qz = stats.norm.logpdf(z, mean, np.exp(logvar / 2)).sum()
      logw.append(log_px_z + log_pz - log_qz)
    out.append(special.logsumexp(logw) - np.log(k))
  return np.array(out)


@pytest.mark.parametrize("chunk,batch,block", [
    (40, 7, 7), (7, 2, 3), pytest.param(1, 1, 5, marks=pytest.mark.slow),
    pytest.param(100, 4, 100, marks=pytest.mark.slow)])
def test_log_likelihood_matches_plain_loop_for_any_chunking(problem, chunk, batch, block):
  model, params, x = problem
  key, k = jax.random.key(5), 40
  want = _reference_log_px(model, params, x, key, k)
  got = evaluate.marginal_log_likelihood(model.parts, params, x, key, num_samples=k, chunk_size=chunk,
                                batch_size=batch, block_size=block, progress=False)
  np.testing.assert_allclose(got["log_px"], want.mean(), rtol=1e-5)
  np.testing.assert_allclose(got["data_stderr"], want.std() / np.sqrt(len(want)), rtol=1e-3)
  assert got["n"] == 7 and got["mc_stderr"] > 0


def test_compiled_evaluation_equals_jit_and_survives_an_xla_without_the_option(problem,
                                                                                monkeypatch):
  """The k-sample evaluation's executable (its CPU compiler options) gives jax.jit's
  numbers; an XLA that lacks the option compiles without it instead of failing."""
  model, params, x = problem
  key, kw = jax.random.key(4), dict(num_samples=30, chunk_size=8, batch_size=3, num_chunks=2)
  args = (jax.numpy.int32(2), jax.numpy.int32(1))  # rows from offset 2, chunks 1 and 2
  want = evaluate.iwae_log_sums_rows(model.parts, params, x, key, *args, **kw)
  for options in (evaluate.CPU_COMPILER_OPTIONS, {"xla_cpu_no_such_option_in_any_xla": ""}):
    monkeypatch.setattr(evaluate, "CPU_COMPILER_OPTIONS", options)
    compiled = evaluate.compile_iwae_log_sums(model.parts, params, x, key, **kw)
    got = compiled(params, x, key, *args)
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-5)


def test_log_sums_over_chunk_ranges_add_up_to_the_bound_and_its_groups(problem):
  # Cutting the k samples into calls of a few chunks each changes no number.
  model, params, x = problem
  enc, dec, prior = model.parts(params)
  key, k, chunk = jax.random.key(3), 37, 5
  row_keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jax.numpy.arange(x.shape[0]))
  per_row = jax.jit(jax.vmap(lambda xj, kj: vae_jax.objectives.iwae_bound_and_groups(
      enc, dec, xj[None], kj, prior=prior, num_samples=k, chunk_size=chunk)))
  bound, groups = per_row(x, row_keys)  # [n, 1], [n, G, 1]
  bound, groups = np.asarray(bound)[:, 0], np.asarray(groups)[:, :, 0]  # [n], [n, G]
  parts = [evaluate.iwae_log_sums_rows(model.parts, params, x, key, jax.numpy.int32(0),
                                       jax.numpy.int32(c0), num_samples=k, chunk_size=chunk,
                                       num_chunks=c, batch_size=3) for c0, c in ((0, 3), (3, 1), (4, 4))]
  lse = np.logaddexp.reduce(np.stack([np.asarray(p[0], np.float64) for p in parts]), axis=0)
  lse_groups = np.logaddexp.reduce(np.stack([np.asarray(p[1], np.float64) for p in parts]), axis=0)
  np.testing.assert_allclose(lse - np.log(k), bound, rtol=1e-5)
  sizes = np.asarray([len(range(g, k, 10)) for g in range(10)])
  np.testing.assert_allclose(lse_groups - np.log(sizes), groups, rtol=1e-5)
  sums = evaluate.bound_sums(lse, lse_groups, k)
  assert sums["log_px"] == pytest.approx(bound.sum(), rel=1e-5)
  assert sums["var_small"] == pytest.approx(np.var(groups, axis=1, ddof=1).sum(), rel=1e-4)


def test_a_long_evaluation_is_cut_into_short_calls_and_stops_within_one(problem, monkeypatch,
                                                                         caplog):
  model, params, x = problem
  monkeypatch.setattr(engine, "POLL_SECONDS", 0.0)  # one chunk per call
  polls = []

  def stop():
    polls.append(1)
    return len(polls) == 3
  with caplog.at_level("INFO"):
    with pytest.raises(engine.EvaluationStopped, match="stopped after 0 of 7 examples"):
      evaluate.marginal_log_likelihood(model.parts, params, x, jax.random.key(0), num_samples=40,
                                       chunk_size=4, batch_size=7, block_size=7, stop=stop)
  assert len(polls) == 3  # polled after each call, within the first block
  first = caplog.records[0].getMessage()
  assert first.startswith("log p(x), k=40 on 7 examples: about ") and "in all" in first


def test_an_interrupted_evaluation_continues_to_the_uninterrupted_numbers(problem):
  """Stopped after its second block, the evaluation kept the sums of its first two; a
  run resumed from them scores only the rest and ends at the uninterrupted figures."""
  model, params, x = problem
  common = dict(num_samples=40, chunk_size=10, batch_size=2, block_size=2, progress=False)
  whole = evaluate.marginal_log_likelihood(model.parts, params, x, jax.random.key(3), **common)
  kept, polls = [], []
  with pytest.raises(engine.EvaluationStopped, match="the finished blocks are kept"):
    evaluate.marginal_log_likelihood(
        model.parts, params, x, jax.random.key(3), on_block=kept.append,
        stop=lambda: len(kept) >= 2 and not polls.append(1), **common)
  assert [k["done"] for k in kept] == [2, 4]
  resumed = evaluate.marginal_log_likelihood(model.parts, params, x, jax.random.key(3),
                                             resume=kept[-1], **common)
  for name in ("log_px", "mc_stderr", "data_stderr"):
    assert resumed[name] == pytest.approx(whole[name], rel=1e-9), name


@pytest.mark.slow  # four evaluations compiled
def test_more_samples_never_lower_beyond_standard_error(problem):
  model, params, x = problem
  x = helpers.binary_data(jax.random.key(2), n=200, dim=12, p=0.4)
  small = evaluate.marginal_log_likelihood(model.parts, params, x, jax.random.key(0), num_samples=2,
                                  chunk_size=2, progress=False)
  large = evaluate.marginal_log_likelihood(model.parts, params, x, jax.random.key(1), num_samples=500,
                                  chunk_size=100, progress=False)
  assert large["log_px"] > small["log_px"] - 4 * (small["mc_stderr"] + large["mc_stderr"])
  assert large["mc_stderr"] < small["mc_stderr"]


def test_elbo_means_are_exact_means_for_any_batch_size(problem):
  model, params, x = problem
  key = jax.random.key(3)
  ref = np.mean([helpers.bound(vae_jax.elbo, model, params, x[j:j + 1],
                               jax.random.fold_in(key, j), num_samples=3)[0] for j in range(7)])
  for batch in (1, 3, 7, 100):
    got = evaluate.elbo_means(model.parts, params, x, key, num_samples=3, batch_size=batch)
    np.testing.assert_allclose(got["elbo"], ref, rtol=1e-5)
    np.testing.assert_allclose(got["elbo"], got["reconstruction"] - got["kl"], rtol=1e-5)


@pytest.fixture(scope="module")
def trained(mnist):
  """Burda et al.'s one-layer model (784-200-200-50 tanh) after 3 epochs on 10,000
  images, and 100 binarized test images: weights with the heavy tails of a real run."""
  from vae_jax import data, losses, train  # pylint: disable=g-import-not-at-top
  model = vae_jax.VAE(latent_dim=50, hidden_sizes=(200, 200), activation="tanh",
                      image_shape=(28, 28, 1))
  opt = optimizers.make_optimizer("adam", 1e-3)
  root = jax.random.key(0)
  state = train.init_state(vae_jax.init_params(model, train.init_key(root)), opt)
  epoch_fn = train.make_train_epoch(losses.elbo_loss(model.parts), opt,
                                    transform=data.binarizer("dynamic"))
  for e in range(3):
    state, _ = epoch_fn(state, train.epoch_batches(mnist.train[:10000], root, e, 100), root)
  x = data.to_unit_interval(jax.numpy.asarray(data.fixed_binarization(mnist.test[:100], 1)))
  return model, state.params, x


@pytest.mark.slow
def test_monte_carlo_stderr_is_calibrated_on_a_trained_model(trained):
  """The reported standard error of the mean log p(x) estimate against its spread
  over 20 independent keys (pooled over 100 test images): ratio within 0.8 to 1.25.
  Plain batch means (a 1/k rate) would give about 0.5 here."""
  model, params, x = trained
  def one(key):
    enc, dec, prior = model.parts(params)
    return vae_jax.iwae_bound(enc, dec, x, key, prior=prior, num_samples=500)
  bounds = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), 20)),
                      np.float64)
  spread = np.sqrt(np.sum(np.var(bounds, axis=0, ddof=1))) / len(x)  # s.d. of the mean
  reported = [evaluate.marginal_log_likelihood(model.parts, params, x, jax.random.key(s),
                                               num_samples=500, progress=False)
              for s in range(3)]
  ratio = np.mean([r["mc_stderr"] for r in reported]) / spread
  assert 0.8 < ratio < 1.25, (ratio, reported[0]["mc_rate"])
  assert reported[0]["mc_rate"] < 0.9  # heavy tails: slower than 1/k


@pytest.mark.slow
def test_bfloat16_matmuls_stay_close_to_float32_on_a_trained_model(trained):
  """Mixed precision (matmuls in bfloat16, likelihood and KL summed in float32)
  moves the test ELBO of a trained model by well under a nat per image."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  model, params, x = trained
  key = jax.random.key(3)
  f32 = evaluate.elbo_means(model.parts, params, x, key, num_samples=10)["elbo"]
  half = model.clone(dtype=jnp.bfloat16)
  b16 = evaluate.elbo_means(half.parts, params, x, key, num_samples=10)["elbo"]
  assert abs(b16 - f32) < 0.5, (f32, b16)
  assert abs(b16 - f32) > 0.0  # the bfloat16 path really ran


def _evaluation_problem():
  model = vae_jax.VAE(input_dim=784, latent_dim=8, hidden_sizes=(64,))
  params = vae_jax.init_params(model, jax.random.key(0))
  return model, params, helpers.binary_data(jax.random.key(1), n=40, dim=784)


@pytest.mark.slow  # compiles three evaluations, one of a million-sample chunk
def test_evaluation_memory_is_bounded_for_any_k_and_checked_before_the_work():
  model, params, x = _evaluation_problem()
  size = lambda k: evaluate.iwae_block_bytes(model.parts, params, x, jax.random.key(0),
                                             num_samples=k, chunk_size=100, batch_size=20)
  small, huge = size(1_000), size(100_000_000)
  assert huge < 1.1 * small, (small, huge)  # O(chunk x batch), not O(k)
  with pytest.raises(ValueError, match=r"needs about .* GiB per call \(chunk_size=1000000 "
                                       r"samples x batch_size=40 examples\).*lower"):
    evaluate.marginal_log_likelihood(model.parts, params, x, jax.random.key(0),
                                     num_samples=10_000_000, chunk_size=1_000_000,
                                     batch_size=40, progress=False)


def test_active_units_count_the_dimensions_whose_means_vary_and_kls_add_up():
  """Burda et al.'s count on a linear-Gaussian model whose encoder ignores the input in
  its first dimension (a constant mean) and nearly in its second (variance below 10^-2
  over the data): exactly the third is active; the per-dimension KLs are the closed
  form's summands."""
  model, params, x, _ = helpers.linear_gaussian_problem(n=500)
  kernel = params["params"]["encoder"]["mlp"]["dense_0"]["kernel"]
  kernel = kernel.at[:, 0].set(0.0).at[:, 1].multiply(0.01)
  params["params"]["encoder"]["mlp"]["dense_0"]["kernel"] = kernel
  usage = evaluate.latent_usage(model.parts, params, x, batch_size=64)
  assert usage["active_units"] == 1
  var = usage["unit_variances"]
  assert var[0] < 1e-10 and 0 < var[1] < evaluate.ACTIVE_UNIT_THRESHOLD < var[2]
  means = np.asarray(evaluate.encoder_means(model.parts, params, x), np.float64)
  np.testing.assert_allclose(var, means.var(0), rtol=1e-4, atol=1e-9)
  enc = model.parts(params).encoder(x)
  total_kl = np.mean(np.asarray(vae_jax.distributions.kl_divergence(
      enc, vae_jax.distributions.StandardNormal())))
  np.testing.assert_allclose(sum(usage["kl_per_dim"]), total_kl, rtol=1e-5)
