"""Small models with known answers, and the one tiny shape of every end-to-end run,
shared by the tests."""

import collections
import contextlib
import functools
import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import vae_jax
from vae_jax import config as config_lib
from vae_jax import models

# The one shape of the end-to-end tests: the same programs compile once a session (and
# come from the persistent cache after). A test that needs another shape says why.
TINY_TRAIN, TINY_TEST = 512, 200
TINY = config_lib.RunConfig(latent_dim=2, hidden_sizes=(32,), batch_size=64, epochs=3,
                            eval_batch_size=TINY_TEST)
# TINY as a command line (with the data sizes), less its epochs: each test says those.
TINY_FLAGS = [f"--train_examples={TINY_TRAIN}", f"--test_examples={TINY_TEST}",
              "--hidden_sizes=32", "--latent_dim=2", "--batch_size=64",
              f"--eval_batch_size={TINY_TEST}"]


def command_entry(module: str):
  """The `cli.Entry` of `python -m MODULE` (the training commands build theirs from
  `sweep.entry`); AttributeError for a module whose entry is built inside `main`."""
  import importlib  # pylint: disable=g-import-not-at-top
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  entries = {"experiments.mnist": sweep.entry, "experiments.train": sweep.entry,
             "experiments.frey_face": lambda: sweep.entry(default_preset="frey_face")}
  if module in entries:
    return entries[module]()
  return importlib.import_module(module).ENTRY


def copy_run(reference, destination) -> pathlib.Path:
  """A copy of the reference run's workdir at `destination` (a test's own to change)."""
  destination = pathlib.Path(destination)
  shutil.copytree(reference, destination, dirs_exist_ok=True)
  return destination


def truncate_run(workdir, epoch: int) -> None:
  """The copied run `workdir` as it stood after `epoch`: later checkpoints and metrics
  lines dropped (TensorBoard's events left as they are)."""
  workdir = pathlib.Path(workdir)
  for ckpt in (workdir / "checkpoints").iterdir():
    if ckpt.name.isdigit() and int(ckpt.name) > epoch:
      shutil.rmtree(ckpt)
  lines = (workdir / "metrics.jsonl").read_text().splitlines(keepends=True)
  (workdir / "metrics.jsonl").write_text(
      "".join(l for l in lines if json.loads(l)["epoch"] <= epoch))


@contextlib.contextmanager
def count_compiles():
  """Counts XLA compilations by function name while inside: a Counter
  {fun_name: compilations}, not counting those the persistent cache answered (JAX's
  monitoring events: a cache hit is recorded inside the compile it answers)."""
  from jax._src import dispatch  # pylint: disable=g-import-not-at-top
  counts, hits = collections.Counter(), [0]

  def on_event(event, **kwargs):
    del kwargs
    if event == "/jax/compilation_cache/cache_hits":
      hits[0] += 1

  def on_duration(event, duration, **kwargs):
    del duration
    if event == dispatch.BACKEND_COMPILE_EVENT:
      if hits[0]:
        hits[0] -= 1
      else:
        counts[kwargs.get("fun_name", "?")] += 1

  jax.monitoring.register_event_listener(on_event)
  jax.monitoring.register_event_duration_secs_listener(on_duration)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_listener(on_event)
    jax.monitoring.unregister_event_duration_listener(on_duration)


