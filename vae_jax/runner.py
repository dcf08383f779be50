"""A whole training run: data on the device, compiled epochs, evaluation,
checkpoints, metrics, TensorBoard summaries and pictures in one workdir.

The experiments in `experiments/` parse their flags into a `RunConfig` and call
`train_and_evaluate`; nothing here reads flags.
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import pathlib
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import checkpoint as checkpoint_lib
from vae_jax import data as data_lib
from vae_jax import evaluate
from vae_jax import distributions
from vae_jax import generation
from vae_jax import losses
from vae_jax import models
from vae_jax import plots
from vae_jax import train
from vae_jax import workdir as workdir_lib

# Settings that may change when a run resumes (train longer, lower the step size);
# every other one must match.
_RESUMABLE = ("epochs", "keep_checkpoints", "skip_nonfinite", "learning_rate", "eval_every",
              "data_path", "log_grad_norm")
MODELS = ("mlp", "conv", "two_layer")
# Mixed precision: matmuls in bfloat16, parameters, optimizer state, likelihoods and KLs float32.
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
# Runs written before images were [H, W, C] recorded only the flattened size.
_LEGACY_IMAGE_SHAPES = {784: (28, 28, 1), 560: (28, 20, 1)}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The settings of one training run (the experiments' flags, parsed)."""
  dataset: str = "mnist"
  data_path: str = ""
  tfds_name: str = ""
  image_size: int = 0
  model: str = "mlp"
  compute_dtype: str = "float32"
  latent_dim: int = 20
  hidden_sizes: tuple[int, ...] = (400,)
  activation: str = "relu"
  likelihood: str = "bernoulli"
  objective: str = "elbo"
  num_samples: int = 1
  estimator: str = "analytic"
  beta: float = 1.0
  kl_warmup_epochs: int = 0
  iwae_samples: int = 5
  iwae_gradient: str = "standard"
  batch_size: int = 128
  epochs: int = 10
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  lr_schedule: str = "constant"
  warmup_epochs: int = 0
  adam_b2: float = 0.999
  binarize: str = "dynamic"
  seed: int = 0
  eval_batch_size: int = 1000
  keep_checkpoints: int = 3
  skip_nonfinite: bool = False
  eval_every: int = 1
  log_grad_norm: bool = False

  def build_model(self, image_shape: tuple[int, ...]):
    """The model of these settings for images of `image_shape` (H, W, C).

    mlp: `hidden_sizes` each side. conv: `models.ConvVAE`. two_layer: Burda et
    al.'s two stochastic layers, z2 of `latent_dim` on top of z1 of twice that,
    `hidden_sizes` between x and z1 and two layers of 2 * latent_dim between z1 and z2.
    """
    head = models.likelihood_head(self.likelihood)
    image_shape = tuple(image_shape)
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(f"compute_dtype={self.compute_dtype!r}: expected one of "
                       f"{list(COMPUTE_DTYPES)}")
    dtype = COMPUTE_DTYPES[self.compute_dtype]
    if self.model == "mlp":
      return models.VAE(input_dim=math.prod(image_shape), latent_dim=self.latent_dim,
                        hidden_sizes=tuple(self.hidden_sizes), activation=self.activation,
                        likelihood=head, image_shape=image_shape, dtype=dtype)
    if self.model == "conv":
      return models.ConvVAE(image_shape=image_shape, latent_dim=self.latent_dim, likelihood=head,
                            dtype=dtype)
    if self.model == "two_layer":
      d = self.latent_dim
      return models.TwoLayerVAE(input_dim=math.prod(image_shape), latent_dims=(2 * d, d),
                                hidden_sizes=(tuple(self.hidden_sizes), (2 * d, 2 * d)),
                                activation=self.activation, likelihood=head,
                                image_shape=image_shape, dtype=dtype)
    raise ValueError(f"model={self.model!r}: expected one of {list(MODELS)}")


OBJECTIVES = ("elbo", "iwae")


