"""The command lines, run as a user runs them: in this process through each entry
point's `main` (the same parsing, error policy and body as `python -m`), or in a
subprocess where the process itself is under test."""

import csv
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--epochs=1", *helpers.TINY_FLAGS]  # the session's shape: its programs come compiled


def in_process(capfd, module, *args):
  """`run` in this process (the entry point's `main`): same parsing, policy and body."""
  import types  # pylint: disable=g-import-not-at-top
  code, err = helpers.cli(capfd, module, *args)
  return types.SimpleNamespace(returncode=code, stderr=err)


def run(module, *args, data_root=None):
  env = dict(os.environ)
  if data_root is not None:
    env["VAE_JAX_DATA"] = str(data_root)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_the_main_command_trains_writes_its_files_and_resumes(data_root, tmp_path, capfd):
  # The fast tier's end-to-end run: the main command as a user types it.
  args = ["--epochs=1", *helpers.TINY_FLAGS, f"--workdir={tmp_path}"]
  code, err = helpers.cli(capfd, "experiments.mnist", *args)
  assert code == 0, err[-3000:]
  assert "epoch 1/1  train ELBO" in err and "(KL " in err and "/2 active)" in err
  assert "Settings (all others at their defaults" in err and "--epochs=1 (flag)" in err
  assert "Compiling the training epoch" in err and "Unable to initialize backend" not in err
  assert err.rstrip().endswith("s  done")  # the last epoch: no time left to say
  for name in ("config.json", "metrics.jsonl", "metrics.csv", "log.txt", "samples.png",
               "manifold.png"):
    assert (tmp_path / name).is_file(), name
  code, err = helpers.cli(capfd, "experiments.mnist", *args[1:], "--epochs=2")
  assert code == 0 and "Resuming from the checkpoint of epoch 1" in err, err[-3000:]
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["epoch"] for r in records] == [1, 2]
  table = list(csv.DictReader(open(tmp_path / "metrics.csv")))
  assert [float(r["test_elbo"]) for r in table] == [r["test_elbo"] for r in records]
  # --summarize on the run (no sweep): its row.
  code, err = helpers.cli(capfd, "experiments.mnist", *args[1:], "--summarize")
  assert code == 0 and "| epochs | test_elbo |" in err and "| 2 | " in err, err[-2000:]
  # A finished run given another learning rate trains nothing and keeps its record.
  code, err = helpers.cli(capfd, "experiments.mnist", *args[1:], "--epochs=2",
                          "--learning_rate=3e-4")
  assert code == 0 and "learning_rate=0.0003 trained nothing" in err, err[-3000:]
  assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 1e-3


@pytest.mark.slow
def test_a_sweep_over_two_settings_trains_its_grid_shards_skips_and_sums_up(data_root, tmp_path,
                                                                           capfd):
  """--sweep=beta=0.5,1 --sweep=latent_dim=2,3: four runs in their own folders and a
  four-row summary; --shard=1/2 trains only its two; finished points are skipped; the
  summary names what is not finished and --summarize rebuilds it from the points."""
  grid = ["--sweep=beta=0.5,1", "--sweep=latent_dim=2,3", f"--workdir={tmp_path}"]
  names = ["beta=0.5,latent_dim=2", "beta=0.5,latent_dim=3", "beta=1.0,latent_dim=2",
           "beta=1.0,latent_dim=3"]
  out = in_process(capfd, "experiments.mnist", *TINY, *grid, "--shard=1/2")
  assert out.returncode == 0, out.stderr[-3000:]
  assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [names[1], names[3]]
  rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
  assert [(r["beta"], r["latent_dim"], r["status"]) for r in rows] == [
      ("0.5", "2", "not started"), ("0.5", "3", "done"), ("1.0", "2", "not started"),
      ("1.0", "3", "done")]
  assert "Not finished: beta=0.5,latent_dim=2, beta=1.0,latent_dim=2" in out.stderr
  out = in_process(capfd, "experiments.mnist", *TINY, *grid)  # the rest; two skipped
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.count("is finished; skipped") == 2 and out.stderr.count("epoch 1/1") == 2
  rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
  assert [r["status"] for r in rows] == ["done"] * 4
  assert all(float(r["test_elbo"]) < 0 and int(r["active_units"]) <= int(r["latent_dim"])
             for r in rows)
  for name, r in zip(names, rows):
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert (config["beta"], config["latent_dim"]) == (float(r["beta"]), int(r["latent_dim"]))
  assert (tmp_path / "summary.md").read_text().startswith("| beta | latent_dim | epochs |")
  (tmp_path / "summary.md").unlink()
  out = in_process(capfd, "experiments.mnist", *TINY, *grid, "--summarize")
  assert out.returncode == 0 and "epoch 1/" not in out.stderr
  assert (tmp_path / "summary.md").is_file()


