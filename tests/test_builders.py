"""The built-in model builders, checked on their programs, not by training: parameter
and output shapes from `jax.eval_shape`, dtypes from `jax.make_jaxpr`."""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import builders
from vae_jax import config
from vae_jax import generation
from vae_jax import models


def _shapes(model, image_shape, batch=(3,)):
  """(parameter shapes, encoder mean shape, decoder log_prob shape), nothing compiled;
  the images `[*batch, H, W, C]` (any leading axes). Also checks that generating draws
  images of `image_shape`."""
  params = jax.eval_shape(model.init, jax.random.key(0))
  x = jax.ShapeDtypeStruct(tuple(batch) + tuple(image_shape), jnp.float32)

  def run(params, x):
    parts = model.parts(params)
    mean = parts.encoder(x).mean
    return mean, parts.decoder(mean).log_prob(x), generation.generate(parts, jax.random.key(2), 4)
  mean, log_prob, generated = jax.eval_shape(run, params, x)
  assert generated.shape == (4,) + tuple(image_shape)
  return params, mean.shape, log_prob.shape


def test_every_builder_takes_the_signature_of_your_own():
  for name, builder in builders.BUILDERS.items():
    inspect.signature(builder.build).bind(config.RunConfig(), (28, 28, 1))
    classes = {"num_classes": 3} if builder.semi_supervised else {}  # it learns from labels
    model = builder.build(config.RunConfig(model=name, latent_dim=3, estimator="monte_carlo"),
                          (8, 8, 1), **classes)
    assert callable(model.init) and callable(model.parts) and hash(model) is not None
    if builder.labels:  # a conditional model: called with the classes
      inspect.signature(builder.build).bind(config.RunConfig(), (28, 28, 1), num_classes=10)


def test_the_checks_read_what_each_builder_declares_not_its_name(monkeypatch):
  """A built-in declared without flows, labels or a closed-form KL is refused flows and
  --conditional, and its ELBO takes estimator A, whatever its name; the messages name
  the models that do support each."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  plain = builders.Builder(builders.mlp, flows=False, labels=False, closed_form_kl=False,
                           convolutions=False)
  monkeypatch.setitem(builders.BUILDERS, "mlp", plain)
  with pytest.raises(ValueError, match=r"flows and the VampPrior are built for --model=conv, "
                                       r"not 'mlp'"):
    config.RunConfig(posterior="iaf")
  with pytest.raises(ValueError, match=r"the conditional VAE is built for --model=conv with"):
    config.RunConfig(conditional=True)
  assert not config.RunConfig().has_closed_form_kl()
  assert config.resolve(config.RunConfig()).estimator == "monte_carlo"
  assert config.RunConfig(model="conv").has_closed_form_kl()
  mine = config.RunConfig(model="examples.nnx_vae:build", conditional=True)  # your own: allowed
  assert mine.builds("labels", mine=True) and not mine.builds("flows")
  assert dataclasses.replace(mine, conditional=False).estimator == "analytic"


@pytest.mark.parametrize("image_shape,channels", [((28, 28, 1), (32, 64)), ((32, 32, 3), (8, 16)),
                                                  ((28, 20, 1), (4, 8))])
def test_conv_shapes_down_and_up(image_shape, channels):
  run = config.RunConfig(model="conv", conv_channels=channels, conv_hidden=16, latent_dim=5)
  params, mean, log_prob = _shapes(builders.conv(run, image_shape), image_shape)
  assert mean == (3, 5) and log_prob == (3,)
  kernels = [a.shape for a in jax.tree_util.tree_leaves(params) if len(a.shape) == 4]
  assert (image_shape[-1], channels[0]) in {k[-2:] for k in kernels}  # the first conv's
  assert len(kernels) == 2 * len(channels)  # down, and up again


def test_the_presets_conv_models_take_any_leading_axes():
  import vae_jax  # pylint: disable=g-import-not-at-top
  for module, shape in ((vae_jax.conv_mnist(), (28, 28, 1)), (vae_jax.conv_32x32x3(), (32, 32, 3)),
                        (models.ConvVAE(image_shape=(28, 20, 1)), (28, 20, 1))):
    _, mean, log_prob = _shapes(models.LinenModel(module), shape, batch=(2, 3))
    assert mean == (2, 3, module.latent_dim) and log_prob == (2, 3)


def test_mlp_and_two_layer_sizes():
  run = config.RunConfig(hidden_sizes=(64, 32), latent_dim=6)
  params, mean, log_prob = _shapes(builders.mlp(run, (4, 5, 1)), (4, 5, 1))
  assert mean == (3, 6) and log_prob == (3,)
  assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params)) == (
      (20 * 64 + 64) + (64 * 32 + 32) + (32 * 12 + 12)  # encoder
      + (6 * 32 + 32) + (32 * 64 + 64) + (64 * 20 + 20))  # decoder
  two = builders.two_layer(dataclasses.replace(run, model="two_layer",
                                               estimator="monte_carlo"), (4, 5, 1))
  assert two.module.latent_dims == (12, 6)


def test_bfloat16_runs_the_matmuls_in_bfloat16_and_keeps_the_bound_float32():
  run = config.RunConfig(compute_dtype="bfloat16", hidden_sizes=(16,), latent_dim=2)
  model = builders.mlp(run, (2, 4, 1))
  params = jax.eval_shape(model.init, jax.random.key(0))
  assert {a.dtype for a in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
  x = jnp.zeros((3, 2, 4, 1))

  def log_prob(params):
    enc, dec, _ = model.parts(params)
    return dec(enc(x).mean).log_prob(x)
  params = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), params)
  jaxpr = jax.make_jaxpr(log_prob)(params)
  dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
  assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
  assert jaxpr.out_avals[0].dtype == jnp.float32
