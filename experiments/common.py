"""Flags shared by the training experiments, their checks, and the sweep driver.

Importing this module defines the flags; each experiment sets its own defaults
with `flags.set_default` before `app.run`.
"""

import csv
import dataclasses
import logging as std_logging
import os
import pathlib
import re
import signal
import socket
import sys
import time

from absl import app
from absl import flags
from absl import logging

from experiments import presets
from vae_jax import checkpoint
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import datasets
from vae_jax import evaluate
from vae_jax import models
from vae_jax import objectives
from vae_jax import runner
from vae_jax import train
from vae_jax import workdir as workdir_lib

# The model.
MODEL = flags.DEFINE_enum("model", "mlp", list(config_lib.MODELS),
                          "mlp (--hidden_sizes each side), conv (strided convs down, transposed "
                          "convs up), two_layer (Burda et al.'s two stochastic layers: z2 of "
                          "--latent_dim over z1 of twice that; its ELBO takes --estimator=monte_carlo).")
LATENT_DIM = flags.DEFINE_integer("latent_dim", 20, "Size of z.", lower_bound=1)
LATENT_DIMS = flags.DEFINE_list(
    "latent_dims", [], "Sweep: train one model per latent size (e.g. 2,5,10,20,200), each in "
    "WORKDIR/latent_<size>, and write WORKDIR/summary.{csv,md}. Overrides --latent_dim.")
HIDDEN_SIZES = flags.DEFINE_list("hidden_sizes", ["400"],
                                 "Encoder hidden widths; the decoder mirrors them.")
ACTIVATION = flags.DEFINE_enum("activation", "relu", sorted(models.ACTIVATIONS),
                               "Hidden activation (tanh as in the paper, relu as in PyTorch's).")
LIKELIHOOD = flags.DEFINE_enum("likelihood", "bernoulli", sorted(models.LIKELIHOODS),
                               "p(x|z): bernoulli (binary data), continuous_bernoulli (grey "
                               "levels, --binarize=none), gaussian, gaussian_sigmoid_mean, "
                               "discretized_logistic (8-bit data, --binarize=none).")
COMPUTE_DTYPE = flags.DEFINE_enum(
    "compute_dtype", "float32", list(config_lib.COMPUTE_DTYPES),
    "Matmul precision: bfloat16 for mixed precision on a GPU or TPU (parameters, optimizer "
    "state, likelihoods and KLs stay float32); float32 everywhere else.")

# The objective.
OBJECTIVE = flags.DEFINE_enum("objective", "elbo", list(config_lib.OBJECTIVES),
                              "Training objective: elbo (with --L, --estimator, --beta, "
                              "--kl_warmup_epochs) or iwae (the k-sample bound, --k).")
L = flags.DEFINE_integer("L", 1, "Monte Carlo samples of z per data point.", lower_bound=1)
ESTIMATOR = flags.DEFINE_enum("estimator", "analytic", list(objectives.ESTIMATORS),
                              "analytic: closed-form KL (B); monte_carlo: full estimator (A).")
K = flags.DEFINE_integer("k", 5, "Importance samples: of the IWAE training objective "
                         "(--objective=iwae); experiments.evaluate: of the log p(x) estimate.",
                         lower_bound=1)
IWAE_GRADIENT = flags.DEFINE_enum("iwae_gradient", "standard", ["standard", "dreg"],
                                  "Encoder gradient of the IWAE objective: standard, or dreg "
                                  "(doubly reparameterized, Tucker et al. 2019).")
BETA = flags.DEFINE_float("beta", 1.0, "KL weight of the ELBO objective (1: the ELBO; "
                          "other values: the beta-VAE objective).", lower_bound=0.0)
KL_WARMUP_EPOCHS = flags.DEFINE_integer("kl_warmup_epochs", 0, "Epochs over which the KL "
                                        "weight rises linearly from 0 to --beta.",
                                        lower_bound=0)

# The optimizer and its schedule.
BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Examples per step.", lower_bound=1)
EPOCHS = flags.DEFINE_integer("epochs", 10, "Epochs to train (in all, counting resumed ones).",
                              lower_bound=1)
OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", list(train.OPTIMIZERS),
                              "adam, or adagrad as in the paper.")
LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Step size (> 0).")
ADAM_B2 = flags.DEFINE_float("adam_b2", 0.999, "Adam's second-moment decay.", lower_bound=0.0,
                             upper_bound=0.999999)
LR_SCHEDULE = flags.DEFINE_enum("lr_schedule", "constant", list(train.SCHEDULES),
                                "constant; burda: Burda et al.'s 10**(-i/7) decay over 3**i "
                                "epochs; warmup_cosine: --warmup_epochs of linear warm-up, "
                                "then a cosine decay to 0 at --epochs.")