def linear_gaussian_problem(input_dim=6, latent_dim=3, n=200, seed=0):
  """The linear-Gaussian model p(z) = N(0, I), p(x|z) = N(W z + b, 0.3 I) built
  from the public `vae_jax.VAE` (no hidden layers, unbounded mean, fixed
  variance), with its encoder set to the exact posterior, data drawn from it
  and the exact log p(x) (float64), as (model, exact_params, x, log_px).

  p(x) = N(b, W W^T + 0.3 I); with orthogonal columns of W the exact
  posterior N(A x + c, S) has a diagonal S, which the encoder can equal.
  """
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(input_dim, latent_dim)))
  W = q * np.array([2.0, 1.0, 0.5][:latent_dim] + [1.0] * max(0, latent_dim - 3))
  b = rng.normal(size=input_dim)
  noise_var = 0.3
  # Posterior: S = (I + W^T W / s2)^-1 (diagonal here), mean = S W^T (x - b) / s2.
  S = np.linalg.inv(np.eye(latent_dim) + W.T @ W / noise_var)
  A = (S @ W.T / noise_var).T
  z = rng.normal(size=(n, latent_dim))
  x = z @ W.T + b + np.sqrt(noise_var) * rng.normal(size=(n, input_dim))
  log_px = stats.multivariate_normal(b, W @ W.T + noise_var * np.eye(input_dim)).logpdf(x)
  model = vae_jax.VAE(input_dim=input_dim, latent_dim=latent_dim, hidden_sizes=(),
                      likelihood=models.GaussianHead(learned_variance=False,
                                                     fixed_logvar=float(np.log(noise_var))))
  # Encoder: [mean | logvar] = x [A | 0] + [c | log diag S]; decoder: mean = z W^T + b.
  enc_kernel = np.concatenate([A, np.zeros_like(A)], axis=1)
  enc_bias = np.concatenate([-b @ A, np.log(np.diag(S))])
  params = {"params": {"encoder": {"mlp": {"dense_0": {"kernel": enc_kernel, "bias": enc_bias}}},
                       "decoder": {"mlp": {"dense_0": {"kernel": W.T, "bias": b}}}}}
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
  return model, params, jnp.asarray(x, jnp.float32), log_px


def conditional_linear_gaussian_problem(num_classes=3, input_dim=6, latent_dim=3, n=37, seed=1):
  """`linear_gaussian_problem` given a class y: p(x|z, y) = N(W z + b + B_y, 0.3 I), built
  from the public `vae_jax.VAE(num_classes=K)` (the one-hot label's decoder rows are B,
  its encoder rows move the exact posterior's mean by -B_y A), as (model, exact_params,
  x, y, exact log p(x|y) float64)."""
  model, params, _, _ = linear_gaussian_problem(input_dim, latent_dim, seed=seed)
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)["params"]
  W, b = p["decoder"]["mlp"]["dense_0"]["kernel"].T, p["decoder"]["mlp"]["dense_0"]["bias"]
  A = p["encoder"]["mlp"]["dense_0"]["kernel"][:, :latent_dim]
  rng = np.random.default_rng(seed + 100)
  B = 2.0 * rng.normal(size=(num_classes, input_dim))
  y = rng.integers(0, num_classes, size=n)
  z = rng.normal(size=(n, latent_dim))
  x = z @ W.T + b + B[y] + np.sqrt(0.3) * rng.normal(size=(n, input_dim))
  cov = W @ W.T + 0.3 * np.eye(input_dim)
  log_px_y = np.array([stats.multivariate_normal(b + B[c], cov).logpdf(xi)
                       for xi, c in zip(x, y)])
  enc = p["encoder"]["mlp"]["dense_0"]
  label_rows = np.concatenate([-B @ A, np.zeros((num_classes, latent_dim))], axis=1)
  params = {"params": {
      "encoder": {"mlp": {"dense_0": {"kernel": np.concatenate([enc["kernel"], label_rows]),
                                      "bias": enc["bias"]}}},
      "decoder": {"mlp": {"dense_0": {"kernel": np.concatenate([W.T, B]), "bias": b}}}}}
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
  model = model.clone(num_classes=num_classes)
  return (models.LinenModel(model), params, jnp.asarray(x, jnp.float32),
          jnp.asarray(y, jnp.int32), log_px_y)


def worse_encoder(params, shift=0.5, logvar_shift=0.7):
  """The same model with an encoder that is off the exact posterior (means and log-variances moved)."""
  p = jax.tree_util.tree_map(lambda a: a, params)
  bias = p["params"]["encoder"]["mlp"]["dense_0"]["bias"]
  z = bias.shape[0] // 2
  p["params"]["encoder"]["mlp"]["dense_0"]["bias"] = jnp.concatenate(
      [bias[:z] + shift, bias[z:] + logvar_shift])
  return p


