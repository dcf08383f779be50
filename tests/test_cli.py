"""The command line derived from the settings: every flag of the previous README means
what it meant, presets are whole configurations that flags override, and each
setting is declared once."""

import dataclasses
import pathlib
import re

import pytest

from experiments import cli, evaluate, figure2, gradient_variance, sweep, table1
from vae_jax import config, presets, settings

ROOT = pathlib.Path(__file__).resolve().parents[1]

# (flag as typed, settings attribute, field, value): the previous README's flags.
TRAIN_FLAGS = [
    ("--L=5", "run", "num_samples", 5), ("--latent_dim=5", "run", "latent_dim", 5),
    ("--hidden_sizes=200,200", "run", "hidden_sizes", (200, 200)),
    ("--activation=tanh", "run", "activation", "tanh"), ("--batch_size=20", "run", "batch_size", 20),
    ("--epochs=3", "run", "epochs", 3), ("--optimizer=adagrad", "run", "optimizer", "adagrad"),
    ("--learning_rate=0.02", "run", "learning_rate", 0.02),
    ("--lr_schedule=warmup_cosine", "run", "lr_schedule", "warmup_cosine"),
    ("--warmup_epochs=5", "run", "warmup_epochs", 5), ("--adam_b2=0.95", "run", "adam_b2", 0.95),
    ("--objective=iwae", "run", "objective", "iwae"), ("--k=50", "run", "iwae_samples", 50),
    ("--iwae_gradient=dreg", "run", "iwae_gradient", "dreg"),
    ("--estimator=monte_carlo", "run", "estimator", "monte_carlo"), ("--beta=0.5", "run", "beta", 0.5),
    ("--kl_warmup_epochs=10", "run", "kl_warmup_epochs", 10),
    ("--likelihood=continuous_bernoulli", "run", "likelihood", "continuous_bernoulli"),
    ("--binarize=none", "run", "binarize", "none"), ("--seed=7", "run", "seed", 7),
    ("--prng=philox4x32", "run", "prng", "philox4x32"),
    ("--skip_nonfinite", "run", "skip_nonfinite", True), ("--eval_every=10", "run", "eval_every", 10),
    ("--model=conv", "run", "model", "conv"), ("--dataset=frey_face", "run", "dataset", "frey_face"),
    ("--data_path=x.npz", "run", "data_path", "x.npz"), ("--tfds_name=fashion_mnist", "run", "tfds_name", "fashion_mnist"),
    ("--image_size=32", "run", "image_size", 32), ("--compute_dtype=bfloat16", "run", "compute_dtype", "bfloat16"),
    ("--log_grad_norm", "run", "log_grad_norm", True), ("--eval_batch_size=200", "run", "eval_batch_size", 200),
    ("--keep_checkpoints=5", "run", "keep_checkpoints", 5),
    ("--eval_methods=elbo,iwae", "run", "eval_methods", ("elbo", "iwae")),
    ("--workdir=runs/x", "train", "workdir", "runs/x"), ("--fresh", "train", "fresh", True),
    ("--latent_dims=2,5,10", "train", "latent_dims", (2, 5, 10)),
    ("--preset=burda_2016", "train", "preset", "burda_2016"),
    ("--data_dir=/d", "data", "data_dir", "/d"), ("--tfds_data_dir=/t", "data", "tfds_data_dir", "/t"),
    ("--data_source=tfds", "data", "data_source", "tfds"), ("--nodownload", "data", "download", False),
    ("--train_examples=512", "data", "train_examples", 512), ("--test_examples=100", "data", "test_examples", 100),
    ("--distributed", "cluster", "distributed", True),
    ("--coordinator_address=127.0.0.1:1234", "cluster", "coordinator_address", "127.0.0.1:1234"),
    ("--num_processes=2", "cluster", "num_processes", 2), ("--process_id=1", "cluster", "process_id", 1),
    ("--coordinator_timeout=60", "cluster", "coordinator_timeout", 60),
]
OTHER_FLAGS = [
    (evaluate.ENTRY, "--k=20", "iwae", "k", 20), (evaluate.ENTRY, "--large_L=5", "elbo", "large_L", 5),
    (evaluate.ENTRY, "--chunk_size=50", "iwae", "chunk_size", 50),
    (evaluate.ENTRY, "--iwae_batch_size=4", "iwae", "iwae_batch_size", 4),
    (evaluate.ENTRY, "--block_size=10", "iwae", "block_size", 10),
    (evaluate.ENTRY, "--eval_seed=3", "evaluate", "eval_seed", 3), (evaluate.ENTRY, "--epoch=2", "evaluate", "epoch", 2),
    (evaluate.ENTRY, "--workdir=runs/x", "evaluate", "workdir", "runs/x"),
    (evaluate.ENTRY, "--method=ais", "evaluate", "method", ("ais",)),
    (evaluate.ENTRY, "--ais_examples=50", "ais", "ais_examples", 50),
    (evaluate.ENTRY, "--ais_intermediate=10", "ais", "ais_intermediate", 10),
    (evaluate.ENTRY, "--ais_chains=2", "ais", "ais_chains", 2),
    (evaluate.ENTRY, "--ais_start=posterior", "ais", "ais_start", "posterior"),
    (evaluate.ENTRY, "--leapfrog_steps=3", "ais", "leapfrog_steps", 3),
    (evaluate.ENTRY, "--ais_batch_size=5", "ais", "ais_batch_size", 5),
]