@pytest.mark.slow
@pytest.mark.system
def test_a_sweep_over_beta_or_the_learning_rate_compiles_the_training_epoch_once(data_root,
                                                                                tmp_path):
  """beta and the learning rate are inputs of the compiled epoch: a fresh compilation
  cache holds one training epoch after a sweep over both, 3 x 2 points (a cache entry
  per program compiled)."""
  cache = tmp_path / "xla"
  out = run("experiments.mnist", *TINY, "--sweep=beta=0.5,1,2",
            "--sweep=learning_rate=1e-3,3e-4", f"--compilation_cache={cache}",
            f"--workdir={tmp_path / 'grid'}", data_root=data_root)
  assert out.returncode == 0 and out.stderr.count("epoch 1/1") == 6, out.stderr[-3000:]
  epochs = [p.name for p in cache.glob("jit_epoch_fn-*-cache")]
  assert len(epochs) == 1, sorted(p.name for p in cache.iterdir())


@pytest.mark.slow
def test_latent_dims_is_the_sweep_over_latent_dim_with_its_plot(data_root, tmp_path, capfd):
  out = in_process(capfd, "experiments.mnist", *TINY, "--latent_dims=2,3", f"--workdir={tmp_path}",
                   "--L=2")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
  assert [r["latent_dim"] for r in rows] == ["2", "3"]
  assert all(float(r["test_elbo"]) < 0 for r in rows)
  assert (tmp_path / "latent_dim=2" / "manifold.png").exists()
  assert (tmp_path / "summary.png").stat().st_size > 0  # one axis: each figure against it
  again = in_process(capfd, "experiments.mnist", *TINY, "--epochs=2", "--latent_dims=2", "--L=2",
                     f"--workdir={tmp_path}")
  assert "Resuming from the checkpoint of epoch 1" in again.stderr, again.stderr[-2000:]
  assert "epoch 2/2" in again.stderr


@pytest.mark.parametrize("flag,words", [
    ("--L=0", "--L=0: must be >= 1"),
    ("--latent_dim=0", "--latent_dim=0: must be >= 1"),
    ("--estimator=exact", "--estimator=exact: expected one of ['analytic', 'monte_carlo']"),
    ("--binarize=sometimes", "--binarize"),
    ("--learning_rate=-1", "--learning_rate=-1.0: must be > 0"),
    ("--learning_rate=inf", "--learning_rate=inf: must be a finite number"),
    ("--beta=nan", "--beta=nan: must be a finite number"),
    ("--latent_dims=2,five", "--latent_dims=2,five: must be a comma-separated list of integers"),
    ("--latent_dims=2,2", "--latent_dims=2,2: lists a value twice"),
    ("--sweep=beta=0.5,x", "--sweep=beta=0.5,x: 'x' is not a value of beta (a float)"),
    ("--sweep=colour=1,2", "colour is not a setting of a run; sweep one of"),
    ("--sweep=latent_dim=2,0", "latent_dim=0: must be >= 1"),
    ("--sweep=beta", "expected SETTING=V1,V2,..."),
    ("--shard=2/2", "--shard=2/2: needs 0 <= I < N"),
    ("--shard=1/2", "--shard=1/2: shares out a sweep's points, and there is no sweep"),
    ("--sweep=data_path=../../x,y", "--dataset=mnist ignores --data_path (only npz and folder"),
    ("--hidden_sizes=0", "--hidden_sizes=0: must be >= 1"),
    ("--seed=-1", "--seed=-1: must be >= 0"),
    ("--seed=9223372036854775808", "--seed=9223372036854775808: must be <= "),
    ("--batch_size=100000", "--batch_size=100000: larger than the 512"),
    ("--preset=nope", "--preset=nope: not one of the 19 choices (--list_presets lists them)"),
    ("--preset=burda_2016_fst", "did you mean burda_2016_fast? (--list_presets lists them)"),
    ("--lr=3e-4", "--lr: no such flag; did you mean --learning_rate? (--help lists every flag)"),
    ("--bs=32", "--bs: no such flag; did you mean --batch_size?"),
    ("--z_dim=5", "did you mean --latent_dim?"),
    ("--latent_size=5", "did you mean --latent_dim?"),
    ("--dataset=cifar10", "--dataset=cifar10: not built in; TensorFlow Datasets has it: "
                          "--dataset=tfds --tfds_name=cifar10"),
    ("--dataset=mnst", "expected one of ['mnist', 'frey_face', 'npz', 'folder', 'tfds']; did "
                       "you mean mnist?"),
    ("extra", "unexpected arguments: ['extra']"),
])
def test_bad_flags_get_one_clear_line(flag, words, data_root, tmp_path, capfd):
  code, err = helpers.cli(capfd, "experiments.mnist", *TINY, flag, f"--workdir={tmp_path / 'w'}")
  lines = err.strip().splitlines()
  assert code == 1 and lines[-1].startswith("error: ") and words in lines[-1], err[-2000:]
  assert "Traceback" not in err
  assert not (tmp_path / "w" / "checkpoints").exists()
  assert not (tmp_path / "w" / "config.json").exists()


