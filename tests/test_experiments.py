"""The command lines, run as a user runs them (in a subprocess)."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--epochs=1", "--train_examples=512", "--test_examples=200", "--hidden_sizes=32",
        "--batch_size=64"]


def run(module, *args, data_root=None):
  env = dict(os.environ)
  if data_root is not None:
    env["VAE_JAX_DATA"] = str(data_root)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_mnist_sweep_writes_a_summary(data_root, tmp_path):
  out = run("experiments.mnist", *TINY, "--latent_dims=2,3", f"--workdir={tmp_path}",
            "--L=2", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
  assert [r["latent_dim"] for r in rows] == ["2", "3"]
  assert all(float(r["test_elbo"]) < 0 for r in rows)
  assert (tmp_path / "summary.md").read_text().startswith("| latent_dim |")
  assert (tmp_path / "latent_2" / "manifold.png").exists()
  assert "epoch 1/1" in out.stderr
  again = run("experiments.mnist", *TINY, "--epochs=2", "--latent_dims=2", "--L=2",
              f"--workdir={tmp_path}", data_root=data_root)
  assert "Resuming from the checkpoint of epoch 1" in again.stderr, again.stderr[-2000:]
  assert "epoch 2/2" in again.stderr


@pytest.mark.parametrize("flag,words", [
    ("--L=0", "--L=0"),
    ("--latent_dim=0", "--latent_dim=0"),
    ("--estimator=exact", "--estimator"),
    ("--binarize=sometimes", "--binarize"),
    ("--learning_rate=-1", "--learning_rate must be > 0"),
    ("--latent_dims=2,five", "--latent_dims must be a comma-separated list"),
    ("--hidden_sizes=0", "--hidden_sizes must be"),
    ("--batch_size=100000", "--batch_size=100000: larger than the 512"),
])
def test_bad_flags_get_one_clear_line(flag, words, data_root, tmp_path):
  out = run("experiments.mnist", *TINY, flag, f"--workdir={tmp_path / 'w'}", data_root=data_root)
  assert out.returncode != 0
  assert words in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_workdir_that_is_a_file_and_missing_data(data_root, tmp_path):
  (tmp_path / "f").write_text("")
  out = run("experiments.mnist", *TINY, f"--workdir={tmp_path / 'f'}", data_root=data_root)
  assert out.returncode != 0 and "--workdir names a file" in out.stderr
  out = run("experiments.mnist", *TINY, f"--data_dir={tmp_path / 'empty'}", "--nodownload",
            f"--workdir={tmp_path / 'w'}")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  line = out.stderr.strip().splitlines()[-1]
  assert str(tmp_path / "empty") in line and "--download" in line and "tfds" in line


def test_frey_face_and_figure2(data_root, tmp_path):
  out = run("experiments.figure2", "--dataset=frey_face", "--epochs=2", "--latent_dims=2,3",
            "--train_examples=400", "--hidden_sizes=32", f"--workdir={tmp_path}",
            data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "figure2_frey_face.png").stat().st_size > 0
  assert (tmp_path / "latent_2" / "manifold.png").exists()
  config = (tmp_path / "latent_3" / "config.json").read_text()
  assert '"likelihood": "gaussian_sigmoid_mean"' in config and '"optimizer": "adagrad"' in config
  out = run("experiments.frey_face", "--epochs=1", "--train_examples=300", "--hidden_sizes=16",
            f"--workdir={tmp_path / 'frey'}", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "frey" / "manifold.png").exists()


def test_evaluate_and_gradient_variance(data_root, tmp_path):
  common = ["--train_examples=512", "--test_examples=100", f"--workdir={tmp_path}"]
  out = run("experiments.gradient_variance", *common, "--epochs=1", "--hidden_sizes=32",
            "--Ls=1,4", "--repeats=5", "--minibatch=10", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads((tmp_path / "gradient_variance.json").read_text())["rows"]
  assert [r["L"] for r in rows] == [1, 4]
  assert all(r["variance_ratio"] > 1 for r in rows)
  assert (tmp_path / "gradient_variance.png").exists()
  out = run("experiments.evaluate", *common, "--k=20", "--large_L=5", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "evaluation.json").read_text())
  assert result["test_examples"] == 100 and result["epoch"] == 1
  assert result["log_px_k20"]["log_px"] > result["elbo_L5"]["elbo"] - 1.0
  assert "log p(x), k=20: 100/100 examples" in out.stderr
  out = run("experiments.evaluate", f"--workdir={tmp_path / 'nothing'}", data_root=data_root)
  assert out.returncode == 1 and "no config.json there" in out.stderr.splitlines()[-1]


@pytest.mark.parametrize("flags,key", [
    (["--objective=iwae", "--k=5"], "train_iwae_bound"),
    (["--objective=iwae", "--k=5", "--iwae_gradient=dreg"], "train_iwae_bound"),
    (["--beta=0.5"], "train_beta"),
    (["--kl_warmup_epochs=10"], "train_beta"),
    (["--likelihood=continuous_bernoulli", "--binarize=none"], "train_elbo"),
])
def test_objectives_and_likelihoods_train_and_evaluate(flags, key, data_root, tmp_path):
  out = run("experiments.mnist", *TINY, "--epochs=2", *flags, f"--workdir={tmp_path}",
            data_root=data_root)
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
  ev = run("experiments.evaluate", f"--workdir={tmp_path}", "--k=20", "--large_L=3",
           "--test_examples=200", data_root=data_root)
  assert ev.returncode == 0, ev.stderr[-3000:]
  result = json.loads((tmp_path / "evaluation.json").read_text())
  # The k = 20 bound lies above the L = 1 ELBO (up to Monte Carlo noise).
  assert result["log_px_k20"]["log_px"] > result["elbo_L1"]["elbo"] - 0.5


def _colour_folder(root):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  root.mkdir()
  for i in range(60):
    Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(root / f"{i}.png")


@pytest.mark.parametrize("source", ["npz_conv", "folder_conv", "mnist_two_layer"])
def test_general_entry_point_trains_and_evaluates_each_source_and_model(source, data_root,
                                                                      tmp_path):
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
    flags = ["--model=two_layer", "--estimator=monte_carlo", "--latent_dim=4",
             "--train_examples=512", "--test_examples=100"]
  w = tmp_path / "w"
  out = run("experiments.train", *flags, "--epochs=2", "--batch_size=32", f"--workdir={w}",
            data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  records = [json.loads(l) for l in (w / "metrics.jsonl").read_text().splitlines()]
  assert len(records) == 2 and np.isfinite(records[-1]["test_elbo"])
  assert (w / "samples.png").is_file()
  ev = run("experiments.evaluate", f"--workdir={w}", "--k=10", "--large_L=2",
           "--test_examples=40", data_root=data_root)
  assert ev.returncode == 0, ev.stderr[-3000:]
  result = json.loads((w / "evaluation.json").read_text())
  assert result["log_px_k10"]["log_px"] > result["elbo_L1"]["elbo"] - 1.0


@pytest.mark.parametrize("flags,message", [
    (["--dataset=npz"], "--dataset=npz needs --data_path"),
    (["--dataset=tfds"], "--dataset=tfds needs --tfds_name"),
    (["--model=two_layer"], "--estimator=monte_carlo"),
    (["--model=conv", "--dataset=frey_face", "--hidden_sizes=8"], None),
    (["--workdir="], "--workdir is empty"),
    (["--prng=nope"], "--prng='nope': unrecognized PRNG implementation"),
])
def test_general_entry_point_bad_settings_get_one_line(flags, message, data_root, tmp_path):
  out = run("experiments.train", "--epochs=1", "--train_examples=256", "--test_examples=64",
            "--batch_size=32", f"--workdir={tmp_path / 'w'}", *flags, data_root=data_root)
  if message is None:  # Frey Face (28x20) fits the conv model: it trains
    assert out.returncode == 0, out.stderr[-2000:]
    return
  assert out.returncode == 1 and message in out.stderr.splitlines()[-1], out.stderr[-2000:]


def test_library_errors_are_shown_as_the_flags_typed():
  # The library names its arguments; the command line shows the flag each came from.
  from experiments import common, evaluate  # pylint: disable=g-import-not-at-top,unused-import
  cases = {
      "batch_size=4096: larger than the 2048 training images":
          "--batch_size=4096: larger than the 2048 training images",
      "needs 3 GiB (num_samples=100000, batch_size=128); lower num_samples or batch_size":
          "needs 3 GiB (--L=100000, --batch_size=128); lower --L or --batch_size",
      "workdir=/tmp/a_b holds a run with other settings; use another workdir, or fresh=True":
          "--workdir=/tmp/a_b holds a run with other settings; use another --workdir, or --fresh",
      "the model's seed and the workdir of a run": "the model's seed and the workdir of a run",
      "--workdir is empty": "--workdir is empty",
  }
  for library, shown in cases.items():
    assert common.as_flags(library) == shown
  assert (common.as_flags("lower chunk_size or batch_size", {"batch_size": "iwae_batch_size"})
          == "lower --chunk_size or --iwae_batch_size")


def test_table1_trains_each_row_for_the_budget_and_scores_it(data_root, tmp_path):
  out = run("experiments.table1", "--rows=vae_1layer,iwae_1layer", "--minutes=0.1",
            "--train_examples=1000", "--test_examples=100", "--eval_k=50",
            f"--workdir={tmp_path}", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads((tmp_path / "table1.json").read_text())
  assert [r["row"] for r in rows] == ["vae_1layer", "iwae_1layer"]
  for r in rows:
    probe = [json.loads(l) for l in open(tmp_path / r["row"] / "probe" / "metrics.jsonl")]
    # The budget over the faster of the probe's epochs 2 and 3 (the first compiles).
    assert [m["epoch"] for m in probe] == [1, 2, 3]
    assert r["epochs"] == max(2, int(0.1 * 60 / min(m["epoch_s"] for m in probe[1:])))
    run_metrics = [json.loads(l) for l in open(tmp_path / r["row"] / "run" / "metrics.jsonl")]
    assert run_metrics[-1]["epoch"] == r["epochs"]
    assert r["eval_examples"] == 100 and r["log_px"] > r["test_elbo"] - 1.0
  table = (tmp_path / "table1.md").read_text()
  assert "| vae_1layer |" in table and "| iwae_1layer |" in table
