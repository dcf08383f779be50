"""AIS and BDMC: facts a correct sampler must show on models whose log p(x) is known."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from vae_jax import ais
from vae_jax import distributions
from vae_jax import engine
from vae_jax import objectives


def test_the_sigmoid_schedule_runs_from_zero_to_one_and_rises():
  for t in (1, 2, 10, 1000):
    betas = ais.sigmoid_schedule(t)
    assert betas.shape == (t + 1,) and betas[0] == 0 and betas[-1] == 1
    assert np.all(np.diff(betas) > 0)
  # Denser at the ends than in the middle (the densities change fastest there).
  d = np.diff(ais.sigmoid_schedule(100))
  assert d[0] < d[50] and d[-1] < d[50]
  with pytest.raises(ValueError, match="num_intermediate=0"):
    ais.sigmoid_schedule(0)


@functools.partial(jax.jit, static_argnames=("moves", "step_size", "adapt"))
def _hmc_chains(key, mean, logvar, moves, step_size, adapt):
  """`moves` HMC moves of 4,000 chains started at exact draws of N(mean, diag e^logvar)."""
  density = lambda z: distributions.gaussian_log_prob(z, mean, logvar)  # [1, d] -> [1]
  tgt = ais.Target(density, density)
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, (4000, 1, mean.shape[-1]))
  chains = ais.start_chains(tgt, z, step_size)
  def move(c, k):
    return ais.hmc_move(tgt, c, 1.0, k, num_leapfrog=5,
                        target_acceptance=0.65 if adapt else None), None
  chains, _ = jax.lax.scan(move, chains, jax.random.split(jax.random.fold_in(key, 1), moves))
  return chains


def test_hmc_leaves_a_gaussian_invariant():
  """Exact draws stay exact draws: means and variances after 20 moves within 4
  standard errors, at a step size large enough that leapfrog alone (no Metropolis
  test) would inflate the narrow dimension's variance."""
  mean = jnp.array([[1.0, -2.0, 0.5]])
  logvar = jnp.log(jnp.array([[0.25, 1.0, 4.0]]))
  chains = _hmc_chains(jax.random.key(0), mean, logvar, moves=20, step_size=0.9, adapt=False)
  z = np.asarray(chains.z[:, 0, :], np.float64)
  n, var = z.shape[0], np.exp(np.asarray(logvar[0], np.float64))
  assert np.all(np.abs(z.mean(0) - np.asarray(mean[0])) < 4 * np.sqrt(var / n))
  assert np.all(np.abs(z.var(0, ddof=1) - var) < 4 * var * np.sqrt(2 / (n - 1)))
  acceptance = float(jnp.mean(chains.accepted)) / 20
  assert 0.05 < acceptance < 0.95  # it moved, and it rejected: the test is active


@pytest.mark.slow  # runs hundreds of HMC moves
def test_step_sizes_adapt_toward_the_target_acceptance():
  chains = _hmc_chains(jax.random.key(1), jnp.zeros((1, 2)), jnp.zeros((1, 2)), moves=300,
                       step_size=0.01, adapt=True)
  # From 0.01 the steps grow until about 65% of the moves are accepted.
  assert float(jnp.median(chains.step_size)) > 0.3
  late = _hmc_chains(jax.random.key(2), jnp.zeros((1, 2)), jnp.zeros((1, 2)), moves=300,
                     step_size=float(jnp.median(chains.step_size)), adapt=True)
  assert 0.5 < float(jnp.mean(late.accepted)) / 300 < 0.85


def _linear_gaussian(n=6, seed=0):
  model, params, x, log_px = helpers.linear_gaussian_problem(n=n, seed=seed)
  # An encoder off the exact posterior: importance sampling from it is loose.
  return model, helpers.worse_encoder(params, shift=1.0, logvar_shift=1.5), x, log_px


@functools.partial(jax.jit, static_argnames=("model", "fn", "opts"))
def _with_parts(model, fn, params, x, key, opts):
  enc, dec, prior = model.parts(params)
  return fn(enc, dec, x, key, prior=prior, **dict(opts))


def test_one_move_from_the_posterior_is_importance_sampling():
  """T = 1 from q: the log weight is log p(x, z) - log q(z|x) at z ~ q, so AIS equals
  the IWAE bound with k = chains, drawn with the same keys."""
  model, params, x, _ = _linear_gaussian()
  key = jax.random.key(3)
  got = _with_parts(model, ais.ais, params, x, key,
                    (("num_chains", 64), ("num_intermediate", 1), ("start", "posterior")))
  for j in range(x.shape[0]):
    start_key = jax.random.split(jax.random.fold_in(key, j))[0]
    want = helpers.bound(objectives.iwae_bound, model, params, x[j:j + 1], start_key,
                         num_samples=64)
    np.testing.assert_allclose(got.log_px[j], want[0], rtol=0, atol=2e-4)