def bound(fn, model, params, x, key, **kwargs):
  """fn(encoder, decoder, x, key, prior=prior, **kwargs) for a linen `model` with `params`,
  compiled (one XLA computation, not one per operation: most of these tests' time was
  eager dispatch; test_objectives checks that compiled and eager numbers agree, and
  under `jax.disable_jit` this runs eagerly)."""
  return _bound(fn, model, tuple(sorted(kwargs.items())), params, x, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _bound(fn, model, kwargs, params, x, key):
  enc, dec, prior = model.parts(params)
  return fn(enc, dec, x, key, prior=prior, **dict(kwargs))


def small_vae(input_dim, latent_dim, hidden, n):
  """A tanh VAE with parameters from key 0 and n binary rows (p = 0.4) from key 1,
  as (model, params, x)."""
  model = vae_jax.VAE(input_dim=input_dim, latent_dim=latent_dim, hidden_sizes=(hidden,),
                      activation="tanh")
  params = vae_jax.init_params(model, jax.random.key(0))
  return model, params, binary_data(jax.random.key(1), n=n, dim=input_dim, p=0.4)


def binary_data(key, n=16, dim=784, p=0.2):
  return (jax.random.uniform(key, (n, dim)) < p).astype(jnp.float32)


TIMING = ("examples_per_s", "epoch_s", "wall_s")


def run_metrics(workdir):
  """A run's metrics.jsonl records without the timing fields (which vary run to run)."""
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in lines]


def main(module: str, *args) -> int:
  """`python -m <module> <args>` in this process (its `main`): the exit status."""
  import importlib  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  handler = logging.get_absl_handler().python_handler
  stream = handler.stream
  try:
    return importlib.import_module(module).main(list(args))
  finally:
    # The command points absl's log at this process's stderr; later tests have their own.
    handler.stream = stream


def cli(capfd, module: str, *args) -> tuple[int, str]:
  """Runs `python -m <module> <args>` in this process (its `main`): (exit status,
  what it wrote to stderr). For what needs no process of its own: signals,
  locks held by another process and os._exit stay in subprocesses."""
  capfd.readouterr()
  code = main(module, *args)
  return code, capfd.readouterr().err


def cpu_devices_env(devices: int, **extra) -> dict:
  """This process's environment for a subprocess that sees `devices` CPU devices,
  keeping the suite's other XLA flags (conftest.py's compile options)."""
  flags = os.environ.get("XLA_FLAGS", "")
  return dict(os.environ, JAX_PLATFORMS="cpu", **extra,
              XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip())


def tensorboard_events(directory) -> list:
  """Every event of the TensorBoard files in `directory` (tensorboardX's protobufs)."""
  import pathlib  # pylint: disable=g-import-not-at-top
  from vae_jax import workdir  # pylint: disable=g-import-not-at-top
  return [event for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*"))
          for _, event in workdir.event_records(path)]


def on_a_terminal(args, env=None, columns: int = 140, timeout: float = 300) -> tuple[int, str]:
  """(exit status, what the terminal showed) of `args` run with a pseudo-terminal
  `columns` wide as its stdin, stdout and stderr."""
  import fcntl, os, pty, struct, subprocess, termios  # pylint: disable=g-import-not-at-top,multiple-imports
  main_fd, child_fd = pty.openpty()
  fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
  proc = subprocess.Popen(args, stdin=child_fd, stdout=child_fd, stderr=child_fd, env=env,
                          cwd=pathlib.Path(__file__).resolve().parents[1])
  os.close(child_fd)
  out = b""
  try:
    while True:
      try:
        chunk = os.read(main_fd, 65536)
      except OSError:  # the child closed the terminal
        break
      if not chunk:
        break
      out += chunk
    proc.wait(timeout=timeout)
  finally:
    proc.kill()
    os.close(main_fd)
  return proc.returncode, out.decode(errors="replace")