def test_workdir_that_is_a_file_and_missing_data(data_root, tmp_path, capfd):
  (tmp_path / "f").write_text("")
  code, err = helpers.cli(capfd, "experiments.mnist", *TINY, f"--workdir={tmp_path / 'f'}")
  assert code == 1 and "is a file, not a directory" in err.splitlines()[-1]
  code, err = helpers.cli(capfd, "experiments.mnist", *TINY, f"--data_dir={tmp_path / 'empty'}",
                          "--nodownload", f"--workdir={tmp_path / 'w'}")
  assert code == 1 and "Traceback" not in err
  line = err.strip().splitlines()[-1]
  assert str(tmp_path / "empty") in line and "--download" in line and "tfds" in line


@pytest.mark.slow
def test_frey_face_and_figure2(frey_root, tmp_path, capfd):
  out = in_process(capfd, "experiments.figure2", "--dataset=frey_face", "--epochs=2", "--latent_dims=2,3",
            "--train_examples=400", "--hidden_sizes=32", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "figure2_frey_face.png").stat().st_size > 0
  assert (tmp_path / "latent_dim=2" / "manifold.png").exists()
  config = (tmp_path / "latent_dim=3" / "config.json").read_text()
  assert '"likelihood": "gaussian_sigmoid_mean"' in config and '"optimizer": "adagrad"' in config
  out = in_process(capfd, "experiments.frey_face", "--epochs=1", "--train_examples=300", "--hidden_sizes=16",
            f"--workdir={tmp_path / 'frey'}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "frey" / "manifold.png").exists()


@pytest.mark.slow
def test_evaluate_and_gradient_variance(data_root, tmp_path, capfd, monkeypatch):
  common = ["--test_examples=100", f"--workdir={tmp_path}"]
  out = in_process(capfd, "experiments.gradient_variance", *TINY, f"--workdir={tmp_path}",
                   "--Ls=1,4", "--repeats=5", "--minibatch=10")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads((tmp_path / "gradient_variance.json").read_text())["rows"]
  assert [r["L"] for r in rows] == [1, 4]
  assert all(r["variance_ratio"] > 1 for r in rows)
  assert (tmp_path / "gradient_variance.png").exists()
  out = in_process(capfd, "experiments.evaluate", *common, "--k=20", "--large_L=5")
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "evaluation.json").read_text())
  assert result["test_examples"] == 100 and result["epoch"] == 1
  assert result["log_px_k20"]["log_px"] > result["elbo_L5"]["elbo"] - 1.0
  assert "log p(x), k=20: 100/100 examples" in out.stderr
  tags = {v.tag for e in helpers.tensorboard_events(tmp_path / "tensorboard")
          for v in e.summary.value}
  assert {"eval/log_px_k20", "eval/elbo_L5", "eval/active_units"} <= tags, tags
  # AIS and BDMC add their figures beside the IWAE ones of the same epoch.
  ais_flags = ["--ais_examples=6", "--ais_intermediate=20", "--ais_chains=4", "--leapfrog_steps=2",
               "--ais_batch_size=4", "--k=20"]
  out = in_process(capfd, "experiments.evaluate", *common, "--method=ais", *ais_flags)
  assert out.returncode == 0, out.stderr[-3000:]
  assert ("AIS: 6 examples x 4 chains x 20 moves (and a pilot of 4 chains x 100 moves): about"
          in out.stderr)
  assert "an interruption keeps the batches finished, each of 4 examples and about" in out.stderr
  assert "with ais on the first 6 test images" in out.stderr
  # Memory: refused before any chain runs, naming this command's AIS flags.
  from vae_jax import memory  # pylint: disable=g-import-not-at-top
  with monkeypatch.context() as m:
    free = iter([2 ** 40])  # enough for the run's model (load_run's check), then 1000 bytes
    m.setattr(memory, "available_bytes", lambda: next(free, 1000))
    out = in_process(capfd, "experiments.evaluate", *common, "--method=ais", *ais_flags)
  assert out.returncode == 1 and "AIS: 6 examples" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].endswith(
      "GiB are free; lower --ais_batch_size or --ais_chains"), out.stderr[-2000:]
  out = in_process(capfd, "experiments.evaluate", *common, "--method=bdmc", *ais_flags)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "evaluation.json").read_text())
  assert result["log_px_k20"]["n"] == 100  # the IWAE figures are still there
  got = result["ais_from_prior"]
  assert got["n"] == 6 and got["num_intermediate"] == 20 and 0 < got["acceptance"] <= 1
  assert got["pilot_chains"] == 4
  assert got["iwae_k20_same_images"]["n"] == 6 and got["log_px"] < 0
  bdmc = result["bdmc"]
  assert bdmc["n"] == 6 and bdmc["gap"] == bdmc["upper"]["log_px"] - bdmc["lower"]["log_px"]
  usage = result["latent_usage"]
  assert len(usage["unit_variances"]) == len(usage["kl_per_dim"]) == 2
  assert 0 <= usage["active_units"] <= 2
  out = in_process(capfd, "experiments.evaluate", f"--workdir={tmp_path / 'nothing'}")
  assert out.returncode == 1 and "no config.json there" in out.stderr.splitlines()[-1]


