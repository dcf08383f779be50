"""The encoder/decoder MLPs and the presets."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import models
from vae_jax import distributions as D


def _shapes(params):
  return jax.tree_util.tree_map(lambda a: a.shape, params)["params"]


def test_pytorch_example_preset_has_its_layer_sizes():
  s = _shapes(vae_jax.init_params(vae_jax.pytorch_example(), jax.random.key(0)))
  assert s["encoder"]["mlp"]["dense_0"]["kernel"] == (784, 400)
  assert s["encoder"]["mlp"]["dense_1"]["kernel"] == (400, 40)  # mean and logvar heads
  assert s["decoder"]["mlp"]["dense_0"]["kernel"] == (20, 400)
  assert s["decoder"]["mlp"]["dense_1"]["kernel"] == (400, 784)
  n = sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(
      vae_jax.init_params(vae_jax.pytorch_example(), jax.random.key(0))))
  # pytorch/examples vae/main.py: fc1, fc21, fc22, fc3, fc4.
  assert n == (784 * 400 + 400) + 2 * (400 * 20 + 20) + (20 * 400 + 400) + (400 * 784 + 784)


def test_burda_and_frey_presets():
  s = _shapes(vae_jax.init_params(vae_jax.burda_2016(), jax.random.key(0)))
  assert [s["encoder"]["mlp"][f"dense_{i}"]["kernel"] for i in range(3)] == [
      (784, 200), (200, 200), (200, 100)]
  frey = vae_jax.kingma_welling_frey(latent_dim=2)
  s = _shapes(vae_jax.init_params(frey, jax.random.key(0)))
  assert s["decoder"]["mlp"]["dense_1"]["kernel"] == (200, 2 * 560)


def test_activation_is_applied_between_layers_only():
  model = vae_jax.VAE(input_dim=3, latent_dim=2, hidden_sizes=(5,), activation="tanh")
  params = vae_jax.init_params(model, jax.random.key(0))
  x = jnp.array([[0.3, -1.0, 2.0]])
  p = params["params"]["encoder"]["mlp"]
  h = jnp.tanh(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
  out = h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
  q = model.parts(params).encoder(x)
  np.testing.assert_allclose(jnp.concatenate([q.mean, q.logvar], -1), out, rtol=1e-5)


def test_likelihood_heads_read_the_decoder_outputs():
  x = jax.random.uniform(jax.random.key(1), (3, 6))
  z = jax.random.normal(jax.random.key(2), (3, 2))
  for name, head in vae_jax.LIKELIHOODS.items():
    model = vae_jax.VAE(input_dim=6, latent_dim=2, hidden_sizes=(4,), likelihood=head)
    params = vae_jax.init_params(model, jax.random.key(0))
    p = params["params"]["decoder"]["mlp"]
    h = jax.nn.relu(z @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
    out = (h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]).reshape(3, 6, -1)
    want = {"bernoulli": lambda: D.bernoulli_log_prob(x, out[..., 0]),
            "continuous_bernoulli": lambda: D.ContinuousBernoulli(out[..., 0]).log_prob(x),
            "gaussian": lambda: D.gaussian_log_prob(x, out[..., 0], out[..., 1]),
            "gaussian_sigmoid_mean": lambda: D.gaussian_log_prob(
                x, jax.nn.sigmoid(out[..., 0]), out[..., 1]),
            "discretized_logistic": lambda: D.DiscretizedLogistic(
                out[..., 0], jnp.maximum(out[..., 1], -7.0)).log_prob(x)}[name]()
    got = jax.jit(lambda p: model.parts(p).decoder(z).log_prob(x))(params)
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=name)


def test_gaussian_mean_is_unbounded_unless_squashed():
  z = 30 * jax.random.normal(jax.random.key(2), (50, 2))
  for squash in (False, True):
    model = vae_jax.VAE(input_dim=6, latent_dim=2, hidden_sizes=(4,),
                        likelihood=models.GaussianHead(squash_mean=squash))
    mean = model.parts(vae_jax.init_params(model, jax.random.key(0))).decoder(z).mean
    assert bool(jnp.all((mean >= 0) & (mean <= 1))) == squash


def test_bad_model_arguments():
  with pytest.raises(ValueError, match="activation='sigmoidal'"):
    vae_jax.init_params(vae_jax.VAE(activation="sigmoidal"), jax.random.key(0))
  with pytest.raises(ValueError, match="likelihood='poisson'"):
    models.likelihood_head("poisson")


def test_image_shaped_mlp_is_the_flat_mlp_on_flattened_images():
  flat = vae_jax.VAE(input_dim=12, latent_dim=2, hidden_sizes=(5,))
  images = vae_jax.VAE(input_dim=12, latent_dim=2, hidden_sizes=(5,), image_shape=(3, 4, 1))
  params = vae_jax.init_params(flat, jax.random.key(0))
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      vae_jax.init_params(images, jax.random.key(0)))
  x = (jax.random.uniform(jax.random.key(1), (7, 3, 4, 1)) < 0.5).astype(jnp.float32)
  key = jax.random.key(2)
  bound = jax.jit(lambda model, x: vae_jax.elbo(*model.parts(params)[:2], x, key,
                                                num_samples=3), static_argnums=0)
  got, want = bound(images, x), bound(flat, x.reshape(7, 12))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert vae_jax.generate(images.parts(params), key, 5).shape == (5, 3, 4, 1)


def test_conv_model_refuses_an_image_size_it_cannot_halve_twice():
  # Its shapes (the presets' conv models among them) are in test_builders.py, read off
  # the program by jax.eval_shape instead of compiling three models.
  with pytest.raises(ValueError, match="divisible by 4"):
    vae_jax.init_params(models.ConvVAE(image_shape=(30, 28, 1)), jax.random.key(0))


def _tiny_two_layer():
  model = models.TwoLayerVAE(input_dim=8, latent_dims=(3, 2), hidden_sizes=((6,), (4,)))
  params = vae_jax.init_params(model, jax.random.key(0))
  x = (jax.random.uniform(jax.random.key(1), (40, 8)) < 0.4).astype(jnp.float32)
  return model, params, x


@pytest.mark.slow  # three k x 20 keys compiled: 20 s; two_layer's maths stays fast below
def test_two_layer_iwae_with_one_sample_is_its_elbo_and_rises_with_k():
  model, params, x = _tiny_two_layer()
  enc, dec, prior = model.parts(params)
  key = jax.random.key(3)
  # Compiled (eager dispatch of every small op is most of a minute here; the
  # objectives' tests check that jit and eager agree).
  elbo = jax.jit(lambda x, key: vae_jax.elbo(*model.parts(params)[:2], x, key,
                                             prior=model.parts(params).prior,
                                             estimator="monte_carlo"))(x, key)
  iwae = jax.jit(lambda x, key, k, chunk: vae_jax.iwae_bound(
      *model.parts(params)[:2], x, key, prior=model.parts(params).prior, num_samples=k,
      chunk_size=chunk), static_argnums=(2, 3))
  np.testing.assert_allclose(iwae(x, key, 1, None), elbo, rtol=1e-6)
  # Chunking changes nothing; the bound rises with k (means over keys and examples,
  # far apart compared with their Monte Carlo error).
  np.testing.assert_allclose(iwae(x, key, 50, 7), iwae(x, key, 50, 50), rtol=1e-5)
  keys = jax.random.split(jax.random.key(4), 20)
  means = []
  for k in (1, 10, 100):
    vals = jax.jit(jax.vmap(lambda kk, k=k: vae_jax.iwae_bound(
        *model.parts(params)[:2], x, kk, prior=model.parts(params).prior, num_samples=k)))(keys)
    means.append((float(vals.mean()), float(vals.std() / np.sqrt(vals.size))))
  for (lo, se_lo), (hi, se_hi) in zip(means, means[1:]):
    assert hi - lo > 3 * np.hypot(se_lo, se_hi), means
  # The analytic estimator has no closed form to use here (refused when traced).
  with pytest.raises(NotImplementedError, match="monte_carlo"):
    jax.eval_shape(lambda x: vae_jax.elbo(enc, dec, x, key, prior=prior), x)


def test_two_level_gaussian_is_a_normalized_density_and_samples_from_it():
  """With 1-d z1 and z2, exp(log p(z1, z2)) integrates to 1 on a grid, and draws
  have the moments the density gives them."""
  model = models.TwoLayerVAE(input_dim=4, latent_dims=(1, 1), hidden_sizes=((3,), (3,)))
  params = vae_jax.init_params(model, jax.random.key(5))
  params = jax.tree_util.tree_map(lambda a: 3 * a, params)  # a non-trivial conditional
  g = jnp.linspace(-12.0, 12.0, 801)
  z = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)

  @functools.partial(jax.jit, static_argnums=0)
  def density_and_draws(which, params):
    parts = model.parts(params)
    dist = parts.prior if which == "prior" else parts.encoder(jnp.ones((4,)) * 0.5)
    return jnp.exp(dist.log_prob(z)), dist.sample(jax.random.key(0), (200_000,))
  for which in ("prior", "posterior"):
    density, draws = density_and_draws(which, params)
    mass = density.sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=1e-3)
    p = density * (g[1] - g[0]) ** 2
    for f in (lambda v: v[:, 0], lambda v: v[:, 1], lambda v: v[:, 0] * v[:, 1]):
      exact, mc = float((p * f(z)).sum()), f(draws)
      assert abs(float(mc.mean()) - exact) < 4 * float(mc.std()) / np.sqrt(len(mc)) + 1e-3


@pytest.mark.slow  # DReG itself stays fast in test_losses.py
def test_two_layer_dreg_holds_every_encoder_parameter_fixed_inside_log_q():
  """DReG's surrogate differs from the standard one only in the encoder's gradient:
  the decoder's and the prior's gradients agree exactly."""
  model, params, x = _tiny_two_layer()
  def grad(gradient):
    def loss(p):
      enc, dec, prior = model.parts(p)
      return -vae_jax.iwae_surrogate(enc, dec, x, jax.random.key(4), prior=prior,
                                     num_samples=8, gradient=gradient).mean()
    return jax.jit(jax.grad(loss))(params)["params"]
  std, dreg = grad("standard"), grad("dreg")
  for name in ("decoder", "p_z1"):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           std[name], dreg[name])
  differs = [not np.allclose(std[n]["mlp"]["dense_0"]["kernel"], dreg[n]["mlp"]["dense_0"]["kernel"])
             for n in ("q_z1", "q_z2")]
  assert all(differs)
