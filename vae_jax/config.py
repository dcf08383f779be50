"""The settings of one training run (`RunConfig`, each declared once with its help and
bounds), their checks and their record (config.json). What they build for the runner
is `vae_jax/recipe.py`'s. Plain arguments, no flags: `experiments/cli.py` derives the
command line from these declarations.
"""

import dataclasses
import importlib
import inspect
import logging
import re
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp

from vae_jax import builders
from vae_jax import data
from vae_jax import datasets
from vae_jax import evaluators
from vae_jax import flows
from vae_jax import models
from vae_jax import objectives
from vae_jax import optimizers
from vae_jax import settings
from vae_jax import trackers
from vae_jax import workdir
from vae_jax.settings import setting

MODELS = tuple(builders.BUILDERS)
_BUILDER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # your own model: MODULE:FUNCTION
OBJECTIVES = ("elbo", "iwae")
# Runs written before images were [H, W, C] recorded only the flattened size.
LEGACY_IMAGE_SHAPES = {784: (28, 28, 1), 560: (28, 20, 1)}


@dataclasses.dataclass(frozen=True)
class RunConfig(settings.Settings):
  """The settings of one training run. Each field is one setting: its help, bounds
  and command-line name are declared here and nowhere else."""
  # The data.
  dataset: str = setting("mnist", "mnist, frey_face, npz (--data_path=FILE.npz with 'train' "
                         "and 'test' arrays), folder (--data_path=DIR of PNG/JPEG images), "
                         "tfds (--tfds_name=NAME).", choices=datasets.SOURCES, group="data")
  data_path: str = setting("", "The .npz file (--dataset=npz) or image directory "
                           "(--dataset=folder).", resumable=True, group="data")
  tfds_name: str = setting("", "A TFDS image data set with train and test splits "
                           "(--dataset=tfds), e.g. fashion_mnist.", group="data")
  image_size: int = setting(0, "Resize --dataset=folder images to this many pixels square "
                            "(0: keep their size).", lower=0, group="data")
  binarize: str = setting(
      "dynamic", "dynamic: a fresh Bernoulli draw of each pixel every time an image is used; "
      "fixed: one draw made once with a constant seed; none: grey levels (the PyTorch "
      "example's inputs, for which the Bernoulli bound is not a likelihood; colour data takes "
      "none).", choices=data.BINARIZATIONS, group="data")
  # The model.
  model: str = setting("mlp", "mlp (--hidden_sizes each side), conv (strided convs down, "
                       "transposed convs up), two_layer (Burda et al.'s two stochastic layers: "
                       "z2 of --latent_dim over z1 of twice that; its ELBO takes "
                       "--estimator=monte_carlo), or your own as MODULE:FUNCTION, a function "
                       "(config, image_shape) -> model with init(key) and parts(params).",
                       group="model")
  latent_dim: int = setting(20, "Size of z.", lower=1, group="model")
  conv_channels: tuple[int, ...] = setting((32, 64), "Conv widths going down, reversed going "
                                           "up (--model=conv); each layer halves H and W.",
                                           lower=1, nonempty=True, group="model")
  conv_hidden: int = setting(256, "Dense units between the convs and z, each side "
                             "(--model=conv).", lower=1, group="model")
  hidden_sizes: tuple[int, ...] = setting((400,), "Encoder hidden widths; the decoder mirrors "
                                          "them.", lower=1, nonempty=True, group="model")
  activation: str = setting("relu", "Hidden activation (tanh as in the paper, relu as in "
                            "PyTorch's).", choices=sorted(models.ACTIVATIONS), group="model")
  posterior: str = setting("gaussian", "q(z|x): gaussian (diagonal), planar or radial (planar "
                           "or radial flows, Rezende & Mohamed 2015) or iaf (inverse "
                           "autoregressive flow, "
                           "Kingma et al. 2016) over that Gaussian, --flow_steps steps "
                           "(--model=mlp or conv).", choices=("gaussian",) + tuple(flows.FLOWS),
                           group="model")
  flow_steps: int = setting(2, "Steps of the --posterior flow (0: the Gaussian; papers use "
                            "up to 80 planar steps).", lower=0, upper=256, group="model")
  flow_hidden: tuple[int, ...] = setting((200,), "Hidden widths of each IAF step's MADE "
                                         "network (--posterior=iaf).", lower=1, nonempty=True,
                                         group="model")
  prior: str = setting("normal", "p(z): normal (N(0, I)) or vamp (the VampPrior, Tomczak & "
                       "Welling 2018: a mixture of the posteriors of --pseudo_inputs learned "
                       "inputs; --model=mlp or conv).", choices=("normal", "vamp"), group="model")
  pseudo_inputs: int = setting(500, "Learned pseudo-inputs of the VampPrior (--prior=vamp).",
                               lower=1, group="model")
  likelihood: str = setting(
      "bernoulli", "p(x|z): bernoulli (binary data), continuous_bernoulli (grey levels, "
      "--binarize=none), gaussian, gaussian_sigmoid_mean, discretized_logistic (8-bit data, "
      "--binarize=none).", choices=sorted(models.LIKELIHOODS), group="model")
  conditional: bool = setting(
      False, "A conditional VAE: the encoder and the decoder take the label (MNIST's digit, "
      "an npz's train_labels/test_labels, a folder's class subfolders, TFDS's label), the "
      "bounds are on log p(x|y) and samples.png draws a row per class (--model=mlp or conv, "
      "--prior=normal).", group="model")
  labelled_examples: int = setting(
      0, "Semi-supervised learning (--model=m2): keep the labels of this many training "
      "images, drawn class-balanced by the seed, and hide the others' (0: keep every label).",
      lower=0, group="model")
  m1_workdir: str | None = setting(
      None, "M1+M2 (--model=m2): train on the images' latent means under the M1 run in this "
      "folder (a built-in model trained on the same images; its checkpoint is read, its "
      "config.json never runs code) instead of the images.", group="model")
  alpha: float = setting(
      0.1, "M2's classification weight: the labelled rows' mean -log q(y|x) joins the loss "
      "times alpha (Kingma et al.'s alpha divided by their N; 0.1 as in their experiments).",
      lower=0, group="objective")
  labelled_batch_size: int = setting(
      100, "Labelled rows added to each batch of --batch_size rows whose labels are hidden "
      "(--labelled_examples), cycling through the labelled ones.", lower=1, group="training")
  compute_dtype: str = setting(
      "float32", "Matmul precision: bfloat16 for mixed precision on a GPU or TPU (parameters, "
      "optimizer state, likelihoods and KLs stay float32); float32 everywhere else.",
      choices=tuple(builders.COMPUTE_DTYPES), group="model")
  # The objective.
  objective: str = setting("elbo", "Training objective: elbo (with --L, --estimator, --beta, "
                           "--kl_warmup_epochs) or iwae (the k-sample bound, --k).",
                           choices=OBJECTIVES, group="objective")
  num_samples: int = setting(1, "Monte Carlo samples of z per data point.", flag="L", lower=1,
                             group="objective")
  estimator: str = setting("analytic", "analytic: closed-form KL (B); monte_carlo: full "
                           "estimator (A).", choices=objectives.ESTIMATORS, group="objective")
  beta: float = setting(1.0, "KL weight of the ELBO objective (1: the ELBO; other values: the "
                        "beta-VAE objective).", lower=0.0, group="objective")
  kl_warmup_epochs: int = setting(0, "Epochs over which the KL weight rises linearly from 0 to "
                                  "--beta.", lower=0, group="objective")
  iwae_samples: int = setting(5, "Importance samples of the IWAE training objective "
                              "(--objective=iwae).", flag="k", lower=1, group="objective")
  iwae_gradient: str = setting("standard", "Encoder gradient of the IWAE objective: standard, "
                               "or dreg (doubly reparameterized, Tucker et al. 2019).",
                               choices=("standard", "dreg"), group="objective")
  # The optimizer and its schedule.
  batch_size: int = setting(128, "Examples per step.", lower=1, group="training")
  epochs: int = setting(10, "Epochs to train (in all, counting resumed ones).", lower=1,
                        resumable=True, group="training")
  optimizer: str = setting("adam", "adam, adagrad as in the paper, or sgd.",
                           choices=optimizers.OPTIMIZERS, group="training")
  learning_rate: float = setting(1e-3, "Step size (peak of a schedule).", above=0.0,
                                 resumable=True, group="training")
  lr_schedule: str = setting("constant", "constant; burda: Burda et al.'s 10**(-i/7) decay "
                             "over 3**i epochs; warmup_cosine: "
                             "--warmup_epochs of linear warm-up, then a cosine decay to 0 at "
                             "--epochs.", choices=optimizers.SCHEDULES, group="training")
  warmup_epochs: int = setting(0, "Linear learning-rate warm-up of "
                               "--lr_schedule=warmup_cosine.", lower=0, group="training")
  adam_b2: float = setting(0.999, "Adam's second-moment decay.", lower=0.0, upper=0.999999,
                           group="training")
  adam_eps: float = setting(1e-8, "Adam's epsilon (Burda et al. use 1e-4 with their schedule).",
                            above=0.0, group="training")
  skip_nonfinite: bool = setting(False, "Skip (and count) steps whose loss or gradient is not "
                                 "finite instead of stopping.", resumable=True, group="training")
  log_grad_norm: bool = setting(False, "Log the gradient's global norm (epoch mean; always with "
                                "--skip_nonfinite). One more pass over the gradients each step.",
                                resumable=True, group="training")
  # Keys, evaluation and checkpoints.
  seed: int = setting(0, "Root of every key: init, shuffle, binarization, z.", lower=0,
                      upper=2 ** 63 - 1, group="evaluation and checkpoints")
  seeds: int = setting(1, "Replicas trained together as one vmapped program (one device): "
                       "replica r is the run of --seed + r (its own initialisation, data order "
                       "and noise); metrics.jsonl and evaluation.json hold each replica's "
                       "figures and their mean and standard deviation.", lower=1, upper=1024,
                       group="evaluation and checkpoints")
  prng: str = setting("threefry2x32", "jax.random's generator for the root key: threefry2x32 "
                      "(JAX's default), philox4x32 (Random123's Philox: the binarization "
                      "noise twice as fast on a CPU), rbg or unsafe_rbg (XLA's RngBitGenerator; "
                      "fast on TPUs).", choices=("threefry2x32", "philox4x32", "rbg", "unsafe_rbg"),
                      group="evaluation and checkpoints")
  eval_every: int = setting(1, "Evaluate, checkpoint and log every N epochs (and at the last "
                            "one, or when stopped).", lower=1,
                            resumable=True, group="evaluation and checkpoints")
  eval_batch_size: int = setting(1000, "Test examples evaluated at once.", lower=1,
                                 group="evaluation and checkpoints")
  eval_methods: tuple[str, ...] = setting(
      ("elbo", "latent_usage"), "What each evaluation scores on the test set, by "
      "`vae_jax.evaluators` name: elbo (the test ELBO with --L and --estimator; always "
      "first), latent_usage (active units), iwae (the k-sample bound with k = --k).",
      choices=evaluators.DURING_TRAINING, unique=True, resumable=True,
      group="evaluation and checkpoints")
  keep_checkpoints: int = setting(3, "Checkpoints kept.", lower=1,
                                  resumable=True, group="evaluation and checkpoints")
  early_stopping_patience: int = setting(
      0, "Stop when --early_stopping_metric has not improved for this many evaluations "
      "(0: never); the best epoch's checkpoint is kept and named, and the same command "
      "again trains no further.", lower=0, resumable=True, group="evaluation and checkpoints")
  early_stopping_metric: str = setting(
      "test_elbo", "The metrics.jsonl figure early stopping watches (higher is better).",
      resumable=True, group="evaluation and checkpoints")
  tracker: str = setting(
      "none", "Also log the run to an experiment tracker: mlflow (MLFLOW_TRACKING_URI, else a "
      "SQLite store beside the run folders) or wandb (offline unless WANDB_MODE or "
      "WANDB_API_KEY says otherwise); each needs its extra, e.g. pip install -e \".[mlflow]\".",
      choices=trackers.TRACKERS, resumable=True, group="evaluation and checkpoints")

  def __post_init__(self):
    super().__post_init__()
    if self.model not in MODELS and not _BUILDER.fullmatch(self.model):
      raise ValueError(f"model={self.model!r}: expected one of {list(MODELS)} or "
                       f"MODULE:FUNCTION (your own model, e.g. examples.nnx_vae:build)")
    supports = lambda what: [n for n, b in builders.BUILDERS.items()
                             if getattr(b, what) and not b.semi_supervised]
    if not self.builds("flows") and (self.posterior != "gaussian" or self.prior != "normal"):
      raise ValueError(f"posterior={self.posterior!r}, prior={self.prior!r}: flows and the "
                       f"VampPrior are built for --model={' or '.join(supports('flows'))}, "
                       f"not {self.model!r}; a model of your own gives its posterior and "
                       f"prior itself")
    if self.conditional and (not self.builds("labels", mine=True) or self.prior != "normal"):
      raise ValueError(f"conditional=True with model={self.model}, prior={self.prior}: the "
                       f"conditional VAE is built for --model={' or '.join(supports('labels'))} "
                       f"with --prior=normal (or your own MODULE:FUNCTION); drop --conditional "
                       f"or change those")

    if self.labelled_examples and not self.builds("semi_supervised"):
      semi = [n for n, b in builders.BUILDERS.items() if b.semi_supervised]
      raise ValueError(f"labelled_examples={self.labelled_examples}: hides labels, which "
                       f"model={self.model} cannot learn without; use --model="
                       f"{' or '.join(semi)}")
    if self.m1_workdir and not self.builds("semi_supervised"):
      raise ValueError(f"m1_workdir={self.m1_workdir}: M1+M2 trains M2 on M1's latent means; "
                       f"use --model=m2")
    if self.early_stopping_patience >= self.keep_checkpoints:
      raise ValueError(f"early_stopping_patience={self.early_stopping_patience} with "
                       f"keep_checkpoints={self.keep_checkpoints}: the best epoch's checkpoint "
                       f"would be deleted before the run stops; raise keep_checkpoints to "
                       f"{self.early_stopping_patience + 1}")
    if self.eval_methods[:1] != ("elbo",):
      raise ValueError(f"eval_methods={','.join(self.eval_methods)}: must start with elbo (the "
                       f"test ELBO every run records); add the others after it")

  def builds(self, what: str, mine: bool = False) -> bool:
    """Whether the built-in model `model` names declares `what` (`builders.Builder`'s
    fields); a model of your own: `mine`."""
    built_in = builders.BUILDERS.get(self.model)
    return mine if built_in is None else getattr(built_in, what)

  @property
  def labelled(self) -> bool:
    """Whether the run learns from labels: a conditional VAE, or a semi-supervised model."""
    return self.conditional or self.builds("semi_supervised")

  def has_closed_form_kl(self) -> bool:
    """Whether the model's KL(q || p) has a closed form (the analytic estimator)."""
    return (self.builds("closed_form_kl") and self.prior == "normal"
            and (self.posterior == "gaussian" or self.flow_steps == 0))

  def root_key(self) -> jax.Array:
    """The run's root key, the source of all its randomness: `seed` under jax.random's
    `prng` implementation ("threefry2x32", JAX's default; "philox4x32", Random123's
    Philox, draws the binarization noise twice as fast on a CPU)."""
    try:
      return jax.random.key(self.seed, impl=self.prng)
    except ValueError as e:  # an unknown name, or one this JAX does not have yet
      raise ValueError(f"prng={self.prng!r}: {e} (jax {jax.__version__})") from None

  def root_keys(self) -> jax.Array:
    """The root key of each replica, `[seeds]` (seed, seed + 1, ...); with seeds=1 the
    run's one root key (`root_key`), shape ()."""
    if self.seeds == 1:
      return self.root_key()
    return jnp.stack([dataclasses.replace(self, seed=self.seed + r, seeds=1).root_key()
                      for r in range(self.seeds)])

  def build_model(self, image_shape: tuple[int, ...], num_classes: int = 0):
    """The model of these settings for images of `image_shape` (H, W, C): an object
    with `init(key) -> params` and `parts(params) -> objectives.Parts`, from the
    builder `model` names: a built-in one (`builders.BUILDERS`: mlp, conv, two_layer)
    or MODULE:FUNCTION, both called as `FUNCTION(config, image_shape)`. A conditional
    run's builder is called as `FUNCTION(config, image_shape, num_classes=K)` (the data's
    classes) and its model's `parts(params, labels)` binds the labels.
    """
    image_shape = tuple(image_shape)
    built_in = builders.BUILDERS.get(self.model)
    build = built_in.build if built_in else import_builder(self.model)
    if not self.labelled:
      return _checked_model(self.model, _call_builder(self.model, build, self, image_shape))
    try:
      inspect.signature(build).bind(None, (), num_classes=1)
    except TypeError:
      raise ValueError(f"conditional=True: model={self.model}'s builder takes no num_classes; "
                       f"give it a num_classes argument and a model whose parts(params, "
                       f"labels) binds the labels") from None
    return _checked_model(self.model, _call_builder(self.model, build, self, image_shape,
                                                    num_classes=num_classes))