@pytest.mark.slow
def test_an_interrupted_evaluation_resumes_only_its_own_checkpoints_blocks(
    reference_run, tiny_data, tmp_path, capfd, monkeypatch):
  """evaluation.partial.json names the checkpoint and the data it scored: copied beside
  another run of the same epoch, it is set aside with one line and that run's own
  figures are written."""
  from vae_jax import engine, runner  # pylint: disable=g-import-not-at-top
  a = helpers.copy_run(reference_run, tmp_path / "a")
  flags = ["--k=20", "--large_L=2", "--test_examples=100", "--block_size=50"]
  calls = []
  real = engine.run

  def stopped_after_a_block(job, x, **kwargs):
    stop = kwargs.pop("stop")
    return real(job, x, stop=lambda: len(calls) >= 1 or stop(),
                **{**kwargs, "on_block": lambda b: (calls.append(b), kwargs["on_block"](b))})
  with monkeypatch.context() as m:
    m.setattr(engine, "run", stopped_after_a_block)
    out = in_process(capfd, "experiments.evaluate", f"--workdir={a}", *flags)
  assert out.returncode == 130 and "the finished blocks are kept" in out.stderr, out.stderr[-2000:]
  kept = json.loads((a / "evaluation.partial.json").read_text())
  assert kept["blocks"]["log_px_k20"]["done"] == 50 and "checkpoint_sha256" in kept["settings"]
  b = tmp_path / "b"  # another model at the same epoch: another seed
  runner.train_and_evaluate(dataclasses.replace(helpers.TINY, seed=1), tiny_data, b)
  (b / "evaluation.partial.json").write_text((a / "evaluation.partial.json").read_text())
  out = in_process(capfd, "experiments.evaluate", f"--workdir={b}", *flags)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "kept by an evaluation with other checkpoint_sha256; starting afresh" in out.stderr
  assert "continuing after" not in out.stderr
  out = in_process(capfd, "experiments.evaluate", f"--workdir={a}", *flags)  # its own: resumes
  assert out.returncode == 0 and "continuing after the 50 examples" in out.stderr
  whole = helpers.copy_run(reference_run, tmp_path / "whole")
  assert in_process(capfd, "experiments.evaluate", f"--workdir={whole}", *flags).returncode == 0
  got, want = (json.loads((w / "evaluation.json").read_text())["log_px_k20"]
               for w in (a, whole))
  assert got["log_px"] == pytest.approx(want["log_px"], rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("flags,key", [
    (["--objective=iwae", "--k=5"], "train_iwae_bound"),
    (["--objective=iwae", "--k=5", "--iwae_gradient=dreg"], "train_iwae_bound"),
    (["--beta=0.5"], "train_beta"),
    (["--kl_warmup_epochs=10"], "train_beta"),
    (["--likelihood=continuous_bernoulli", "--binarize=none"], "train_elbo"),
])
def test_objectives_and_likelihoods_train_and_evaluate(flags, key, data_root, tmp_path, capfd):
  out = in_process(capfd, "experiments.mnist", *TINY, "--epochs=2", *flags, f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert key in records[-1] and records[-1]["test_elbo"] > records[0]["test_elbo"] - 1.0
  if "--beta=0.5" in flags:
    assert records[-1]["train_beta"] == 0.5
    assert records[-1]["train_objective"] == pytest.approx(
        records[-1]["train_reconstruction"] - 0.5 * records[-1]["train_kl"], rel=1e-5)
  if "--kl_warmup_epochs=10" in flags:
    # Mean of beta over epoch 2's steps s = 8..15 of 80: (8 + ... + 15) / 8 / 80.
    assert records[-1]["train_beta"] == pytest.approx(11.5 / 80, rel=1e-5)
  ev = in_process(capfd, "experiments.evaluate", f"--workdir={tmp_path}", "--k=20", "--large_L=3",
           "--test_examples=200")
  assert ev.returncode == 0, ev.stderr[-3000:]
  result = json.loads((tmp_path / "evaluation.json").read_text())
  # The k = 20 bound lies above the L = 1 ELBO (up to Monte Carlo noise).
  assert result["log_px_k20"]["log_px"] > result["elbo_L1"]["elbo"] - 0.5


@pytest.mark.slow
@pytest.mark.parametrize("flags", [
    ["--posterior=iaf", "--flow_steps=2", "--flow_hidden=16", "--prior=vamp",
     "--pseudo_inputs=10"],
    ["--posterior=planar", "--flow_steps=2"],
])
def test_flows_and_the_vamp_prior_train_resume_evaluate_and_draw(flags, data_root, tmp_path,
                                                                  capfd):
  args = [*TINY, "--latent_dim=4", *flags, f"--workdir={tmp_path}"]
  out = in_process(capfd, "experiments.mnist", *args)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.count("its KL has no closed form, so the ELBO uses estimator=monte_carlo") == 1
  out = in_process(capfd, "experiments.mnist", *args, "--epochs=2")  # resumes from epoch 1
  assert out.returncode == 0, out.stderr[-3000:]
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records] == [1, 2] and records[1]["step"] == 16
  assert records[1]["test_elbo"] > records[0]["test_elbo"]
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["estimator"] == "monte_carlo" and config["posterior"] == flags[0].split("=")[1]
  assert (tmp_path / "samples.png").stat().st_size > 0  # drawn from the (Vamp) prior
  ais = ["--method=ais", "--ais_start=posterior", "--ais_examples=4", "--ais_intermediate=10",
         "--ais_chains=2", "--leapfrog_steps=2", "--ais_batch_size=4", "--k=20",
         "--test_examples=100"]
  out = in_process(capfd, "experiments.evaluate", f"--workdir={tmp_path}", *ais)
  if "--posterior=planar" in flags:  # AIS from q needs q's density away from its draws
    assert out.returncode == 1
    assert "a planar flow has no closed-form inverse" in out.stderr.splitlines()[-1]
    assert "use --ais_start=prior" in out.stderr.splitlines()[-1]
    return
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads((tmp_path / "evaluation.json").read_text())["ais_from_posterior"]
  assert got["n"] == 4 and got["log_px"] < 0 and 0 < got["acceptance"] <= 1


def _colour_folder(root):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  root.mkdir()
  for i in range(60):
    Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(root / f"{i}.png")


@pytest.mark.slow
@pytest.mark.parametrize("source", ["npz_conv", "folder_conv", "mnist_two_layer"])
def test_general_entry_point_trains_and_evaluates_each_source_and_model(source, data_root,
                                                                      tmp_path, capfd):
  import numpy as np  # pylint: disable=g-import-not-at-top
  if source == "npz_conv":
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", train=rng.integers(0, 256, (256, 28, 28), dtype=np.uint8),
             test=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8))
    flags = ["--dataset=npz", f"--data_path={tmp_path / 'd.npz'}", "--model=conv"]
  elif source == "folder_conv":
    _colour_folder(tmp_path / "imgs")
    flags = ["--dataset=folder", f"--data_path={tmp_path / 'imgs'}", "--image_size=8",
             "--model=conv", "--binarize=none", "--likelihood=discretized_logistic"]
  else:
    flags = ["--model=two_layer", "--latent_dim=4",
             "--train_examples=512", "--test_examples=100"]
  w = tmp_path / "w"
  out = in_process(capfd, "experiments.train", *flags, "--epochs=2", "--batch_size=32", f"--workdir={w}")
  assert out.returncode == 0, out.stderr[-3000:]
  if source == "mnist_two_layer":  # its KL has no closed form: estimator A, said once
    assert out.stderr.count("its KL has no closed form, so the ELBO uses estimator=monte_carlo") == 1
    assert json.loads((w / "config.json").read_text())["estimator"] == "monte_carlo"
  records = [json.loads(l) for l in (w / "metrics.jsonl").read_text().splitlines()]
  assert len(records) == 2 and np.isfinite(records[-1]["test_elbo"])
  assert (w / "samples.png").is_file()
  ev = in_process(capfd, "experiments.evaluate", f"--workdir={w}", "--k=10", "--large_L=2",
           "--test_examples=40")
  assert ev.returncode == 0, ev.stderr[-3000:]
  result = json.loads((w / "evaluation.json").read_text())
  assert result["log_px_k10"]["log_px"] > result["elbo_L1"]["elbo"] - 1.0