@pytest.mark.slow  # runs hundreds of HMC moves
def test_ais_converges_to_the_exact_log_likelihood():
  """On the linear-Gaussian model: from the prior, the error shrinks as T grows, and
  at T = 500 the estimate equals log p(x) within its standard error (IWAE with as many
  samples from the poor encoder stays far below)."""
  model, params, x, log_px = _linear_gaussian(n=20)
  key = jax.random.key(4)
  errors = {}
  for t in (1, 30, 500):
    r = _with_parts(model, ais.ais, params, x, key,
                    (("num_chains", 16), ("num_intermediate", t), ("num_leapfrog", 5)))
    errors[t] = float(np.mean(log_px) - np.mean(np.asarray(r.log_px, np.float64)))
    se = float(np.sqrt(np.sum(np.asarray(r.stderr, np.float64) ** 2)) / x.shape[0])
  assert errors[1] > errors[30] > abs(errors[500])
  assert abs(errors[500]) < 4 * se + 0.01, (errors, se)
  iwae = helpers.bound(objectives.iwae_bound, model, params, x, key, num_samples=16)
  assert np.mean(log_px) - np.mean(np.asarray(iwae)) > 10 * abs(errors[500])


@pytest.mark.slow  # runs hundreds of HMC moves
def test_bdmc_brackets_the_exact_log_likelihood_and_its_gap_closes():
  """On data simulated from the linear-Gaussian model: forward AIS below log p(x),
  the reverse chain from the exact z above it (within standard errors), and the gap
  between them shrinks as T grows."""
  model, params, _, _ = _linear_gaussian()
  _, dec, prior = model.parts(params)
  x, z = ais.simulate(dec, prior, jax.random.key(5), 8, 3)
  w, b = (np.asarray(params["params"]["decoder"]["mlp"]["dense_0"][k], np.float64)
          for k in ("kernel", "bias"))
  cov = w.T @ w + 0.3 * np.eye(6)
  diff = np.asarray(x, np.float64) - b
  exact = -0.5 * (np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
                  + np.linalg.slogdet(2 * np.pi * cov)[1])
  gaps = {}
  for t in (3, 300):
    opts = (("num_chains", 16), ("num_intermediate", t), ("num_leapfrog", 5))
    lower = _with_parts(model, ais.ais, params, x, jax.random.key(6), opts)
    upper = jax.jit(lambda p, x, z: ais.reverse_ais(*model.parts(p)[:2], x, z, jax.random.key(7),
                                                    prior=model.parts(p)[2], **dict(opts)))(
                                                        params, x, z)
    lo, hi = (np.asarray(r.log_px, np.float64) for r in (lower, upper))
    se = lambda r: np.sqrt(np.sum(np.asarray(r.stderr, np.float64) ** 2)) / len(x)
    assert lo.mean() < exact.mean() + 4 * se(lower) + 1e-3
    assert hi.mean() > exact.mean() - 4 * se(upper) - 1e-3
    gaps[t] = hi.mean() - lo.mean()
  assert gaps[3] > 5 * gaps[300] and gaps[300] < 0.1, gaps


@pytest.mark.slow  # runs hundreds of HMC moves
def test_the_data_set_driver_gives_ais_numbers_whatever_the_segments(monkeypatch):
  """`log_likelihood` (batches, a schedule cut into calls) equals `ais` with the same key,
  with calls of one move and with whole paths, and a last batch padded."""
  model, params, x, _ = _linear_gaussian(n=5)
  key = jax.random.key(8)
  opts = dict(num_chains=8, num_intermediate=12, num_leapfrog=3)
  direct = _with_parts(model, ais.ais, params, x, key, tuple(opts.items()))
  for poll in (1e-9, 1e9):  # one move a call; the whole path in one call
    monkeypatch.setattr(engine, "POLL_SECONDS", poll)
    got = ais.log_likelihood(model.parts, params, x, key, batch_size=2, progress=False, **opts)
    np.testing.assert_allclose(got["log_px"], float(np.mean(direct.log_px)), atol=1e-4)
    assert got["n"] == 5 and got["num_intermediate"] == 12 and 0 < got["acceptance"] < 1


@pytest.mark.slow  # compiles the driver's calls
def test_a_stop_request_ends_the_run_within_a_call(monkeypatch):
  model, params, x, _ = _linear_gaussian(n=4)
  monkeypatch.setattr(engine, "POLL_SECONDS", 1e-9)
  calls = []
  def stop():
    calls.append(1)
    return len(calls) >= 3
  with pytest.raises(engine.EvaluationStopped, match="stopped after 0 of 4 examples"):
    ais.log_likelihood(model.parts, params, x, jax.random.key(0), num_chains=4,
                       num_intermediate=50, batch_size=2, progress=False, stop=stop)
  assert len(calls) == 3