def import_builder(name: str) -> Callable:
  """The function "MODULE:FUNCTION" names, imported: one that takes (config,
  image_shape). Raises ValueError naming `model=` for every way it can be wrong."""
  fix = "give MODULE:FUNCTION of a function (config, image_shape) -> model, e.g. " \
        "examples.nnx_vae:build"
  if not isinstance(name, str) or not _BUILDER.fullmatch(name):
    raise ValueError(f"model={name!r}: not of the form MODULE:FUNCTION; {fix}")
  module, _, attr = name.partition(":")
  try:
    build = getattr(importlib.import_module(module), attr)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"model={name!r}: cannot import it ({e}); {fix}") from None
  if not callable(build) or inspect.isbuiltin(build) or inspect.isclass(build):
    what = "a built-in function" if inspect.isbuiltin(build) else f"a {type(build).__name__}"
    raise ValueError(f"model={name!r}: is {what}, not a model builder; {fix}")
  try:
    inspect.signature(build).bind(None, ())
  except (TypeError, ValueError) as e:
    raise ValueError(f"model={name!r}: cannot be called as {attr}(config, image_shape) "
                     f"({e}); {fix}") from None
  return build


def _call_builder(name: str, build, *args, **kwargs):
  """`build(*args, **kwargs)`; a builder of your own that is not one (`os.path:join`
  takes the arguments, then fails on their types) is one line naming `model=`."""
  try:
    return build(*args, **kwargs)
  except TypeError as e:
    if name in builders.BUILDERS:
      raise
    raise ValueError(f"model={name!r}: calling it as {name.partition(':')[2]}(config, "
                     f"image_shape) failed ({e}); give MODULE:FUNCTION of a function (config, "
                     f"image_shape) -> model, e.g. examples.nnx_vae:build") from None