def make_optimizer(config: RunConfig, num_train: int):
  return train.make_optimizer(config.optimizer, config.learning_rate,
                              schedule=config.lr_schedule,
                              steps_per_epoch=num_train // config.batch_size,
                              epochs=config.epochs, warmup_epochs=config.warmup_epochs,
                              b2=config.adam_b2)


def make_loss(config: RunConfig, model: models.VAE, num_train: int):
  """The training loss of `config`: the (beta-weighted, warmed-up) ELBO or the IWAE bound."""
  if config.objective == "iwae":
    return losses.iwae_loss(model.parts, num_samples=config.iwae_samples,
                            gradient=config.iwae_gradient)
  if config.objective != "elbo":
    raise ValueError(f"objective={config.objective!r}: expected one of {list(OBJECTIVES)}")
  if not config.beta >= 0:
    raise ValueError(f"beta={config.beta}: must be >= 0")
  warmup = losses.kl_warmup(config.kl_warmup_epochs * (num_train // config.batch_size))
  beta = lambda step: config.beta * warmup(step)
  return losses.elbo_loss(model.parts, num_samples=config.num_samples,
                          estimator=config.estimator, beta=beta)


def initial_state(config: RunConfig, model: models.VAE, optimizer, root) -> train.TrainState:
  return train.init_state(models.init_params(model, train.init_key(root)), optimizer)


class NonFiniteError(RuntimeError):
  """Training produced a non-finite loss or gradient."""


def _prepare_workdir(workdir: pathlib.Path, config: RunConfig, data_sizes: dict,
                     fresh: bool) -> None:
  """Checks the workdir against `config` (every process); process 0 alone deletes
  (`fresh`), and the others wait for it. config.json is written later, once a
  resumed state has been accepted (`_write_config`)."""
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"--workdir={workdir}: is a file, not a directory; pass a directory path")
  primary = jax.process_index() == 0
  if primary:
    workdir.mkdir(parents=True, exist_ok=True)
  config_path = workdir / "config.json"
  if fresh and primary:
    for name in ("checkpoints", "tensorboard", "metrics.jsonl", "config.json"):
      p = workdir / name
      if p.exists():
        logging.warning("--fresh: removing %s", p)
        shutil.rmtree(p) if p.is_dir() else p.unlink()
  elif not fresh and config_path.exists() and not _has_checkpoint(workdir):
    # A run that saved nothing (it failed or was stopped before its first
    # checkpoint) has nothing to protect: these settings replace its config.
    logging.warning("%s: its run saved no checkpoint; starting this one there", workdir)
  elif not fresh and config_path.exists():
    old = _read_json(config_path)
    new = json.loads(json.dumps({**dataclasses.asdict(config), "data": data_sizes}))
    # A setting added since that run was written has its default there.
    defaults = json.loads(json.dumps(dataclasses.asdict(RunConfig())))
    # Data sizes recorded by older versions lack some keys: compare those present.
    old["data"] = {**new["data"], **old.get("data", {})}
    diff = [f"{k}: {old.get(k, defaults.get(k))!r} there, {new[k]!r} now" for k in new
            if k not in _RESUMABLE and old.get(k, defaults.get(k)) != new[k]]
    if diff:
      raise ValueError(f"--workdir={workdir} holds a run with other settings ({'; '.join(diff)}); "
                       f"use another --workdir, or --fresh to replace that run")
  _barrier("vae_jax: workdir prepared")


def _has_checkpoint(workdir: pathlib.Path) -> bool:
  directory = workdir / "checkpoints"
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def _write_config(workdir: pathlib.Path, config: RunConfig, data_sizes: dict) -> None:
  if jax.process_index() == 0:
    workdir_lib.write_atomic(workdir / "config.json",
                  json.dumps({**dataclasses.asdict(config), "data": data_sizes}, indent=2) + "\n")


def _read_json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e}); repair or delete it (deleting config.json "
                     f"lets the same command resume from the checkpoints)") from None