@pytest.mark.slow  # compiles the driver's calls
def test_an_interrupted_ais_and_bdmc_continue_to_the_uninterrupted_numbers(tmp_path):
  """AIS keeps its finished batches (`on_block`) and a rerun with the same key continues
  from them to the uninterrupted figures; BDMC keeps each direction the same way."""
  from vae_jax import evaluators  # pylint: disable=g-import-not-at-top
  model, params, x, _ = _linear_gaussian(n=6)
  common = dict(num_chains=4, num_intermediate=10, batch_size=2, progress=False)
  whole = ais.log_likelihood(model.parts, params, x, jax.random.key(0), **common)
  kept = []
  with pytest.raises(engine.EvaluationStopped, match="the finished blocks are kept"):
    ais.log_likelihood(model.parts, params, x, jax.random.key(0), on_block=kept.append,
                       stop=lambda: len(kept) >= 2, **common)
  assert kept[-1]["done"] == 4
  resumed = ais.log_likelihood(model.parts, params, x, jax.random.key(0), resume=kept[-1],
                               **common)
  for name in ("log_px", "mc_stderr", "data_stderr", "acceptance"):
    assert resumed[name] == pytest.approx(whole[name], rel=1e-9), name
  store = evaluators.Kept(tmp_path / "partial.json", {})
  args = dict(num_examples=4, dim=3, **common)
  whole = ais.bdmc(model.parts, params, jax.random.key(1), **args)
  blocks = []
  stop = lambda: blocks.count("upper") >= 1  # after the reverse chain's first batch
  on_block = store.on_block
  store.on_block = lambda name: lambda b: (blocks.append(name), on_block(name)(b))
  with pytest.raises(engine.EvaluationStopped, match="BDMC reverse: stopped after 2 of 4"):
    ais.bdmc(model.parts, params, jax.random.key(1), stop=stop, keep=store, **args)
  again = evaluators.Kept(tmp_path / "partial.json", {})
  # One chain has no spread to estimate an error from: NaN, not 0.
  one = ais.log_likelihood(model.parts, params, x[:2], jax.random.key(0),
                           **{**common, "num_chains": 1})
  assert np.isnan(one["mc_stderr"]) and np.isfinite(one["log_px"])
  figures = lambda r: (r["lower"]["log_px"], r["upper"]["log_px"], r["upper"]["mc_stderr"])
  assert again.result("lower")["log_px"] == whole["lower"]["log_px"]
  assert again.resume("upper")["done"] == 2
  assert figures(ais.bdmc(model.parts, params, jax.random.key(1), keep=again, **args)) == (
      pytest.approx(figures(whole), rel=1e-9))


def test_the_jackknife_error_is_the_leave_one_out_spread():
  """`log_mean_exp_and_stderr` against the jackknife written out in float64, also where
  one weight dominates (its leave-one-out sum is taken afresh, not by subtraction)."""
  rng = np.random.default_rng(0)
  for log_w in (rng.normal(size=(3, 16)) * 2, np.array([[30.0] + [0.0] * 7])):
    lme, se = jax.jit(ais.log_mean_exp_and_stderr)(jnp.asarray(log_w, jnp.float32))
    c = log_w.shape[-1]
    loo = np.stack([np.logaddexp.reduce(np.delete(log_w, i, -1), -1) - np.log(c - 1)
                    for i in range(c)], -1)
    want = np.sqrt((c - 1) / c * np.sum((loo - loo.mean(-1, keepdims=True)) ** 2, -1))
    np.testing.assert_allclose(lme, np.logaddexp.reduce(log_w, -1) - np.log(c), rtol=1e-6)
    np.testing.assert_allclose(se, want, rtol=1e-4)
  assert np.isnan(ais.log_mean_exp_and_stderr(jnp.zeros((2, 1)))[1]).all()


@functools.lru_cache(maxsize=None)
def _keys_of_ais(num_intermediate: int, num_keys: int):
  """Forward AIS from the prior (16 chains, the default step-size pilot) of 4 examples of a
  linear-Gaussian VAE (data 12, latent 4) under `num_keys` keys: (estimate - exact
  log p(x) `[keys, 4]`, reported standard errors `[keys, 4]`)."""
  model, params, x, log_px = helpers.linear_gaussian_problem(input_dim=12, latent_dim=4, n=4)

  def one(key):
    enc, dec, prior = model.parts(params)
    return ais.ais(enc, dec, x, key, prior=prior, num_chains=16,
                   num_intermediate=num_intermediate)
  r = jax.device_get(jax.jit(lambda keys: jax.lax.map(one, keys))(
      jax.random.split(jax.random.key(11), num_keys)))
  return np.asarray(r.log_px, np.float64) - log_px, np.asarray(r.stderr, np.float64)