def _checked_model(name: str, model):
  missing = [m for m in ("init", "parts") if not callable(getattr(model, m, None))]
  if missing:
    raise ValueError(f"model={name!r}: returned {type(model).__name__} {str(model)[:40]!r}, "
                     f"which has no {' or '.join(missing)} method; the builder must return "
                     f"a model with init(key) and parts(params)")
  try:
    hash(model)
  except TypeError:
    raise ValueError(f"model={name!r}: returned an unhashable {type(model).__name__}; the "
                     f"model must be hashable (a static argument of compiled "
                     f"evaluations), e.g. a frozen dataclass") from None
  return model


# Settings that may change when a run resumes, from their declarations; config.json
# records the epoch from which each value held (`workdir.run_record`), but for the
# number of epochs itself, which changes nothing an epoch computes.
RESUMABLE = tuple(f.name for f in settings.fields(RunConfig) if f.metadata["resumable"])
SEGMENTED = tuple(name for name in RESUMABLE if name != "epochs")


class Model(Protocol):
  """What the runner trains: any object with these two methods (hashable, since
  `parts` is a static argument of compiled evaluations)."""

  def init(self, key: jax.Array) -> Any: ...  # the initial parameters, a pytree of arrays

  def parts(self, params) -> objectives.Parts: ...  # (encoder, decoder, prior)


