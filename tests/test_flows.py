"""Flow posteriors and the VampPrior: change of variables against `jax.jacfwd`, IAF's
triangular Jacobian and inverse, densities that integrate to one, the mixture formula,
and the objectives' identities with the new objects."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import vae_jax
from vae_jax import distributions as D
from vae_jax import estimators, flows, losses, objectives
from tests import helpers

FLOWS = {"planar": flows.Planar(3), "radial": flows.Radial(3),
         "iaf": flows.IAF(3, (16,), context_dim=4)}


def _posterior(flow, dim, seed=0, scale=1.0):
  """A FlowPosterior over `dim` entries for one example, its flow's weights scaled up by
  `scale` (and its per-example inputs) so that the maps are far from the identity; float64."""
  k = jax.random.split(jax.random.key(seed), 4)
  params = flow.init(k[0], dim)
  params = jax.tree_util.tree_map(lambda a: scale * a if a.ndim == 2 else a, params)
  context = scale * jax.random.normal(k[1], (flow.context_size(dim),), jnp.float64)
  base = D.DiagonalGaussian(0.3 * jax.random.normal(k[2], (dim,), jnp.float64),
                            0.5 * jax.random.normal(k[3], (dim,), jnp.float64))
  return flows.FlowPosterior(base, context, params, flow)


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_log_density_is_the_base_minus_the_log_jacobian_determinant(name):
  q = _posterior(FLOWS[name], 5, scale=4.0 if name == "iaf" else 0.5)  # tanh unsaturated

  @jax.jit
  def check(key):
    z, log_q = q.sample_and_log_prob(key)
    z0 = q.base.sample(key)
    jac = jax.jacfwd(lambda v: q.flow.forward(q.params, q.context, v)[0])(z0)
    log_det = jnp.linalg.slogdet(jac)[1]
    return z, log_q, q.base.log_prob(z0) - log_det, q.sample(key), log_det

  for i in range(3):
    z, log_q, expected, again, log_det = check(jax.random.key(10 + i))
    np.testing.assert_allclose(log_q, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(z, again, rtol=0, atol=0)
    assert abs(float(log_det)) > 0.01  # not volume-preserving


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_a_flow_of_zero_steps_is_the_gaussian(name):
  flow = type(FLOWS[name])(0) if name != "iaf" else flows.IAF(0, (16,), context_dim=4)
  q = _posterior(flow, 4)
  z = jnp.linspace(-2.0, 2.0, 12).reshape(3, 4)
  np.testing.assert_allclose(q.log_prob(z), q.base.log_prob(z), rtol=1e-12)
  key = jax.random.key(1)
  np.testing.assert_allclose(q.sample(key), q.base.sample(key), rtol=1e-12)
  assert flows.make(name, 0, 4) is None  # and the runner builds the plain Gaussian


def test_iaf_is_autoregressive_and_its_inverse_gives_the_carried_density():
  q = _posterior(FLOWS["iaf"], 6, scale=3.0)
  z0 = q.base.sample(jax.random.key(3))
  one = flows.IAF(1, (16,), context_dim=4)
  jac = jax.jacfwd(lambda v: one.forward(q.params[:1], q.context, v)[0])(z0)
  assert float(jnp.max(jnp.abs(jnp.triu(jac, 1)))) == 0.0  # z'_i depends on z_1..z_i only
  assert float(jnp.min(jnp.abs(jnp.tril(jac, -1))[jnp.tril_indices(6, -1)])) > 0.0
  sample_and_log_prob, log_prob = jax.jit(q.sample_and_log_prob), jax.jit(q.log_prob)
  for i in range(3):
    z, log_q = sample_and_log_prob(jax.random.key(20 + i))
    np.testing.assert_allclose(log_prob(z), log_q, rtol=1e-8)
  with pytest.raises(NotImplementedError, match="planar flow has no closed-form inverse"):
    _posterior(FLOWS["planar"], 3).log_prob(jnp.zeros(3))


def _grid(lim=7.0, n=281):
  t = jnp.linspace(-lim, lim, n)
  zz = jnp.stack(jnp.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
  return zz, (t[1] - t[0]) ** 2


def test_iaf_density_integrates_to_one_in_two_dimensions():
  q = _posterior(FLOWS["iaf"], 2, scale=2.0)
  zz, cell = _grid()
  mass = float(jnp.sum(jnp.exp(jax.jit(q.log_prob)(zz))) * cell)
  assert mass == pytest.approx(1.0, abs=2e-3)


def test_vamp_prior_is_the_mixture_of_the_encoder_posteriors_and_integrates_to_one():
  model = vae_jax.VAE(input_dim=6, latent_dim=2, hidden_sizes=(8,), pseudo_inputs=20)
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                  vae_jax.init_params(model, jax.random.key(0)))
  params["params"]["encoder"]["mlp"]["dense_1"]["kernel"] *= 6.0  # components that differ
  enc, _, prior = model.parts(params)
  u = jax.nn.sigmoid(params["params"]["pseudo_inputs"])
  q = jax.jit(enc)(u)
  assert isinstance(prior, D.MixtureOfGaussians) and q.mean.shape == (20, 2)
  zz, cell = _grid(9.0)
  log_prior = jax.jit(prior.log_prob)(zz)
  # The formula 1/K sum_k N(z; m_k, v_k), in numpy float64.
  m, v = np.asarray(q.mean), np.exp(np.asarray(q.logvar))
  comp = -0.5 * np.sum(np.log(2 * np.pi * v) + (np.asarray(zz)[:, None] - m) ** 2 / v, -1)
  np.testing.assert_allclose(log_prior, special.logsumexp(comp, -1) - np.log(20),
                             rtol=1e-10, atol=1e-10)
  assert float(jnp.sum(jnp.exp(log_prior)) * cell) == pytest.approx(1.0, abs=1e-3)
  draws = jax.jit(prior.sample, static_argnums=1)(jax.random.key(1), (20000,))
  se = np.sqrt((v.mean(0) + m.var(0)) / 20000)  # the mixture's variance over the draws
  assert np.all(np.abs(np.asarray(draws.mean(0)) - m.mean(0)) < 4 * se)


def test_mixture_density_keeps_float32_digits_next_to_a_component():
  """The matmul expansion cancels digits near a component; its largest components are
  recomputed directly, so float32 matches float64 to float32's own rounding."""
  k = jax.random.split(jax.random.key(0), 3)
  with jax.enable_x64(False):
    mix = D.MixtureOfGaussians(jnp.zeros(300), 3.0 * jax.random.normal(k[0], (300, 40)),
                               jax.random.uniform(k[1], (300, 40), minval=-7.0, maxval=0.0))
    z = mix.means[:50] + 0.01 * jax.random.normal(k[2], (50, 40))
    log_prob_and_grad = jax.jit(jax.value_and_grad(lambda v: mix.log_prob(v).sum(),
                                                   has_aux=False))
    got = np.asarray(jax.jit(mix.log_prob)(z), np.float64)
    grad = np.asarray(log_prob_and_grad(z)[1], np.float64)
  m, lv = np.asarray(mix.means, np.float64), np.asarray(mix.logvars, np.float64)
  diff = np.asarray(z, np.float64)[:, None] - m
  comp = -0.5 * np.sum(np.log(2 * np.pi) + lv + diff ** 2 * np.exp(-lv), -1) - np.log(300)
  np.testing.assert_allclose(got, special.logsumexp(comp, -1), rtol=2e-6)
  r = np.exp(comp - special.logsumexp(comp, -1, keepdims=True))
  expected_grad = -np.sum(r[..., None] * diff * np.exp(-lv), 1)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-3, atol=1e-2)