WARMUP_EPOCHS = flags.DEFINE_integer("warmup_epochs", 0, "Linear learning-rate warm-up of "
                                     "--lr_schedule=warmup_cosine.", lower_bound=0)
SKIP_NONFINITE = flags.DEFINE_bool("skip_nonfinite", False, "Skip (and count) steps whose "
                                   "loss or gradient is not finite instead of stopping.")
LOG_GRAD_NORM = flags.DEFINE_bool("log_grad_norm", False, "Log the gradient's global norm "
                                   "(epoch mean; always with --skip_nonfinite). One more pass "
                                   "over the gradients each step.")

# The data.
DATASET = flags.DEFINE_enum("dataset", "mnist", list(datasets.SOURCES),
                            "mnist, frey_face, npz (--data_path=FILE.npz with 'train' and "
                            "'test' arrays), folder (--data_path=DIR of PNG/JPEG images), tfds "
                            "(--tfds_name=NAME).")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory of the data files "
                               f"(default: ${data_lib.DATA_ENV}/<data set>).")
DATA_PATH = flags.DEFINE_string("data_path", None, "The .npz file (--dataset=npz) or image "
                                "directory (--dataset=folder).")
DATA_SOURCE = flags.DEFINE_enum("data_source", "idx", ["idx", "tfds"],
                                "MNIST from idx: the four official files in --data_dir; tfds: "
                                "tfds.load('mnist') (needs tensorflow).")
TFDS_NAME = flags.DEFINE_string("tfds_name", None, "A TFDS image data set with train and test "
                                "splits (--dataset=tfds), e.g. fashion_mnist.")
TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "Where TFDS keeps prepared data "
                                    "(default: its own, ~/tensorflow_datasets). --data_dir is "
                                    "its manual_dir.")
IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Resize --dataset=folder images to this "
                                  "many pixels square (0: keep their size).", lower_bound=0)
BINARIZE = flags.DEFINE_enum(
    "binarize", "dynamic", list(data_lib.BINARIZATIONS),
    "dynamic: a fresh Bernoulli draw of each pixel every time an image is used; fixed: one "
    "draw made once with a constant seed; none: grey levels (the PyTorch example's inputs, "
    "for which the Bernoulli bound is not a likelihood; colour data takes none).")
DOWNLOAD = flags.DEFINE_bool("download", True, "Download missing MNIST files (sha256 checked).")
TRAIN_EXAMPLES = flags.DEFINE_integer("train_examples", 0, "Use only the first N training "
                                      "examples (0: all); for quick trials.", lower_bound=0)
TEST_EXAMPLES = flags.DEFINE_integer("test_examples", 0, "Use only the first N test examples "
                                     "(0: all).", lower_bound=0)

# The run: presets, keys, the workdir, evaluation and checkpoints.
PRESET = flags.DEFINE_enum("preset", None, sorted(presets.PRESETS),
                           "Set the flags of a named configuration (experiments/presets.py "
                           "lists each with its command and result); explicit flags still win.")
SEED = flags.DEFINE_integer("seed", 0, "Root of every key: init, shuffle, binarization, z.",
                            lower_bound=0, upper_bound=2 ** 63 - 1)
PRNG = flags.DEFINE_string("prng", "threefry2x32", "jax.random's generator for the root key: "
                           "threefry2x32 (JAX's default) or philox4x32 (Random123's Philox: "
                           "the binarization noise twice as fast on a CPU).")
WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go.")
FRESH = flags.DEFINE_bool("fresh", False, "Delete the workdir's checkpoints and metrics and "
                          "start over instead of resuming.")
EVAL_EVERY = flags.DEFINE_integer("eval_every", 1, "Evaluate, checkpoint and log every N "
                                  "epochs (and at the last one, or when stopped).",
                                  lower_bound=1)
EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", 1000, "Test examples evaluated at "
                                       "once.", lower_bound=1)
KEEP = flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.", lower_bound=1)

DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join the other processes through jax.distributed.initialize() first: "
    "run the same command on every host. Without the three flags below (or the environment "
    "variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), JAX detects the "
    "cluster itself (TPU pods, SLURM, Open MPI).")
COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0's "
                                  "coordinator (--distributed).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "How many processes in all "
                                     "(--distributed).", lower_bound=1)
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 for the "
                                  "coordinator (--distributed).", lower_bound=0)