@pytest.mark.parametrize("flag,attr,field,value", TRAIN_FLAGS)
def test_every_training_flag_of_the_previous_readme_sets_its_setting(flag, attr, field, value):
  ns = cli.parse(sweep.entry(), [flag])
  assert getattr(getattr(ns, attr), field) == value


def test_the_other_entry_points_flags_and_their_defaults():
  for entry, flag, attr, field, value in OTHER_FLAGS:
    assert getattr(getattr(cli.parse(entry, [flag]), attr), field) == value, flag
  assert cli.parse(evaluate.ENTRY, []).iwae.k == 5000  # evaluate's own default
  assert cli.parse(sweep.entry(), []).run.iwae_samples == 5  # training's, in the same process
  f2 = cli.parse(figure2.ENTRY, ["--dataset=frey_face", "--budget=paper"])
  assert f2.figure2.budget == "paper" and f2.run.likelihood == "gaussian_sigmoid_mean"
  assert f2.run.optimizer == "adagrad"
  t1 = cli.parse(table1.ENTRY, ["--rows=vae_1layer,conv", "--minutes=0.5", "--eval_k=50", "--eval_examples=10"])
  assert t1.table1.rows == ("vae_1layer", "conv") and t1.table1.minutes == 0.5
  gv = cli.parse(gradient_variance.ENTRY, ["--Ls=1,4", "--repeats=5", "--minibatch=10"])
  assert gv.gradient_variance.Ls == (1, 4) and gv.gradient_variance.repeats == 5


def test_a_preset_is_a_whole_configuration_and_flags_override_it():
  ns = cli.parse(sweep.entry(), ["--preset=burda_2016_fast", "--epochs=7"])
  assert ns.run == dataclasses.replace(presets.burda_2016_fast(), epochs=7)
  # A flag given with the preset's own value, or the default's, still wins.
  ns = cli.parse(sweep.entry(), ["--preset=burda_2016", "--batch_size=128"])
  assert ns.run.batch_size == 128 and ns.run.hidden_sizes == (200, 200)
  frey = cli.parse(sweep.entry(default_preset="frey_face"), [])
  assert frey.run == presets.frey_face()


def test_presets_are_whole_valid_configurations_documented_with_a_command():
  for name, fn in presets.PRESETS.items():
    assert isinstance(fn(), config.RunConfig), name
    assert "python -m " in fn.__doc__, name
  # The Python constructors read the same definitions: one architecture, one place.
  import vae_jax  # pylint: disable=g-import-not-at-top
  burda = vae_jax.burda_2016()
  assert burda.hidden_sizes == presets.burda_2016().hidden_sizes and burda.activation == "tanh"
  assert vae_jax.conv_32x32x3().channels == presets.conv_32x32x3().conv_channels