def _barrier(name: str) -> None:
  """Waits for every process (nothing to wait for with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _check_disk_space(workdir: pathlib.Path, abstract_state) -> None:
  """Refuses to start when the workdir's disk cannot hold two checkpoints."""
  probe = workdir if workdir.exists() else next(p for p in workdir.parents if p.exists())
  need = 2 * checkpoint_lib.state_bytes(abstract_state) + (1 << 20)
  free = shutil.disk_usage(probe).free
  if free < need:
    raise ValueError(f"--workdir={workdir}: {free / 1e6:.1f} MB free on its disk, but "
                     f"checkpoints of this model need about {need / 1e6:.1f} MB; free some "
                     f"space or pass another --workdir")


def model_inputs(dataset: data_lib.Dataset, binarize: str):
  """(train images as stored on the device, test set as float32 model inputs)."""
  if binarize not in data_lib.BINARIZATIONS:
    raise ValueError(f"--binarize={binarize}: expected one of {list(data_lib.BINARIZATIONS)}")
  train_images, test_images = dataset.train, dataset.test
  if binarize in ("dynamic", "fixed") and dataset.train.dtype == np.uint8:
    # The test set is binarized once, so every epoch and run is scored on the same data.
    test_images = data_lib.fixed_binarization(test_images, stream=1)
    if binarize == "fixed":
      train_images = data_lib.fixed_binarization(train_images, stream=0)
  return train_images, data_lib.to_unit_interval(jnp.asarray(test_images))


def _pictures(workdir, model, params, test_x, labels, image_shape, key, writer, step,
              write_png: bool) -> None:
  parts = model.parts(params)
  recon = generation.reconstruct(parts, test_x[:64])
  grid = plots.reconstruction_grid(np.asarray(test_x[:64]), np.asarray(recon), image_shape, 16)
  samples = plots.tile(np.asarray(generation.generate(parts, key, 64)), image_shape, 8)
  grids = {"reconstructions": grid, "samples": samples}
  if isinstance(parts.prior, distributions.StandardNormal) and parts.prior.dim == 2:
    z = jnp.asarray(plots.manifold_latents(20))
    grids["manifold"] = plots.tile(np.asarray(generation.decode(parts, z)), image_shape, 20)
  for name, g in grids.items():
    writer.add_image(name, g, step, dataformats="HW" if g.ndim == 2 else "HWC")
  if not write_png:
    return
  titles = {"reconstructions": "test images (odd rows) and reconstructions (even rows)",
            "samples": "decoded z ~ N(0, I)", "manifold": "decoded grid of z (inverse normal CDF)"}
  for name, g in grids.items():
    plots.save_grid(workdir / f"{name}.png", g, titles[name])
  if "manifold" in grids:
    means = np.asarray(evaluate.encoder_means(model.parts, params, test_x))
    plots.save_latent_scatter(workdir / "latent_means.png", means, labels,
                              "test set: encoder means")


def load_run(workdir, epoch: int | None = None):
  """A finished or running run's (RunConfig, model, TrainState, epoch) from its workdir."""
  workdir = pathlib.Path(workdir)
  if not (workdir / "config.json").is_file():
    raise ValueError(f"--workdir={workdir}: no config.json there; pass the workdir of a "
                     f"training run")
  saved = _read_json(workdir / "config.json")
  sizes = saved.pop("data")
  saved["hidden_sizes"] = tuple(saved["hidden_sizes"])
  config = RunConfig(**saved)
  image_shape = sizes.get("image_shape") or _LEGACY_IMAGE_SHAPES[sizes.get("input_dim", 784)]
  model = config.build_model(tuple(image_shape))
  optimizer = make_optimizer(config, sizes["train_examples"])
  root = jax.random.key(config.seed)
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints")
  try:
    if ckpt.latest_epoch() is None:
      raise ValueError(f"--workdir={workdir}: holds no checkpoint yet")
    template = initial_state(config, model, optimizer, root)
    if jax.process_count() > 1:  # several processes restore global arrays together
      template = train.replicate(template, train.data_mesh())
    epoch, state = ckpt.restore(template, root, epoch)
  finally:
    ckpt.close()
  return config, model, state, epoch