def _flow_vae(flow, pseudo_inputs=0, dim=12, latent=3):
  model = vae_jax.VAE(input_dim=dim, latent_dim=latent, hidden_sizes=(10,), activation="tanh",
                      flow=flow, pseudo_inputs=pseudo_inputs)
  params = vae_jax.init_params(model, jax.random.key(0))
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
  return model, params, jnp.asarray(helpers.binary_data(jax.random.key(1), n=4, dim=dim, p=0.4),
                                    jnp.float64)


@functools.partial(jax.jit, static_argnums=0)
def _bounds(model, params, x, key):
  """The objectives of one model on x with one key, in one compiled call."""
  enc, dec, prior = model.parts(params)
  a = vae_jax.elbo(enc, dec, x, key, prior=prior, estimator="monte_carlo")
  out = {"elbo_a": a,
         "iwae_k1": vae_jax.iwae_bound(enc, dec, x, key, prior=prior, num_samples=1),
         "log_weights": vae_jax.log_weights(enc, dec, x, key, prior=prior, num_samples=50),
         "iwae_k50": vae_jax.iwae_bound(enc, dec, x, key, prior=prior, num_samples=50,
                                        chunk_size=7),
         "surrogate_k50": vae_jax.iwae_surrogate(enc, dec, x, key, prior=prior, num_samples=50),
         "gaussian": jnp.asarray(isinstance(enc(x), D.DiagonalGaussian)),
         "score_function": estimators.score_function_surrogate(enc, dec, x, key, prior=prior,
                                                               estimator="monte_carlo")}
  return out