COORDINATOR_TIMEOUT = flags.DEFINE_integer("coordinator_timeout", 300, "Seconds to wait for "
                                           "every process to join (--distributed).",
                                           lower_bound=1)

flags.register_validator("learning_rate", lambda v: v > 0,
                         "--learning_rate must be > 0 (e.g. 1e-3)")


def _positive_ints(values):
  """Whether every entry of a list flag is an integer >= 1."""
  try:
    return all(int(v) >= 1 for v in values)
  except ValueError:
    return False


flags.register_validator("latent_dims", _positive_ints,
                         "--latent_dims must be a comma-separated list of integers >= 1, "
                         "e.g. 2,5,10,20,200")
flags.register_validator("latent_dims", lambda v: len({int(x) for x in v}) == len(v),
                         "--latent_dims lists a size twice; give each size once")
flags.register_validator("hidden_sizes", lambda v: bool(v) and _positive_ints(v),
                         "--hidden_sizes must be a comma-separated list of integers >= 1, "
                         "e.g. 400 or 200,200")
flags.register_validator("workdir", lambda v: v is None or not pathlib.Path(v).is_file(),
                         "--workdir names a file; pass a directory")


def load_dataset(name: str, *, data_path=None, tfds_name=None, image_size=None
                 ) -> data_lib.Dataset:
  """The data set `name` through `vae_jax.datasets`, from the flags (the keyword
  arguments, where given, instead: a saved run's settings), cut to --train_examples
  and --test_examples."""
  options = datasets.Options(
      data_dir=DATA_DIR.value, data_path=data_path or DATA_PATH.value,
      tfds_name=tfds_name or TFDS_NAME.value, tfds_data_dir=TFDS_DATA_DIR.value,
      image_size=IMAGE_SIZE.value if image_size is None else image_size,
      download=DOWNLOAD.value, mnist_source=DATA_SOURCE.value)
  if name == "npz" and not options.data_path:
    raise ValueError("--dataset=npz needs --data_path=FILE.npz holding 'train' and 'test' arrays")
  if name == "folder" and not options.data_path:
    raise ValueError("--dataset=folder needs --data_path=DIR holding PNG or JPEG images")
  if name == "tfds" and not options.tfds_name:
    raise ValueError("--dataset=tfds needs --tfds_name, e.g. --tfds_name=fashion_mnist")
  dataset = datasets.load(name, options)
  return data_lib.subset(dataset, TRAIN_EXAMPLES.value or None, TEST_EXAMPLES.value or None)


def run_config(**overrides) -> config_lib.RunConfig:
  """The flags as a frozen RunConfig."""
  values = dict(dataset=DATASET.value, data_path=str(DATA_PATH.value or ""),
                tfds_name=TFDS_NAME.value or "", image_size=IMAGE_SIZE.value,
                model=MODEL.value, compute_dtype=COMPUTE_DTYPE.value, binarize=BINARIZE.value,
                latent_dim=LATENT_DIM.value,
                hidden_sizes=tuple(int(h) for h in HIDDEN_SIZES.value),
                activation=ACTIVATION.value, num_samples=L.value, estimator=ESTIMATOR.value,
                objective=OBJECTIVE.value, iwae_samples=K.value,
                iwae_gradient=IWAE_GRADIENT.value, beta=BETA.value,
                kl_warmup_epochs=KL_WARMUP_EPOCHS.value, likelihood=LIKELIHOOD.value,
                warmup_epochs=WARMUP_EPOCHS.value, adam_b2=ADAM_B2.value,
                eval_every=EVAL_EVERY.value,
                batch_size=BATCH_SIZE.value, epochs=EPOCHS.value, optimizer=OPTIMIZER.value,
                learning_rate=LEARNING_RATE.value, lr_schedule=LR_SCHEDULE.value,
                seed=SEED.value, prng=PRNG.value,
                eval_batch_size=EVAL_BATCH_SIZE.value, keep_checkpoints=KEEP.value,
                skip_nonfinite=SKIP_NONFINITE.value, log_grad_norm=LOG_GRAD_NORM.value)
  values.update(overrides)
  return config_lib.RunConfig(**values)


def run(body, flag_of: dict | None = None) -> None:
  """An entry point: absl parses the flags (no positional arguments), then `body()`
  runs under `main_wrapper`'s error policy."""
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    main_wrapper(body, flag_of)
  app.run(main)


def train_main() -> None:
  """The training entry points' body: preset, data set, one run or a sweep. Flags
  override the preset; the workdir defaults to runs/<dataset>."""
  apply_defaults(presets.get(PRESET.value))
  if WORKDIR.value is None:
    WORKDIR.value = f"runs/{DATASET.value}"
  logging.info("Loading the data set %s", DATASET.value)
  dataset = load_dataset(DATASET.value)
  train_all(run_config(), dataset, workdir())