def test_each_setting_is_declared_once_and_flags_are_only_generated():
  # Every RunConfig field carries its help (the flag is made from it), and the
  # experiments define no flag by hand beyond the generator's six calls.
  assert all("help" in f.metadata for f in dataclasses.fields(config.RunConfig))
  text = "".join(p.read_text() for p in (ROOT / "experiments").glob("*.py"))
  assert len(re.findall(r"flags\.DEFINE", text)) <= 12
  names = [settings.flag_name(f) for f in settings.fields(config.RunConfig)]
  assert len(names) == len(set(names))


def test_help_lists_the_flags_with_their_help(capsys):
  from experiments import mnist  # pylint: disable=g-import-not-at-top
  assert mnist.main(["--helpshort"]) == 0
  out = capsys.readouterr().out
  assert "  --L=1  [>= 1]\n      Monte Carlo samples of z per data point." in out
  assert "--latent_dims" in out and "--flagfile=FILE" in out
  # Grouped by what the flags set, in this order, each flag under its heading.
  heads = [out.index(f"\n{h}:\n") for h in ("Data", "Model", "Objective", "Training",
                                             "Evaluation and checkpoints")]
  assert heads == sorted(heads)
  assert heads[1] < out.index("--latent_dim=20  [>= 1]") < heads[2]
  assert "--activation=relu  [one of: elu, gelu, relu, softplus, tanh]" in out
  assert "--flow_steps=2  [>= 0, <= 256]" in out
  # Every heading whole (a docstring's first clause, not its first line's end), every
  # choice listed, every bound in full.
  assert "\nWhere this machine finds a run's data, and how much of it to use:\n" in out
  assert not any(l.endswith(" a:") or l.endswith(" of:") for l in out.splitlines())
  assert "--prng=threefry2x32  [one of: threefry2x32, philox4x32, rbg, unsafe_rbg]" in out
  assert "--seed=0  [>= 0, <= 9223372036854775807]" in out


def test_list_presets_says_what_each_is_and_its_result(capfd):
  from experiments import mnist  # pylint: disable=g-import-not-at-top
  assert mnist.main(["--list_presets"]) == 0
  out = capfd.readouterr().out
  for name in presets.PRESETS:
    assert f"\n{name}\n    " in f"\n{out}", name
  assert "burda_2016_fast\n    Burda et al.'s one-layer VAE row in a fraction of their " \
         "schedule\n    Measured alone on a 2-core CPU: 43.9 min" in out


def test_the_effective_settings_say_whether_a_preset_or_a_flag_set_them():
  from experiments import mnist  # pylint: disable=g-import-not-at-top
  entry = mnist.sweep.entry()
  fv = cli.flag_values(entry, ["--preset=burda_2016_iaf_vamp", "--epochs=1"])
  shown = cli.effective_settings(entry, fv, cli._namespace(entry, fv))
  assert "--epochs=1 (flag)" in shown and "--preset=burda_2016_iaf_vamp (flag)" in shown
  assert "--kl_warmup_epochs=20 (preset burda_2016_iaf_vamp)" in shown
  assert "--hidden_sizes=200,200 (preset burda_2016_iaf_vamp)" in shown
  assert not any(s.startswith("--latent_dims") for s in shown)  # at its default