# The fast tier keeps planar and IAF + VampPrior; IAF alone and the VampPrior alone are slow.
@pytest.mark.parametrize("name,k", [("planar", 0), pytest.param("iaf", 0, marks=pytest.mark.slow),
                                    ("iaf", 7), pytest.param("gaussian", 7, marks=pytest.mark.slow)])
def test_old_identities_hold_with_flows_and_the_vamp_prior(name, k):
  flow = {"planar": flows.Planar(2), "iaf": flows.IAF(2, (8,), context_dim=3)}.get(name)
  model, params, x = _flow_vae(flow, k)
  got = _bounds(model, params, x, jax.random.key(5))
  np.testing.assert_allclose(got["iwae_k1"], got["elbo_a"], rtol=1e-12)
  # The chunked bound is the log-mean-exp of the vmapped weights, whatever the chunks,
  # and the training surrogate's value is the bound's.
  np.testing.assert_allclose(got["iwae_k50"], special.logsumexp(got["log_weights"], 0)
                             - np.log(50), rtol=1e-12)
  np.testing.assert_allclose(got["surrogate_k50"], got["iwae_k50"], rtol=1e-12)
  np.testing.assert_allclose(got["score_function"], got["elbo_a"], rtol=1e-10)
  assert bool(got["gaussian"]) == (name == "gaussian")  # no flow: the closed-form KL's q


def _encoder_grad(loss_fn, params, x, key):
  g = jax.grad(lambda p: loss_fn(p, x, key, 0)[0])(params)
  return jax.flatten_util.ravel_pytree(g["params"]["encoder"])[0]


@pytest.mark.slow  # 1,500 vmapped gradients per flow; DReG itself stays fast in test_losses.py
def test_dreg_agrees_with_the_standard_gradient_with_iaf_and_planar_flows():
  """DReG needs log q(z) at q's draws with q's parameters held and z's path kept:
  `log_prob_of_draw` has it for any flow, planar's too (no inverse needed)."""
  for flow in (flows.IAF(1, (8,), context_dim=3), flows.Planar(2)):
    model, params, x = _flow_vae(flow)
    n, k = 1500, 10
    keys = jax.random.split(jax.random.key(0), n)
    grads = {}
    for name in ("standard", "dreg"):
      loss = losses.iwae_loss(model.parts, num_samples=k, gradient=name)
      grads[name] = np.asarray(jax.jit(jax.vmap(lambda key, loss=loss: _encoder_grad(
          loss, params, x, key)))(keys))
    diff = grads["dreg"].mean(0) - grads["standard"].mean(0)
    se = np.sqrt(grads["dreg"].var(0) / n + grads["standard"].var(0) / n)
    assert np.all(np.abs(diff) < 4.5 * se + 1e-9), (flow, np.max(np.abs(diff) / se))
    assert grads["dreg"].var(0).sum() < grads["standard"].var(0).sum()


def _shut_iaf(gate: float, steps=3, dim=5, dtype=jnp.float32):
  """An IAF posterior over `dim` entries whose every gate sits near `gate` (its
  pre-activation's bias set so), its networks scaled up so that m depends on z."""
  flow = flows.IAF(steps, (16,), context_dim=4)
  params = flow.init(jax.random.key(0), dim)
  s = float(np.log(gate / (1.0 - gate)))
  for p in params:
    p["out_b"] = p["out_b"].at[dim:].set(s - flow.gate_bias)
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(2.0 * a if a.ndim == 2 else a, dtype),
                                  params)
  base = D.DiagonalGaussian(jnp.full(dim, 0.2, dtype), jnp.zeros(dim, dtype))
  return flows.FlowPosterior(base, jnp.ones(4, dtype), params, flow)