def resolve(config: RunConfig) -> RunConfig:
  """The settings a run actually uses: where the KL has no closed form (the two-layer
  model, a flow posterior, the VampPrior) the ELBO takes estimator A (monte_carlo),
  said once, instead of refusing the default."""
  if (config.estimator == "analytic" and ":" not in config.model
      and not config.has_closed_form_kl()):
    what = [f"model={config.model}"] if not config.builds("closed_form_kl") else []
    what += [f"posterior={config.posterior}"] if config.posterior != "gaussian" else []
    what += [f"prior={config.prior}"] if config.prior != "normal" else []
    logging.warning("%s: its KL has no closed form, so the ELBO uses estimator=monte_carlo "
                    "(estimator A)", ", ".join(what))
    return dataclasses.replace(config, estimator="monte_carlo")
  return config


def schedule_warnings(config: RunConfig) -> list[str]:
  """Settings that work but likely not as meant: a run that ends inside a warm-up
  (say, a preset's run cut short with epochs=N), or before its first evaluation."""
  out = []
  for name, what in (("kl_warmup_epochs", "the KL weight never reaches 1"),
                     ("warmup_epochs", "the learning rate never reaches its peak")):
    if getattr(config, name) > config.epochs:
      out.append(f"epochs={config.epochs} ends inside {name}={getattr(config, name)}: {what}; "
                 f"raise epochs or lower {name}")
  if config.eval_every > config.epochs:
    out.append(f"epochs={config.epochs} is shorter than eval_every={config.eval_every}: the "
               f"run is evaluated at its last epoch only")
  return out