def _out_of_memory(e: Exception) -> bool:
  text = str(e)
  return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                                 "Unable to allocate", "Failed to allocate"))


def main_wrapper(body, flag_of: dict | None = None) -> None:
  """Runs an entry point's body under the error policy: the user's errors, running out
  of memory and Ctrl-C before training is under way each end with one line and a
  non-zero exit; anything else is a bug and keeps its traceback."""
  # Ctrl-C raises KeyboardInterrupt even where the parent started us with SIGINT
  # ignored (a background job of a script, a test runner's worker), and is
  # remembered: Python swallows one raised inside a garbage-collector callback.
  interrupts = _Interrupts()
  signal.signal(signal.SIGINT, interrupts)
  setup()
  try:
    body()
    if interrupts.count:
      raise KeyboardInterrupt
  except USER_ERRORS as e:
    fail(str(e), flag_of=flag_of)
  except MemoryError:
    fail("out of host memory; lower --batch_size, --L, --k or --eval_batch_size (or use "
         "fewer --train_examples)")
  except Exception as e:  # pylint: disable=broad-except
    if type(e).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and _out_of_memory(e):
      first = str(e).strip().splitlines()[0][:200]
      fail(f"out of memory ({first}); lower --batch_size, --L, --k, --chunk_size or "
           f"--eval_batch_size")
    raise
  except KeyboardInterrupt:
    fail("interrupted (Ctrl-C); a run resumes from its last checkpoint with the same command",
         code=130)


class _Interrupts:
  """SIGINT handler: raises KeyboardInterrupt and counts, so that an interruption
  swallowed where Python ignores exceptions is still seen (`check_interrupted`)."""

  def __init__(self):
    self.count = 0

  def __call__(self, signum, frame):  # pylint: disable=unused-argument
    self.count += 1
    raise KeyboardInterrupt


def check_interrupted() -> None:
  """Raises KeyboardInterrupt if a Ctrl-C arrived and was swallowed so far."""
  if getattr(signal.getsignal(signal.SIGINT), "count", 0):
    raise KeyboardInterrupt


def train_all(config: config_lib.RunConfig, dataset: data_lib.Dataset, workdir: pathlib.Path):
  """Trains one model, or one per --latent_dims entry with a summary table."""
  check_interrupted()
  if not LATENT_DIMS.value:
    return runner.train_and_evaluate(config, dataset, workdir, fresh=FRESH.value)
  rows = []
  for d in (int(v) for v in LATENT_DIMS.value):
    logging.info("Sweep: latent_dim=%d", d)
    record = runner.train_and_evaluate(dataclasses.replace(config, latent_dim=d), dataset,
                                       workdir / f"latent_{d}", fresh=FRESH.value)
    rows.append({"latent_dim": d, **{k: record.get(k) for k in
                                     ("epoch", "train_elbo", "test_elbo", "test_reconstruction",
                                      "test_kl")}})
  write_summary(workdir, rows)
  return rows