@pytest.mark.slow  # 80 keys x 1,000 moves
def test_ais_is_unbiased_in_p_of_x_with_its_default_step_sizes():
  """E[exp(estimate)] = p(x), so the mean of estimate - log p(x) is at most 0 (Jensen):
  over 80 keys it must not sit above 0 by more than 3 standard errors. Step sizes
  adapted on the estimate's own chains put it 0.04 nats above (z ~ 7 here); the
  pilot's frozen step sizes do not."""
  d, _ = _keys_of_ais(1000, 80)
  per_key = d.mean(1)
  se = per_key.std(ddof=1) / np.sqrt(len(per_key))
  assert per_key.mean() < 3 * se, (per_key.mean(), se)
  assert per_key.mean() > -0.05  # and T = 1000 moves come close to log p(x)


@pytest.mark.slow  # 200 keys x 10 moves and 80 keys x 1,000 moves
@pytest.mark.parametrize("moves,keys", [(10, 200), (1000, 80)])
def test_ais_standard_error_matches_the_spread_over_keys(moves, keys):
  """The reported Monte Carlo error of the 4 examples' mean against its spread over
  keys, at a short schedule (heavy-tailed weights: the delta method read 0.46 here)
  and a long one."""
  d, se = _keys_of_ais(moves, keys)
  reported = np.mean(np.sqrt(np.sum(se ** 2, 1)) / d.shape[1])
  ratio = reported / d.mean(1).std(ddof=1)
  assert 0.6 < ratio < 1.6, ratio


@pytest.mark.slow  # the data-set driver twice
def test_ais_from_an_iaf_posterior_warns_where_its_inverse_loses_digits(caplog):
  """AIS from q needs q's density away from its draws, by the flow's inverse: at gates
  near the floor that is off by many nats, and the run says so in one line."""
  from vae_jax import flows  # pylint: disable=g-import-not-at-top
  import vae_jax  # pylint: disable=g-import-not-at-top
  flow = flows.IAF(2, (8,), context_dim=5)
  model = vae_jax.VAE(input_dim=12, latent_dim=5, hidden_sizes=(10,), flow=flow)
  params = vae_jax.init_params(model, jax.random.key(0))
  x = jnp.asarray(helpers.binary_data(jax.random.key(1), n=3, dim=12, p=0.4))
  opts = dict(num_chains=2, num_intermediate=2, start="posterior", batch_size=3,
              progress=False, target_acceptance=None)
  warned = lambda: [r for r in caplog.records if "AIS from q" in r.getMessage()]
  ais.log_likelihood(model.parts, params, x, jax.random.key(0), **opts)
  assert not warned()  # gates near 0.73: the inverse is exact to float32
  for step in params["params"]["encoder"]["flow"]:
    step["out_b"] = step["out_b"].at[5:].set(float(np.log(1e-3 / (1 - 1e-3))) - flow.gate_bias)
    step["out"] = 3.0 * step["out"]
  ais.log_likelihood(model.parts, params, x, jax.random.key(0), **opts)
  assert len(warned()) == 1 and "use --ais_start=prior" in warned()[0].getMessage()


def test_the_pilot_of_a_short_schedule_walks_enough_levels_to_adapt():
  """At T = 10 the pilot once moved 10 times and left the step size near its start
  (0.010-0.014, acceptance 1.000: the HMC moves did nothing); it walks
  `ais.PILOT_MIN_MOVES` levels, adapting faster the shorter it is, and hands each of
  the T moves its level's size."""
  assert ais.pilot_moves(10) == ais.PILOT_MIN_MOVES and ais.pilot_moves(1000) == 1000
  levels = ais.pilot_levels(10)
  np.testing.assert_allclose(ais.sigmoid_betas(ais.PILOT_MIN_MOVES, levels + 1),
                             ais.sigmoid_betas(10, np.arange(1, 11)), atol=1e-12)
  np.testing.assert_array_equal(ais.pilot_levels(1000), np.arange(1000))
  model, params, x, _ = _linear_gaussian(n=4)
  enc, dec, prior = model.parts(params)
  pilot = lambda t: np.asarray(ais.pilot(enc, dec, prior, x[:1], jax.random.key(1), t,
                                         num_chains=4, start="prior", num_leapfrog=5,
                                         step_size=0.01, target_acceptance=0.65))
  short, long = pilot(10), pilot(1000)
  assert short.shape == (10,) and 0.1 < short[-1] < 10 * long[-1], (short, long[-1])
  assert ais.adapt_rate(10) == 10 * ais.adapt_rate(1000) == 1.0
  r = _with_parts(model, ais.ais, params, x, jax.random.key(0),
                  (("num_chains", 8), ("num_intermediate", 10), ("num_leapfrog", 5)))
  assert float(np.max(np.asarray(r.acceptance))) < 0.95, r.acceptance  # the moves move
