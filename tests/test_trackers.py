"""The trackers as loop actions: MLflow and W&B runs read back through each library's
own API and files (settings, the per-epoch figures, a resume into the same tracked run,
the evaluation's figures, the pictures); a failing or missing tracker."""

import dataclasses
import json
import struct

import pytest

from tests import helpers
from vae_jax import runner
from vae_jax import trackers


def _train(tiny_data, workdir, tracker: str, epochs: int):
  config = dataclasses.replace(helpers.TINY, epochs=epochs, tracker=tracker)
  return runner.train_and_evaluate(config, tiny_data, workdir)


def _tracked_run_then_evaluated(tiny_data, tmp_path, capfd, tracker: str):
  """A run of 2 epochs, resumed to 3, then `experiments.evaluate`: its workdir and
  metrics.jsonl's records."""
  workdir = tmp_path / "runs" / "tiny"
  _train(tiny_data, workdir, tracker, 2)
  _train(tiny_data, workdir, tracker, 3)  # resumed: the same tracked run
  code, err = helpers.cli(capfd, "experiments.evaluate", f"--workdir={workdir}", "--k=10",
                          "--large_L=2", f"--test_examples={helpers.TINY_TEST}")
  assert code == 0, err[-3000:]
  assert "tracker" not in err, err[-3000:]  # no warning of a failed tracker
  return workdir, helpers.run_metrics(workdir)


@pytest.mark.slow  # three commands of the tiny shape
def test_an_mlflow_run_reads_back_with_settings_figures_evaluation_and_pictures(
    tiny_data, tmp_path, capfd):
  pytest.importorskip("mlflow", reason="the mlflow extra: pip install -e '.[mlflow]'")
  from mlflow.tracking import MlflowClient  # pylint: disable=g-import-not-at-top
  workdir, records = _tracked_run_then_evaluated(tiny_data, tmp_path, capfd, "mlflow")
  client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")  # the default store
  experiment = client.get_experiment_by_name("vae-jax")
  (run,) = client.search_runs([experiment.experiment_id])  # one tracked run, resumed
  assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
  assert json.loads(run.data.params["latent_dim"]) == helpers.TINY.latent_dim
  assert json.loads(run.data.params["hidden_sizes"]) == list(helpers.TINY.hidden_sizes)
  history = client.get_metric_history(run.info.run_id, "test_elbo")
  assert [m.step for m in history] == [r["epoch"] for r in records] == [1, 2, 3]
  assert [m.value for m in history] == pytest.approx([r["test_elbo"] for r in records])
  evaluation = json.loads((workdir / "evaluation.json").read_text())
  assert run.data.metrics["eval/log_px_k10"] == pytest.approx(
      evaluation["log_px_k10"]["log_px"])
  assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"samples.png",
                                                                        "reconstructions.png"}


def wandb_records(workdir) -> list:
  """Every record of the W&B offline runs under `workdir` (its `.wandb` files: W&B's
  own protobuf records in LevelDB's log format), in order."""
  from wandb.proto import wandb_internal_pb2 as pb  # pylint: disable=g-import-not-at-top
  out = []
  for path in sorted((workdir / "wandb").glob("offline-run-*/run-*.wandb")):
    data, pos, block = path.read_bytes(), 7, 32768  # a 7-byte header, then 32 KB blocks
    payload = b""
    while pos + 7 <= len(data):
      if block - pos % block < 7:  # a block's tail too short for a header is padding
        pos += block - pos % block
        continue
      length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
      payload += data[pos + 7:pos + 7 + length]
      pos += 7 + length
      if kind in (1, 4):  # a whole record, or a record's last fragment
        record = pb.Record()
        record.ParseFromString(payload)
        out.append(record)
        payload = b""
      elif kind == 0:
        break
  return out


@pytest.mark.slow  # three commands of the tiny shape
def test_a_wandb_offline_run_reads_back_with_settings_figures_and_evaluation(
    tiny_data, tmp_path, capfd, monkeypatch):
  pytest.importorskip("wandb", reason="the wandb extra: pip install -e '.[wandb]'")
  monkeypatch.delenv("WANDB_API_KEY", raising=False)  # offline: nothing leaves the machine
  monkeypatch.delenv("WANDB_MODE", raising=False)
  workdir, records = _tracked_run_then_evaluated(tiny_data, tmp_path, capfd, "wandb")
  kept = json.loads((workdir / "trackers.json").read_text())["wandb"]["id"]
  found = wandb_records(workdir)
  assert {r.run.run_id for r in found if r.WhichOneof("record_type") == "run"} == {kept}
  config = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for r in found for i in (
      r.config.update if r.WhichOneof("record_type") == "config" else
      r.run.config.update if r.WhichOneof("record_type") == "run" else ())}
  assert config["latent_dim"] == helpers.TINY.latent_dim
  rows = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
          for r in found if r.WhichOneof("record_type") == "history"]
  elbo = [row for row in rows if "test_elbo" in row]
  assert [row["_step"] for row in elbo] == [r["epoch"] for r in records] == [1, 2, 3]
  assert [row["test_elbo"] for row in elbo] == pytest.approx([r["test_elbo"] for r in records])
  evaluation = json.loads((workdir / "evaluation.json").read_text())
  assert [row["eval/log_px_k10"] for row in rows if "eval/log_px_k10" in row] == pytest.approx(
      [evaluation["log_px_k10"]["log_px"]])
  assert any(row.get("samples/_type") == "image-file" for row in rows)  # the pictures


class _Broken:
  """A tracker whose every call fails, as a server that went away would."""

  def __init__(self, workdir, kept, settings):
    self.state = {"id": "x"}

  def log(self, figures, step):
    raise ConnectionError("the tracking server went away")

  pictures = close = log


def test_a_failing_tracker_is_one_warning_and_the_run_goes_on(tiny_data, tmp_path, caplog,
                                                              monkeypatch):
  monkeypatch.setitem(trackers._KINDS, "mlflow", _Broken)
  monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: object())
  with caplog.at_level("WARNING"):
    _train(tiny_data, tmp_path, "mlflow", 2)
  lines = [r.getMessage() for r in caplog.records if "tracker" in r.getMessage()]
  assert lines == ["tracker mlflow: logging failed (ConnectionError: the tracking server went "
                   "away); the run goes on without it"]
  assert [r["epoch"] for r in helpers.run_metrics(tmp_path)] == [1, 2]


def test_a_tracker_not_installed_is_refused_before_the_run(tiny_data, tmp_path, monkeypatch):
  monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ValueError, match=r"tracker=wandb: wandb is not installed; pip install "
                                       r"-e \"\.\[wandb\]\""):
    _train(tiny_data, tmp_path / "w", "wandb", 1)
  assert not (tmp_path / "w").exists()