@pytest.mark.parametrize("flags,message", [
    (["--dataset=npz"], "--dataset=npz needs --data_path=FILE.npz"),
    (["--dataset=tfds"], "--dataset=tfds needs --tfds_name"),
    (["--workdir="], "--workdir='': empty"),
    (["--prng=nope"], "--prng=nope: expected one of ['threefry2x32', 'philox4x32', 'rbg', "),
    (["--model=big"], "--model='big': expected one of"),
    (["--model=no_such_module:build"], "No module named 'no_such_module'"),
    (["--conditional", "--dataset=frey_face"], "--conditional: the training set has no labels"),
    (["--conditional", "--prior=vamp"], "the conditional VAE is built for --model=mlp or conv "
                                        "with --prior=normal"),
    (["--conditional", "--model=examples.nnx_vae:build"], "builder takes no num_classes"),
])
def test_general_entry_point_bad_settings_get_one_line(flags, message, data_root, tmp_path,
                                                       capfd):
  code, err = helpers.cli(capfd, "experiments.train", "--epochs=1", "--train_examples=256",
                          "--test_examples=64", "--batch_size=32", f"--workdir={tmp_path / 'w'}",
                          *flags)
  assert code == 1 and message in err.splitlines()[-1], err[-2000:]


@pytest.mark.slow
def test_frey_face_fits_the_conv_model(frey_root, tmp_path, capfd):
  code, err = helpers.cli(capfd, "experiments.train", "--model=conv", "--dataset=frey_face",
                          "--epochs=1", "--train_examples=256", "--test_examples=64",
                          "--batch_size=32", f"--workdir={tmp_path / 'b'}")
  assert code == 0, err[-2000:]  # Frey Face (28x20) fits the conv model