def test_a_run_folder_naming_foreign_code_is_refused_without_model(tmp_path, monkeypatch,
                                                                   capfd):
  """A config.json naming `evilmod:build`, importable from here, is never imported
  by `experiments.evaluate` unless --model names it too: one line, exit 1."""
  from tests import helpers  # pylint: disable=g-import-not-at-top
  marker = tmp_path / "ran"
  (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                       f"def build(config, image_shape): pass\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  saved = {**dataclasses.asdict(config.RunConfig()), "model": "evilmod:build",
           "data": {"train_examples": 10, "image_shape": [2, 2, 1]}}
  (tmp_path / "config.json").write_text(__import__("json").dumps(saved))
  code, err = helpers.cli(capfd, "experiments.evaluate", f"--workdir={tmp_path}")
  assert code == 1 and not marker.exists()
  assert err.strip().splitlines()[-1] == (
      f"error: --workdir={tmp_path}: its config.json names the model builder 'evilmod:build', "
      f"code that loading the run would import and run; if you trust that folder, pass "
      f"--model=evilmod:build"), err
  code, err = helpers.cli(capfd, "experiments.evaluate", f"--workdir={tmp_path}", "--model=mlp")
  assert code == 1 and not marker.exists() and "trained with --model=evilmod:build" in err, err


def test_a_sweep_points_folder_is_one_path_component_whatever_its_value():
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  points = sweep.grid(config.RunConfig(dataset="npz"),
                      ["data_path=../../../../x,a/b,c d", "latent_dim=2"])
  names = [p.name for p in points]
  assert names == ["data_path=..%2F..%2F..%2F..%2Fx,latent_dim=2",
                   "data_path=a%2Fb,latent_dim=2", "data_path=c d,latent_dim=2"]
  assert all(len(pathlib.PurePath(n).parts) == 1 for n in names)
  assert points[0]["data_path"] == "../../../../x"  # the value itself is kept


def test_an_unusable_compilation_cache_is_one_warning_and_no_cache(tmp_path, caplog):
  """JAX warned at every write into a folder it could not use (2-14 lines)."""
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import cli  # pylint: disable=g-import-not-at-top
  before = jax.config.jax_compilation_cache_dir
  a_file = tmp_path / "cache"
  a_file.write_text("")
  try:
    with caplog.at_level("WARNING"):
      cli._compilation_cache(cli.RuntimeOptions(compilation_cache=str(a_file)))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"--compilation_cache={a_file}: cannot keep programs there (a file, not a "
                     f"folder); compiling without a cache this run (pass a writable folder, or "
                     f"--compilation_cache=none)"]
    assert jax.config.jax_compilation_cache_dir is None
    cli._compilation_cache(cli.RuntimeOptions(compilation_cache=str(tmp_path / "new")))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "new")
    assert (tmp_path / "new").is_dir()
  finally:
    jax.config.update("jax_compilation_cache_dir", before)


_EXPERIMENT = '''
import vae_jax

def get_config(arg="small"):
  hidden = {"small": (32,), "big": (400,)}[arg]
  return {"latent_dim": 3, "hidden_sizes": hidden, "batch_size": 64, "epochs": 1,
          "learning_rate": 3e-3, "eval_batch_size": 200}
'''


def test_an_experiment_file_gives_the_settings_and_its_errors_are_one_line(tmp_path):
  path = tmp_path / "exp.py"
  path.write_text(_EXPERIMENT)
  assert presets.from_file(f"{path}:big").hidden_sizes == (400,)
  got = presets.from_file(str(path))
  assert (got.latent_dim, got.hidden_sizes, got.learning_rate) == (3, (32,), 3e-3)
  (tmp_path / "bad.py").write_text("def get_config():\n  return {'latent_dim': 'five'}\n")
  (tmp_path / "none.py").write_text("x = 1\n")
  (tmp_path / "raises.py").write_text("raise RuntimeError('oops')\n")
  for spec, message in [
      (f"{path}:huge", "get_config('huge') failed (KeyError: 'huge')"),
      (str(tmp_path / "bad.py"), "latent_dim=\"five\": must be an integer"),
      (str(tmp_path / "none.py"), "defines no get_config()"),
      (str(tmp_path / "raises.py"), "failed (RuntimeError: oops)"),
      (str(tmp_path / "missing.py"), "no file"),
  ]:
    with pytest.raises(ValueError) as e:
      presets.from_file(spec)
    assert str(e.value).startswith(f"config={spec}: ") and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
  fields = {"latent_dim": "latent_dim", "num_samples": "L"}
  assert cli.config_spellings(["--config.latent_dim=5", "--config.num_samples=2", "--x=1"],
                              fields) == ["--latent_dim=5", "--L=2", "--x=1"]
  with pytest.raises(ValueError, match=r"--config.latnt_dim: no such setting"):
    cli.config_spellings(["--config.latnt_dim=5"], fields)