def train_and_evaluate(config: RunConfig, dataset: data_lib.Dataset, workdir,
                       *, fresh: bool = False) -> dict[str, Any]:
  """Trains `config` on `dataset`, writing everything into `workdir`; returns the last metrics.

  A workdir that holds a checkpoint of the same configuration resumes from its
  latest epoch (`fresh=True` deletes it first). Each epoch appends a line to
  metrics.jsonl and writes TensorBoard scalars and image grids; a checkpoint is
  written each epoch, the last `keep_checkpoints` kept; PNGs land at the end.

  Raises:
    ValueError: an inconsistent configuration or workdir (the message names the flag).
    NonFiniteError: a non-finite loss or gradient (unless `skip_nonfinite`); the
      last good checkpoint is kept.
  """
  workdir = pathlib.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"--workdir={workdir}: is a file, not a directory; pass a directory path")
  devices = jax.device_count()
  n_train = dataset.train.shape[0]
  if config.batch_size > n_train:
    raise ValueError(f"--batch_size={config.batch_size}: larger than the {n_train} training "
                     f"images; use at most {n_train}")
  if config.batch_size % devices:
    raise ValueError(f"--batch_size={config.batch_size}: must be a multiple of the "
                     f"{devices} devices to shard over")
  if dataset.image_shape[-1] != 1 and config.binarize != "none":
    raise ValueError(f"--binarize={config.binarize}: the images have {dataset.image_shape[-1]} "
                     f"channels and only grey levels are binarized; use --binarize=none with "
                     f"--likelihood=discretized_logistic or continuous_bernoulli")
  if config.model == "two_layer" and config.estimator == "analytic":
    raise ValueError("--estimator=analytic: the two-layer model's KL has no closed form; use "
                     "--estimator=monte_carlo")
  model = config.build_model(dataset.image_shape)
  optimizer = make_optimizer(config, n_train)
  train_images, test_x = model_inputs(dataset, config.binarize)
  _check_disk_space(workdir, jax.eval_shape(
      lambda k: initial_state(config, model, optimizer, k), jax.random.key(0)))
  # One run per workdir: process 0 holds the lock (on a shared file system the
  # others reach the workdir through it).
  with workdir_lib.Lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    sizes = {"train_examples": n_train, "test_examples": int(dataset.test.shape[0]),
             "input_dim": int(math.prod(dataset.image_shape)),
             "image_shape": list(dataset.image_shape)}
    _prepare_workdir(workdir, config, sizes, fresh)
    return _train(config, dataset, workdir, model, optimizer, train_images, test_x, sizes)