@pytest.mark.slow  # the line's text from a record: test_recipe.py
def test_log_line_names_what_it_shows(data_root, tmp_path, capfd):
  # beta != 1: the ELBO and, beside it, the objective trained on, by name.
  code, err = helpers.cli(capfd, "experiments.mnist", *TINY, "--beta=0.5",
                          f"--workdir={tmp_path}")
  assert code == 0, err[-2000:]
  record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
  line = next(l for l in err.splitlines() if "epoch 1/1" in l)
  assert f"train ELBO {record['train_elbo']:.2f} (objective {record['train_objective']:.2f}, " \
         f"beta 0.5)" in line, line


def test_library_errors_are_shown_as_the_flags_typed():
  # The library names its arguments; the command line shows the flag each came from.
  from absl import flags  # pylint: disable=g-import-not-at-top
  from experiments import cli, errors, sweep  # pylint: disable=g-import-not-at-top
  entry = sweep.entry()
  fv = flags.FlagValues()
  for cls in entry.schemas.values():
    cli.define(fv, cls)
  renames = cli.flag_renames(entry)
  assert renames["num_samples"] == "L" and renames["iwae_samples"] == "k"
  cases = {
      "batch_size=4096: larger than the 2048 training images":
          "--batch_size=4096: larger than the 2048 training images",
      "needs 3 GiB (num_samples=100000, batch_size=128); lower num_samples or batch_size":
          "needs 3 GiB (--L=100000, --batch_size=128); lower --L or --batch_size",
      "workdir=/tmp/a_b holds a run with other settings; use another workdir, or fresh=True":
          "--workdir=/tmp/a_b holds a run with other settings; use another --workdir, or --fresh",
      "the model's seed and the workdir of a run": "the model's seed and the workdir of a run",
  }
  for library, shown in cases.items():
    assert errors.as_flags(library, fv, renames) == shown
  from experiments import evaluate  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  for cls in evaluate.ENTRY.schemas.values():
    cli.define(fv, cls)
  assert (errors.as_flags("lower chunk_size or batch_size", fv, cli.flag_renames(evaluate.ENTRY))
          == "lower --chunk_size or --iwae_batch_size")
  run_record = "runs/a/config.json: batch_size=0: must be >= 1; repair or delete it"
  assert errors.as_flags(run_record, fv, cli.flag_renames(evaluate.ENTRY)) == run_record