def check_data(config: RunConfig, dataset: data.Dataset) -> None:
  """Settings that cannot work with this data set or these devices, one line each."""
  image_shape, num_train = dataset.image_shape, dataset.train.shape[0]
  if config.labelled:  # before the workdir is touched
    data.check_labels(dataset, dataset.num_classes or 1)
    data.check_classes(dataset)
  devices = jax.device_count()
  config.root_key()  # an unknown prng fails here, before the workdir is touched
  host_loop = config.builds("convolutions") and jax.default_backend() == "cpu"
  if config.seeds > 1 and (devices > 1 or host_loop):
    raise ValueError(f"seeds={config.seeds}: replicas train as one program on one device "
                     f"and not the conv model's host loop on a CPU; use seeds=1 here, or "
                     f"one device (this process sees {devices})")
  if config.batch_size > num_train:
    raise ValueError(f"batch_size={config.batch_size}: larger than the {num_train} training "
                     f"images; use at most {num_train}")
  if config.batch_size % devices:
    raise ValueError(f"batch_size={config.batch_size}: must be a multiple of the "
                     f"{devices} devices to shard over")
  if image_shape[-1] != 1 and config.binarize != "none":
    raise ValueError(f"binarize={config.binarize}: the images have {image_shape[-1]} "
                     f"channels and only grey levels are binarized; use binarize=none with "
                     f"likelihood=discretized_logistic or continuous_bernoulli")