@pytest.mark.slow
def test_the_main_command_trains_an_experiment_file_with_a_flag_over_it(tmp_path, data_root,
                                                                        capfd):
  from tests import helpers  # pylint: disable=g-import-not-at-top
  path = tmp_path / "exp.py"
  path.write_text(_EXPERIMENT)
  code, err = helpers.cli(capfd, "experiments.mnist", f"--config={path}",
                          "--config.latent_dim=2", "--train_examples=512", "--test_examples=200",
                          f"--workdir={tmp_path / 'run'}")
  assert code == 0, err[-2000:]
  import json  # pylint: disable=g-import-not-at-top
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert (saved["latent_dim"], saved["hidden_sizes"], saved["learning_rate"]) == (2, [32], 3e-3)
  line = next(l for l in err.splitlines() if "Settings (" in l)
  assert "--latent_dim=2 (flag)" in line and f"--hidden_sizes=32 (config {path})" in line
  code, err = helpers.cli(capfd, "experiments.mnist", f"--config={path}", "--preset=kingma_welling")
  assert code == 1 and err.strip().splitlines()[-1] == (
      f"error: --config={path} and --preset=kingma_welling: both say where the settings start; "
      f"give one")


def _two_actions(config):
  return [lambda loop, end: None, lambda loop, end: config.latent_dim]


def _not_actions(config):  # pylint: disable=unused-argument
  return 42


def test_hooks_name_factories_of_actions_and_bad_names_are_one_line():
  actions = sweep.user_hooks(("tests.test_cli:_two_actions",), config.RunConfig(latent_dim=7))
  assert len(actions) == 2 and actions[1](None, None) == 7
  for name, message in [("nomodule:f", "cannot import it (No module named 'nomodule')"),
                        ("tests.test_cli", "not of the form MODULE:FUNCTION"),
                        ("tests.test_cli:nothing", "cannot import it"),
                        ("tests.test_cli:_not_actions", "returned (42,), not actions")]:
    with pytest.raises(ValueError) as e:
      sweep.user_hooks((name,), config.RunConfig())
    assert str(e.value).startswith(f"hooks={name}: ") and message in str(e.value), str(e.value)


def test_a_writer_threads_failure_prints_nothing_and_other_exceptions_print(monkeypatch):
  """A full disk made orbax's threads print their tracebacks, and its callbacks the
  closed event loop's (as unraisable exceptions), before the one line."""
  import sys  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from experiments import errors  # pylint: disable=g-import-not-at-top
  shown = []
  monkeypatch.setattr(threading, "excepthook", lambda args: shown.append(args.exc_value))
  monkeypatch.setattr(sys, "unraisablehook", lambda args: shown.append(args.exc_value))
  errors.quiet_writer_threads()

  def raised(exc, filename):
    try:
      exec(compile("raise exc", filename, "exec"), {"exc": exc})
    except type(exc) as e:
      return types.SimpleNamespace(exc_type=type(e), exc_value=e, exc_traceback=e.__traceback__,
                                   thread=None, object=None, err_msg=None)
  writer = raised(RuntimeError("Event loop is closed"), "/x/asyncio/base_events.py")
  ours = raised(RuntimeError("a bug"), "/x/vae_jax/runner.py")
  threading.excepthook(writer)
  sys.unraisablehook(writer)
  assert not shown
  threading.excepthook(ours)
  sys.unraisablehook(ours)
  assert [str(e) for e in shown] == ["a bug", "a bug"]