@pytest.mark.slow  # three float64 gradient programs of a shut IAF (the fast tier keeps its inverse)
def test_iaf_density_at_its_own_draws_is_exact_at_any_gate_with_the_inverse_derivatives():
  """At gates near the floor the inverse loses z to rounding and compounds it (float32,
  5 entries, 3 steps); `log_prob_of_draw` is the carried density there, and where the
  inverse is exact (float64, open gates) its derivatives in z and in every parameter
  are the inverse's."""
  @jax.jit  # one program for every gate: only the parameters' values differ
  def at_draws(q, keys):
    z, log_q = jax.vmap(q.sample_and_log_prob)(keys)
    by_inverse = jax.vmap(lambda k: flows.inverse_error(q, k))(keys)
    return z, jnp.max(jnp.abs(jax.vmap(q.log_prob_of_draw)(z, keys) - log_q)), jnp.max(by_inverse)

  with jax.enable_x64(False):
    for gate in (1e-2, 1e-3, flows.GATE_FLOOR):
      z, err_at_draw, err_by_inverse = at_draws(_shut_iaf(gate), jax.random.split(
          jax.random.key(1), 64))
      assert z.dtype == jnp.float32
      assert float(err_at_draw) < 1e-3, gate
      if gate <= 1e-3:  # the inverse's own error, which AIS from q checks for
        assert float(err_by_inverse) > 1.0, gate
  q, key = _shut_iaf(0.3, dtype=jnp.float64), jax.random.key(2)

  def both(params, mean, held: bool):
    qq = flows.FlowPosterior(D.DiagonalGaussian(mean, q.base.logvar), q.context, params, q.flow)
    z = qq.sample(key)
    z = jax.lax.stop_gradient(z) if held else z  # score function: q's own parameters only
    fixed = qq if held else jax.tree_util.tree_map(jax.lax.stop_gradient, qq)  # DReG: z only
    return fixed.log_prob(z), fixed.log_prob_of_draw(z, key)

  @functools.partial(jax.jit, static_argnums=2)
  def gradients(params, mean, held):
    return [jax.grad(lambda p, m, i=i: both(p, m, held)[i], argnums=(0, 1))(params, mean)
            for i in (0, 1)]

  for held in (True, False):
    by_inverse, by_draw = gradients(q.params, q.base.mean, held)
    for a, b in zip(jax.tree_util.tree_leaves(by_inverse), jax.tree_util.tree_leaves(by_draw)):
      np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-9)
    assert any(float(jnp.max(jnp.abs(a))) > 0.1 for a in jax.tree_util.tree_leaves(by_draw))


def test_iaf_inverse_is_finite_everywhere_and_holds_at_tiny_gates():
  """Far from its samples the unsolved entries of a pass once overflowed and 0 x inf
  made every entry NaN; with a step's gate pre-activations at -30 (sigmoid ~ 1e-13)
  the inverse divides by the floor, not by 1e-13, and round-trips in float32."""
  q = _posterior(FLOWS["iaf"], 2, scale=6.0)
  zz, _ = _grid(lim=40.0, n=101)
  assert bool(jnp.all(jnp.isfinite(jax.jit(q.log_prob)(zz))))
  with jax.enable_x64(False):
    flow = flows.IAF(1, (16,), context_dim=4)
    params = flow.init(jax.random.key(0), 5)
    for p in params:  # every gate shut: s = -30
      p["out_b"] = p["out_b"].at[5:].set(-30.0 - flow.gate_bias)
    base = D.DiagonalGaussian(jnp.zeros(5), jnp.zeros(5))
    q32 = flows.FlowPosterior(base, jnp.ones(4), params, flow)
    sample_and_log_prob, log_prob = jax.jit(q32.sample_and_log_prob), jax.jit(q32.log_prob)
    for i in range(3):
      z, log_q = sample_and_log_prob(jax.random.key(i))
      assert z.dtype == jnp.float32
      np.testing.assert_allclose(log_prob(z), log_q, atol=0.05)
    assert float(flow._gate(jnp.float32(-30.0))[0]) == pytest.approx(flows.GATE_FLOOR, rel=1e-3)


def test_the_radial_log_det_keeps_its_digits_near_z0_with_beta_near_minus_alpha():
  """Near z0 with beta near -alpha, 1 + beta h is nearly 0 and its float32 sum lost
  1e-2 nats; written as sums of positive terms the float32 log-det matches float64."""
  step, d = flows.RadialStep(), 3
  rng = np.random.default_rng(0)
  z0 = rng.normal(size=d).astype(np.float32)
  for b, offset in ((-12.0, 1e-4), (-9.0, 1e-3), (-3.0, 1e-2), (0.5, 0.3)):
    context = np.concatenate([z0, np.float32([0.3, b])])
    z = (z0 + offset * rng.normal(size=d)).astype(np.float32)
    _, got = step.forward_and_log_det(None, jnp.asarray(context), jnp.asarray(z))
    # The textbook formula in float64, on the same float32 inputs.
    c, x = context.astype(np.float64), z.astype(np.float64)
    alpha, s = np.log1p(np.exp(c[d])), np.log1p(np.exp(c[d + 1]))
    beta, diff = s - alpha, x - c[:d]
    sq = np.sum(diff * diff)
    r = np.sqrt(sq + 1e-12)
    h = 1.0 / (alpha + r)
    want = (d - 1) * np.log1p(beta * h) + np.log(1.0 + beta * h - beta * h * h * sq / r)
    assert abs(float(got) - want) < 1e-3, (b, offset, float(got), want)