@pytest.mark.slow
def test_table1_trains_each_row_for_the_budget_and_scores_it(data_root, tmp_path, capfd):
  out = in_process(capfd, "experiments.table1", "--rows=vae_1layer,iwae_1layer", "--minutes=0.02",
            "--train_examples=1000", "--test_examples=100", "--eval_k=50",
            f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads((tmp_path / "table1.json").read_text())
  assert [r["row"] for r in rows] == ["vae_1layer", "iwae_1layer"]
  for r in rows:
    probe = [json.loads(l) for l in open(tmp_path / r["row"] / "probe" / "metrics.jsonl")]
    # The budget over the faster of the probe's epochs 2 and 3 (the first compiles).
    assert [m["epoch"] for m in probe] == [1, 2, 3]
    assert r["epochs"] == max(2, int(0.02 * 60 / min(m["epoch_s"] for m in probe[1:])))
    run_metrics = [json.loads(l) for l in open(tmp_path / r["row"] / "run" / "metrics.jsonl")]
    assert run_metrics[-1]["epoch"] == r["epochs"]
    assert r["eval_examples"] == 100 and r["log_px"] > r["test_elbo"] - 1.0
  table = (tmp_path / "table1.md").read_text()
  assert "| vae_1layer |" in table and "| iwae_1layer |" in table


def test_curves_mark_a_scored_runs_log_px_and_take_points_and_targets(tmp_path, capfd):
  """experiments.curves: a run with an evaluation.json of its last epoch gets its log p(x)
  (the largest k) as a star; --points and --targets are parsed; bad ones say which."""
  from experiments import curves  # pylint: disable=g-import-not-at-top
  run = tmp_path / "run"
  run.mkdir()
  records = [{"epoch": e, "wall_s": 30.0 * e, "test_elbo": -100 + 3 * e ** 0.5}
             for e in range(1, 11)]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  (run / "evaluation.json").write_text(json.dumps(
      {"epoch": 10, "log_px_k50": {"log_px": -95.0, "n": 100},
       "log_px_k5000": {"log_px": -94.0, "n": 10000}}))
  assert curves._final_log_px(run, records) == (5.0, -94.0, "k=5000, 10000 images")
  (run / "evaluation.json").write_text(json.dumps({"epoch": 9, "log_px_k50": {"log_px": -9}}))
  assert curves._final_log_px(run, records) is None  # another epoch's
  out = tmp_path / "c.png"
  code, _ = helpers.cli(capfd, "experiments.curves", f"--runs=mine={run}",
                        "--points=earlier=43.9:-86.70", "--targets=paper=-86.76",
                        f"--out={out}")
  assert code == 0 and out.stat().st_size > 0
  code, err = helpers.cli(capfd, "experiments.curves", f"--runs=mine={run}",
                          "--points=earlier=43.9", f"--out={out}")
  assert code == 1 and "points: '43.9': expected 2 number(s)" in err.splitlines()[-1]
  # Any label, a workdir whose name holds "=" (a sweep point's), or none: the folder's
  # name; the PNG beside the runs.
  point = tmp_path / "beta=0.5"
  run.rename(point)
  code, err = helpers.cli(capfd, "experiments.curves", f"--runs=beta = 1/2 (a=b)={point},{point}")
  assert code == 0, err[-2000:]
  assert (tmp_path / "curves.png").stat().st_size > 0 and f"Wrote {tmp_path / 'curves.png'}" in err
  assert curves._run(f"a=b={point}") == ("a=b", point) and curves._run(str(point))[0] == "beta=0.5"
  code, err = helpers.cli(capfd, "experiments.curves", "--runs=mine=nowhere")
  assert code == 1 and "'mine=nowhere' names no folder" in err.splitlines()[-1]


@pytest.mark.slow
def test_seeds_from_the_command_line_train_and_evaluate_every_replica(data_root, tmp_path, capfd):
  out = in_process(capfd, "experiments.mnist", *TINY, "--seeds=2", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "s.d. over 2 seeds " in out.stderr
  last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
  assert len(last["replicas"]) == 2 and "test_elbo_sd" in last
  out = in_process(capfd, "experiments.evaluate", f"--workdir={tmp_path}", "--k=20",
                   "--large_L=2", "--test_examples=100")
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "evaluation.json").read_text())
  ll = result["log_px_k20"]
  per_seed = [r["log_px"] for r in ll["replicas"]]
  assert len(per_seed) == 2 and ll["log_px"] == pytest.approx(sum(per_seed) / 2, rel=1e-9)
  assert ll["log_px_sd"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5, rel=1e-6)
  assert "log_px_k20 over 2 seeds: log p(x)" in out.stderr