def write_summary(workdir: pathlib.Path, rows: list[dict]) -> None:
  """summary.csv and summary.md: one row per latent size (process 0 writes them)."""
  if not is_primary():
    return
  with open(workdir / "summary.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  table = workdir_lib.markdown_table(list(rows[0]), [list(r.values()) for r in rows])
  (workdir / "summary.md").write_text(table + "\n")
  logging.info("Summary (nats per image):\n%s", table)


class _QuietLibraries:
  """Drops orbax's INFO chatter (a dozen lines per checkpoint) from the absl log."""

  def filter(self, record) -> bool:
    return record.levelno > std_logging.INFO or "/orbax/" not in record.pathname


def setup() -> None:
  """What every entry point does first: quiet orbax, join the other hosts if asked."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if DISTRIBUTED.value:
    join_processes()


def _env_int(name: str):
  value = os.environ.get(name)
  return int(value) if value not in (None, "") else None


def _wait_for_coordinator(address: str, pid: int, num: int, timeout: int, deadline: float):
  """Returns once address accepts a TCP connection; exits with one line at the deadline."""
  host, _, port = address.rpartition(":")
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
        return
    except (OSError, ValueError) as e:
      if time.monotonic() >= deadline:
        fail(f"--distributed: process {pid} could not join {num} processes: nothing answered "
             f"at the coordinator address {address} within --coordinator_timeout={timeout}s "
             f"({e}); start process 0 first, check the address and port, or raise "
             f"--coordinator_timeout")
      time.sleep(0.5)


def join_processes() -> None:
  """jax.distributed.initialize from the flags, else the JAX_* variables, else JAX's own
  cluster detection; CPU collectives through gloo. Exits with one line if the
  coordinator does not answer in time."""
  import jax  # pylint: disable=g-import-not-at-top
  address = COORDINATOR.value or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num = NUM_PROCESSES.value if NUM_PROCESSES.value is not None else _env_int("JAX_NUM_PROCESSES")
  pid = PROCESS_ID.value if PROCESS_ID.value is not None else _env_int("JAX_PROCESS_ID")
  if address and (num is None or pid is None):
    fail(f"--coordinator_address={address} needs --num_processes and --process_id (or "
         f"JAX_NUM_PROCESSES and JAX_PROCESS_ID)")
  if num is not None and pid is not None and not 0 <= pid < num:
    fail(f"--process_id={pid}: must be between 0 and --num_processes - 1 = {num - 1}")
  # CPU processes need a collectives implementation; accelerators ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeout = COORDINATOR_TIMEOUT.value
  deadline = time.monotonic() + timeout
  if address and pid:
    # JAX's client aborts the process when the coordinator never answers: check first.
    _wait_for_coordinator(address, pid, num, timeout, deadline)
  logging.info("Joining %s processes through %s (up to %ds)", num or "the detected",
               address or "the detected coordinator", timeout)
  try:
    jax.distributed.initialize(address, num, pid,
                               initialization_timeout=max(1, int(deadline - time.monotonic())))
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    fail(f"--distributed: process {pid} could not join {num} processes through the "
         f"coordinator at {address or '(detected)'} within --coordinator_timeout={timeout}s "
         f"({first[:200]}); start process 0 first, check the address and port, or raise "
         f"--coordinator_timeout")
  logging.info("Process %d of %d: %d local devices of %d (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)


# Errors reported as one line, without a stack trace: the user can act on each.
USER_ERRORS = (ValueError, OSError, data_lib.DataError, runner.NonFiniteError,
               checkpoint.CheckpointError, workdir_lib.WorkdirBusy, evaluate.EvaluationStopped)


def apply_defaults(values: dict) -> None:
  """Sets each flag in `values` that the command line left alone."""
  for name, value in values.items():
    if not flags.FLAGS[name].present:
      flags.FLAGS[name].value = value


def is_primary() -> bool:
  """Whether this process writes the shared outputs (process 0 of several, or the only one)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def workdir() -> pathlib.Path:
  """--workdir with ~ expanded; an empty one refused (it would write into the current
  directory)."""
  if not (WORKDIR.value or "").strip():
    raise ValueError("--workdir is empty; pass a directory, e.g. --workdir=runs/mnist")
  return pathlib.Path(WORKDIR.value).expanduser()


# Library arguments whose flag has another name.
_FLAG_OF = {"num_samples": "L", "iwae_samples": "k"}
_ARGUMENT = re.compile(r"(?<![\w\-/.$])([A-Za-z_]\w*)(=True\b|=)?")


def as_flags(message: str, flag_of: dict | None = None) -> str:
  """A library message in the command line's words: the library names its
  arguments (`batch_size=4096`, `fresh=True`, `lower num_samples`), the user
  typed flags (`--batch_size=4096`, `--fresh`, `lower --L`). Bare words are
  taken for arguments only when they hold an underscore, or read "another workdir".
  `flag_of` renames arguments for one entry point (e.g. batch_size -> iwae_batch_size)."""
  flag_of = {**_FLAG_OF, **(flag_of or {})}
  def one(m: re.Match) -> str:
    name, value = m.group(1), m.group(2)
    flag = flag_of.get(name, name)
    bare_ok = "_" in name or name in flag_of or message[max(0, m.start() - 8):m.start()] == "another "
    if flag not in flags.FLAGS or (value is None and not bare_ok):
      return m.group(0)
    return f"--{flag}" if value == "=True" else f"--{flag}{value or ''}"
  return _ARGUMENT.sub(one, message)


def fail(message: str, code: int = 1, flag_of: dict | None = None) -> None:
  """Exits with one line on stderr and no stack trace: for the user's errors.

  Exits at once (os._exit): whatever failed may have left background threads
  (orbax, XLA) whose teardown would print warnings after this line or hold the
  process; nothing is left to save (checkpoints are atomic, the lock is the
  kernel's).
  """
  sys.stdout.flush()
  sys.stderr.write(f"error: {as_flags(message, flag_of)}\n")
  sys.stderr.flush()
  logging.flush()
  os._exit(code)
