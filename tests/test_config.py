"""A run's settings: the model each names, keys, config.json's round trip, and the
settings refused (what the settings build: test_recipe.py)."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import pytest

from vae_jax import config as C


def _shapes(model, image_shape=(28, 28, 1)):
  params = model.init(jax.random.key(0))
  return {jax.tree_util.keystr(p): a.shape for p, a in jax.tree_util.tree_leaves_with_path(params)}


def test_the_defaults_build_the_pytorch_examples_model():
  shapes = _shapes(C.RunConfig().build_model((28, 28, 1)))
  kernels = sorted(s for s in shapes.values() if len(s) == 2)
  assert kernels == sorted([(784, 400), (400, 40), (20, 400), (400, 784)])
  n = sum(math.prod(s) for s in shapes.values())
  assert n == 784 * 400 + 400 + 400 * 40 + 40 + 20 * 400 + 400 + 400 * 784 + 784


def test_two_layer_model_has_z1_of_twice_z2():
  model = C.RunConfig(model="two_layer", latent_dim=3, hidden_sizes=(16,)).build_model((4, 4, 1))

  def draw(key):
    enc, _, prior = model.parts(model.init(key))
    z = enc(jnp.zeros((2, 16))).sample(jax.random.fold_in(key, 1))
    return z, prior.log_prob(z)
  z, log_p = jax.eval_shape(draw, jax.random.key(0))  # shapes off the program, nothing run
  assert z.shape == (2, 9)  # z1 (6) and z2 (3) side by side
  assert log_p.shape == (2,)


@pytest.mark.parametrize("field,value", [("learning_rate", float("inf")),
                                         ("beta", float("nan")), ("adam_b2", float("-inf"))])
def test_non_finite_settings_are_refused(field, value):
  with pytest.raises(ValueError, match=f"{field}={value}: must be a finite number"):
    C.RunConfig(**{field: value})


def test_unknown_names_are_refused_naming_the_setting():
  with pytest.raises(ValueError, match="model='big'"):
    C.RunConfig(model="big")
  with pytest.raises(ValueError, match="compute_dtype=float8: expected one of"):
    C.RunConfig(compute_dtype="float8")
  with pytest.raises(ValueError, match=r"hidden_sizes=200,0: must be >= 1"):
    C.RunConfig(hidden_sizes=(200, 0))
  with pytest.raises(ValueError, match=r"learning_rate=0.0: must be > 0"):
    C.RunConfig(learning_rate=0.0)
  with pytest.raises(ValueError, match=r"prng=nope: expected one of \['threefry2x32', "):
    C.RunConfig(prng="nope")
  with pytest.raises(ValueError, match=r"objective=vi: expected one of \['elbo', 'iwae'\]"):
    C.RunConfig(objective="vi")
  with pytest.raises(ValueError, match=r"flow_steps=1000000000: must be <= 256"):
    C.RunConfig(posterior="iaf", flow_steps=10 ** 9)


def test_prng_names_the_generator_of_the_root_key():
  a, b = C.RunConfig(prng="threefry2x32").root_key(), C.RunConfig(prng="philox4x32").root_key()
  assert "threefry" in str(jax.random.key_impl(a)) and "philox" in str(jax.random.key_impl(b))


def test_the_run_config_is_frozen_and_round_trips_through_its_dict():
  config = C.RunConfig(hidden_sizes=(200, 200), latent_dim=50)
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.latent_dim = 3
  saved = dataclasses.asdict(config)
  assert C.RunConfig(**{**saved, "hidden_sizes": tuple(saved["hidden_sizes"])}) == config


def _config_json(tmp_path, **changes):
  saved = {**dataclasses.asdict(C.RunConfig()),
           "data": {"train_examples": 100, "test_examples": 10, "input_dim": 4,
                    "image_shape": [2, 2, 1]}}
  for name, value in changes.items():
    if value is _DROP:
      saved.pop(name)
    else:
      saved[name] = value
  path = tmp_path / "config.json"
  path.write_text(json.dumps(saved))
  return path


_DROP = object()


@pytest.mark.parametrize("field,value,message", [
    ("latent_dim", "8", 'latent_dim="8": must be an integer'),
    ("seed", 0.5, "seed=0.5: must be an integer"),
    ("hidden_sizes", 64, "hidden_sizes=64: must be a list of integers"),
    ("learning_rate", "0.001", 'learning_rate="0.001": must be a number'),
    ("epochs", "ten", 'epochs="ten": must be an integer'),
    ("epochs", 0, "epochs=0: must be >= 1"),
    ("skip_nonfinite", 1, "skip_nonfinite=1: must be a boolean"),
    ("model", 123, "model=123: must be a string"),
    ("model", None, "model=null: must be a string"),
    ("model", "os:", "model='os:': expected one of"),
    ("colour", "red", "unknown setting 'colour'"),
])
def test_a_config_json_is_checked_field_by_field(tmp_path, field, value, message):
  path = _config_json(tmp_path, **{field: value})
  with pytest.raises(ValueError) as e:
    C.read_run_config(path)
  assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)
  assert "\n" not in str(e.value)


def test_a_config_json_reads_back_its_settings_and_names_the_defaults_for_missing_ones(
    tmp_path, caplog):
  with caplog.at_level("WARNING"):
    config, sizes = C.read_run_config(_config_json(tmp_path, latent_dim=7, hidden_sizes=[9, 8],
                                                   beta=1, compute_dtype=_DROP))
  assert config == C.RunConfig(latent_dim=7, hidden_sizes=(9, 8), beta=1.0)
  assert [r.getMessage() for r in caplog.records] == [
      f"{tmp_path / 'config.json'} does not say compute_dtype; reading "
      f"compute_dtype='float32', today's default, which the run may not have used"]
  assert sizes["image_shape"] == [2, 2, 1] and isinstance(config.beta, float)
  with pytest.raises(ValueError, match="needs train_examples"):
    C.read_run_config(_config_json(tmp_path, data={"image_shape": [2, 2, 1]}))


def _returns_42(config, image_shape):  # pylint: disable=unused-argument
  return 42


@pytest.mark.parametrize("name,message", [
    ("os:system", "is a built-in function, not a model builder"),
    ("json:dumps", "cannot be called as dumps(config, image_shape)"),
    ("math:pi", "is a float, not a model builder"),
    ("builtins:print", "is a built-in function, not a model builder"),
    ("collections:OrderedDict", "is a type, not a model builder"),
    ("tests.test_config:_returns_42", "returned int '42', which has no init or parts method"),
    ("nosuchmodule:build", "cannot import it (No module named 'nosuchmodule')"),
    ("math:nosuch", "cannot import it"),
    ("os.path:join", "calling it as join(config, image_shape) failed (expected str"),
])
def test_every_bad_model_builder_is_one_line_naming_model(name, message, capsys):
  with pytest.raises(ValueError) as e:
    C.RunConfig(model=name).build_model((2, 2, 1))
  assert str(e.value).startswith(f"model={name!r}: ") and message in str(e.value), str(e.value)
  assert capsys.readouterr().out == ""  # print was not handed the config to print
  for bad in (":", "a:", ":b", "a b:c", "1x:f"):
    with pytest.raises(ValueError, match="model=.*expected one of"):
      C.RunConfig(model=bad)


def test_a_run_cut_inside_its_warm_up_or_before_its_first_evaluation_is_warned():
  preset = C.RunConfig(kl_warmup_epochs=20, warmup_epochs=5, eval_every=10, epochs=1200)
  assert C.schedule_warnings(preset) == []
  cut = dataclasses.replace(preset, epochs=3)
  assert C.schedule_warnings(cut) == [
      "epochs=3 ends inside kl_warmup_epochs=20: the KL weight never reaches 1; raise epochs "
      "or lower kl_warmup_epochs",
      "epochs=3 ends inside warmup_epochs=5: the learning rate never reaches its peak; raise "
      "epochs or lower warmup_epochs",
      "epochs=3 is shorter than eval_every=10: the run is evaluated at its last epoch only"]