@pytest.mark.slow
def test_conditional_trains_draws_a_row_per_digit_and_evaluates_log_p_x_given_y(
    data_root, tmp_path, capfd):
  """--conditional: the run records its ten classes, samples.png (and TensorBoard's grid)
  has a row per digit, and experiments.evaluate scores log p(x|y); BDMC, which simulates
  x from p(x|z), is refused with one line."""
  out = in_process(capfd, "experiments.mnist", *TINY, "--conditional", "--latent_dim=2",
                   f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["conditional"] is True and config["data"]["num_classes"] == 10
  grids = {v.tag: v.image for e in helpers.tensorboard_events(tmp_path / "tensorboard")
           for v in e.summary.value if v.HasField("image")}
  assert grids["samples"].height == 10 * 29 + 1  # ten rows of 28-pixel digits and gaps
  # A 2-d z draws no manifold: its decoder needs a class.
  assert (tmp_path / "samples.png").is_file() and not (tmp_path / "manifold.png").exists()
  out = in_process(capfd, "experiments.evaluate", f"--workdir={tmp_path}", "--k=20",
                   "--large_L=2", "--test_examples=100")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "test log p(x|y) ~" in out.stderr and "log p(x|y), k=20: 100/100 examples" in out.stderr
  result = json.loads((tmp_path / "evaluation.json").read_text())
  assert result["bound_of"] == "log p(x|y)"
  assert result["log_px_k20"]["log_px"] > result["elbo_L1"]["elbo"] - 1.0
  out = in_process(capfd, "experiments.evaluate", f"--workdir={tmp_path}", "--method=bdmc")
  assert out.returncode == 1 and "--method=bdmc: simulates data" in out.stderr.splitlines()[-1]