def _train(config, dataset, workdir, model, optimizer, train_images, test_x,
           sizes) -> dict[str, Any]:
  """The epochs of `train_and_evaluate`, once the workdir is locked and checked."""
  n_train = dataset.train.shape[0]
  mesh = train.data_mesh()
  root = jax.random.key(config.seed)
  state = train.replicate(initial_state(config, model, optimizer, root), mesh)
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
  start = 0
  if ckpt.latest_epoch() is not None:
    start, state = ckpt.restore(state, root)
    logging.info("Resuming from the checkpoint of epoch %d in %s", start, ckpt.directory)
  # Only now, with the state accepted, does the workdir take this run's settings.
  _write_config(workdir, config, sizes)
  out = _Outputs(workdir, start)
  epoch_fn = train.make_train_epoch(
      make_loss(config, model, n_train), optimizer, binarize=config.binarize,
      skip_nonfinite=config.skip_nonfinite, mesh=mesh,
      grad_norm=config.log_grad_norm or config.skip_nonfinite,
      host_loop=(config.model == "conv" and jax.default_backend() == "cpu"
                 and jax.process_count() == 1))
  steps_per_epoch = n_train // config.batch_size
  record, times = {}, []
  loop_start = time.perf_counter()
  try:
    with workdir_lib.StopRequest() as stop:
      batches = train.epoch_batches(train_images, root, start, config.batch_size, mesh)
      if start < config.epochs:
        epoch_fn = _compile_within_memory(epoch_fn, state, batches, root, config)
      for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        state, m = epoch_fn(state, batches, root)
        if epoch + 1 < config.epochs:  # the host gathers the next epoch while this one runs
          batches = train.epoch_batches(train_images, root, epoch + 1, config.batch_size, mesh)
        m = jax.device_get(m)  # the one host sync of the epoch
        seconds = time.perf_counter() - t0
        times.append(seconds)
        if m["nonfinite_steps"] and not config.skip_nonfinite:
          raise NonFiniteError(
              f"non-finite loss or gradient at step {int(m['first_nonfinite_step'])} (epoch "
              f"{epoch + 1}); stopped without saving: the checkpoint of epoch "
              f"{ckpt.latest_epoch()} is the last good one. Lower --learning_rate, or pass "
              f"--skip_nonfinite to skip such steps")
        if m["nonfinite_steps"] == steps_per_epoch:
          raise NonFiniteError(
              f"every one of the {steps_per_epoch} steps of epoch {epoch + 1} had a non-finite "
              f"loss or gradient and was skipped; stopped without saving: the checkpoint of "
              f"epoch {ckpt.latest_epoch()} is the last good one. Lower --learning_rate")
        if m["nonfinite_steps"]:
          logging.warning("epoch %d: skipped %d of %d steps (non-finite loss or gradient)",
                          epoch + 1, int(m["nonfinite_steps"]), steps_per_epoch)
        last = epoch + 1 == config.epochs
        stopping = any_process(stop.signal is not None)
        if (epoch + 1) % config.eval_every and not last and not stopping:
          continue  # evaluation, checkpoint and pictures every eval_every epochs
        params = train.local_copy(state.params)
        test = evaluate.elbo_means(
            model.parts, params, test_x, train.eval_key(root), num_samples=config.num_samples,
            estimator=config.estimator, batch_size=config.eval_batch_size)
        ckpt.save(epoch + 1, state, root)
        record = {"epoch": epoch + 1, "step": int(train.local_copy(state.step)),
                  **{f"train_{k}": float(v) for k, v in m.items()
                     if k not in ("grad_norm", "nonfinite_steps", "first_nonfinite_step")},
                  "test_elbo": test["elbo"], "test_reconstruction": test["reconstruction"],
                  "test_kl": test["kl"],
                  **({"grad_norm": float(m["grad_norm"])} if "grad_norm" in m else {}),
                  "skipped_steps": int(m["nonfinite_steps"]),
                  "examples_per_s": steps_per_epoch * config.batch_size / seconds,
                  "epoch_s": seconds,
                  "examples_seen": (epoch + 1) * steps_per_epoch * config.batch_size,
                  # Seconds of this run so far, resumed sittings added up.
                  "wall_s": out.wall_before + time.perf_counter() - loop_start}
        if config.likelihood == "discretized_logistic":  # 8-bit data: the papers' unit
          record["test_bits_per_dim"] = float(distributions.bits_per_dim(
              record["test_elbo"], int(np.prod(test_x.shape[1:]))))
        out.record(record)
        out.pictures(model, params, test_x, dataset, epoch + 1, write_png=last)
        # The first epoch of a process compiles: leave it out of the estimate.
        left = (config.epochs - epoch - 1) * float(np.median(times[1:])) if times[1:] else None
        logging.info("epoch %d/%d  train %s %.2f  test ELBO %.2f (recon %.2f, KL %.2f) nats"
                     "  %.2fs (%.0f ex/s)  %s", epoch + 1, config.epochs,
                     "IWAE" if config.objective == "iwae" else "ELBO", record["train_objective"],
                     record["test_elbo"], record["test_reconstruction"], record["test_kl"],
                     seconds, record["examples_per_s"], _duration(left))
        if stopping:
          logging.warning("%s: stopping after epoch %d; its checkpoint is saved. Run the same "
                          "command again to resume.", stop.signal or "a signal to another "
                          "process", epoch + 1)
          break
      if start >= config.epochs:
        logging.info("Nothing to train: the checkpoint in %s already has %d epochs", workdir, start)
        out.pictures(model, train.local_copy(state.params), test_x, dataset, start,
                     write_png=True)
        record = out.last_record()
  finally:
    try:
      ckpt.close()
    finally:
      out.close()
  return record