def check_builder(config: RunConfig, named: str | None, where) -> None:
  """Refuses settings (a run's config.json at `where`) that name code the caller did
  not name: a MODULE:FUNCTION builder runs only when `named` is the same."""
  if named and named != config.model:
    raise ValueError(f"model={named}: the run in {where} was trained with "
                     f"model={config.model}; pass that, or leave model out for a built-in "
                     f"model")
  if ":" in config.model and named != config.model:
    raise ValueError(f"workdir={where}: its config.json names the model builder "
                     f"{config.model!r}, code that loading the run would import and run; if "
                     f"you trust that folder, pass model={config.model}")


def read_run_config(path) -> tuple[RunConfig, dict]:
  """A run's config.json: (its `RunConfig`, its data sizes), each field checked
  against its declaration (type, bounds, unknown names: one line naming the field).
  Nothing is imported: a MODULE:FUNCTION it names is only a string here."""
  saved = workdir.read_json(path)
  if not isinstance(saved, dict) or not isinstance(saved.get("data"), dict):
    raise ValueError(f"{path}: not a run's config.json (no \"data\" object of sizes); repair "
                     f"or delete it")
  sizes = saved.pop("data")
  segments = saved.pop("segments", [])
  if not isinstance(segments, list) or not all(
      isinstance(s, dict) and isinstance(s.get("from_epoch"), int) for s in segments):
    raise ValueError(f"{path}: segments={settings.json_repr(segments)}: must be a list of "
                     f"objects with a from_epoch; repair or delete it")
  shape = sizes.get("image_shape") or LEGACY_IMAGE_SHAPES.get(sizes.get("input_dim", 784))
  if (not isinstance(sizes.get("train_examples"), int) or not isinstance(shape, (list, tuple))
      or not all(isinstance(v, int) and v > 0 for v in shape)):
    raise ValueError(f"{path}: data={settings.json_repr(sizes)}: needs train_examples (an "
                     f"integer) and image_shape (a list of sizes); repair or delete it")
  missing = [f.name for f in dataclasses.fields(RunConfig) if f.name not in saved]
  if missing:  # a record written before a setting existed, or edited: say what stands in
    defaults = RunConfig()
    logging.warning("%s does not say %s; reading %s, today's default%s, which the run may "
                    "not have used", path, ", ".join(missing),
                    ", ".join(f"{k}={getattr(defaults, k)!r}" for k in missing),
                    "s" if len(missing) > 1 else "")
  return settings.from_dict(RunConfig, saved, str(path)), {**sizes, "image_shape": list(shape)}
