"""The research model written as a user would (examples/nnx_vae.py): its own command
trains it with checkpoints, resume, metrics and pictures, and `experiments.evaluate`
rebuilds it from config.json."""

import json

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # trains and evaluates for seconds


def test_the_nnx_example_trains_resumes_and_evaluates_through_the_runner(data_root, tmp_path,
                                                                        capfd):
  args = ["--train_examples=512", "--test_examples=100", "--hidden_sizes=32", "--latent_dim=3",
          "--batch_size=64", f"--workdir={tmp_path}"]
  code, err = helpers.cli(capfd, "examples.nnx_vae", *args, "--epochs=2")
  assert code == 0, err[-3000:]
  assert json.loads((tmp_path / "config.json").read_text())["model"] == "examples.nnx_vae:build"
  for name in ("samples.png", "reconstructions.png", "metrics.jsonl"):
    assert (tmp_path / name).is_file(), name
  code, err = helpers.cli(capfd, "examples.nnx_vae", *args, "--epochs=3")
  assert code == 0 and "Resuming from the checkpoint of epoch 2" in err, err[-3000:]
  records = helpers.run_metrics(tmp_path)
  assert [r["epoch"] for r in records] == [1, 2, 3]
  assert records[-1]["test_elbo"] > records[0]["test_elbo"]  # it learns
  evaluate = ["experiments.evaluate", f"--workdir={tmp_path}", "--k=50", "--large_L=3",
              "--test_examples=100"]
  # config.json names code: it is imported only when the command line names it too.
  code, err = helpers.cli(capfd, *evaluate)
  assert code == 1 and "pass --model=examples.nnx_vae:build" in err, err[-3000:]
  code, err = helpers.cli(capfd, *evaluate, "--model=examples.nnx_vae:build")
  assert code == 0, err[-3000:]
  result = json.loads((tmp_path / "evaluation.json").read_text())
  assert result["epoch"] == 3
  assert result["log_px_k50"]["log_px"] > result["elbo_L1"]["elbo"] - 1.0