def _compile_within_memory(epoch_fn, state, batches, root, config: RunConfig):
  """The epoch compiled ahead of its first call (its shapes never change), refused
  with one line when XLA's count of the memory it needs beyond its inputs
  exceeds what is free: a setting too large fails here, not after minutes."""
  compiled = epoch_fn.lower(state, batches, root).compile()
  stats = compiled.memory_analysis()
  free = evaluate.available_memory_bytes()
  if stats is not None and free is not None:
    need = stats.temp_size_in_bytes + stats.output_size_in_bytes
    if need > 0.9 * free:
      samples = (f"--k={config.iwae_samples}" if config.objective == "iwae"
                 else f"--L={config.num_samples}")
      raise ValueError(f"a training step needs about {need / 2**30:.1f} GiB ({samples}, "
                       f"--batch_size={config.batch_size}), but {free / 2**30:.1f} GiB are "
                       f"free; lower {samples.split('=')[0]} or --batch_size")
  return compiled


def read_metrics(path: pathlib.Path) -> list[dict]:
  """The records of a metrics.jsonl; a torn or blank last line (a kill while
  appending) is dropped with a warning, damage elsewhere names the file and line."""
  if not path.exists():
    return []
  lines = path.read_text(errors="replace").splitlines()
  records = []
  for i, line in enumerate(lines):
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or "epoch" not in record:
        raise ValueError("not a metrics record")
      records.append(record)
    except ValueError as e:
      if i == len(lines) - 1:
        logging.warning("%s: dropping its last line, cut short (%s)", path, e)
        break
      raise ValueError(f"{path}: line {i + 1} is damaged ({e}); repair or delete that line "
                       f"(the checkpoints are intact)") from None
  return records


def any_process(flag: bool) -> bool:
  """Whether `flag` holds on any process: so that every process stops at the same epoch."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


class _Outputs:
  """metrics.jsonl, TensorBoard and pictures: written by process 0 only."""

  def __init__(self, workdir: pathlib.Path, start: int):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self.workdir = workdir
    self.metrics_path = workdir / "metrics.jsonl"
    self.primary = jax.process_index() == 0
    # Lines past the checkpoint belong to epochs that will run again.
    kept = [r for r in read_metrics(self.metrics_path) if r["epoch"] <= start]
    self.wall_before = kept[-1].get("wall_s", 0.0) if kept else 0.0
    self.writer = None
    if self.primary:
      workdir_lib.write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
      self.writer = SummaryWriter(str(workdir / "tensorboard"),
                                  purge_step=start + 1 if start else None)

  def record(self, record: dict) -> None:
    if not self.primary:
      return
    with open(self.metrics_path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in record.items():
      if k not in ("epoch", "step"):
        self.writer.add_scalar(k, v, record["epoch"])

  def pictures(self, model, params, test_x, dataset, step: int, write_png: bool) -> None:
    if self.primary:
      _pictures(self.workdir, model, params, test_x, dataset.test_labels, dataset.image_shape,
                jax.random.key(0), self.writer, step, write_png)

  def last_record(self) -> dict:
    records = read_metrics(self.metrics_path)
    return records[-1] if records else {}

  def close(self) -> None:
    if self.writer is not None:
      try:
        self.writer.close()
      except OSError:  # a full disk: the error that stopped the run matters more
        pass


def _duration(seconds: float | None) -> str:
  if seconds is None:
    return "(time left after the next epoch)"
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return (f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s") + " left"
