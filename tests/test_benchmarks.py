"""The benchmarks run end to end in a tiny setting (their numbers are not tested)."""

import json

import numpy as np
import pytest

from benchmarks import coverage
from tests.test_experiments import run


# The benchmarks end to end are slow system tests; their arithmetic is fast.
end_to_end = lambda f: pytest.mark.slow(pytest.mark.system(f))


def test_coverage_counts_the_intervals_that_hold_the_mean_of_the_estimates():
  """Estimates of a normal mean with their true error: about 95% covered; the same
  estimates with half the error: about 68% (the 1.96 s.e. interval is then 0.98 s.d.)."""
  est = np.random.default_rng(0).normal(-90.0, 0.05, 4000)
  right = coverage.coverage(est, np.full(4000, 0.05))
  assert abs(right["coverage"] - 0.95) < 0.015 and abs(right["spread"] - 0.05) < 0.003
  assert abs(right["truth"] + 90.0) < 4 * right["truth_stderr"]
  assert abs(coverage.coverage(est, np.full(4000, 0.025))["coverage"] - 0.673) < 0.03


@end_to_end
def test_the_evaluation_and_coverage_benchmarks_take_a_trained_run(
    reference_run, data_root, tmp_path):
  out = run("benchmarks.coverage", f"--workdir={reference_run}", "--keys=3", "--k=10",
            "--num_examples=5", f"--out={tmp_path / 'c.json'}", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "c.json").read_text())
  assert result["keys"] == 3 and result["num_examples"] == 5 and result["truth"] < 0
  out = run("benchmarks.evaluation", f"--workdir={reference_run}", "--num_examples=5", "--k=10",
            "--chunk_size=5", "--ceiling_sizes=256", f"--out={tmp_path / 'e.json'}",
            data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  scored = json.loads((tmp_path / "e.json").read_text())
  assert scored["n"] == 5 and scored["decoder_gflops"] > 0  # the run's MLP is counted

@end_to_end
def test_throughput_and_evaluation_benchmarks_run(data_root, tmp_path):
  out = run("benchmarks.throughput", "--num_examples=2048", "--batch_sizes=128", "--Ls=1,2",
            "--repeats=1", "--ceiling_sizes=1024", f"--out={tmp_path / 't.json'}", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "t.json").read_text())
  assert result["matmul_ceiling_gflops"]["gflops"] > 0
  row = result["throughput"][0]
  assert row["scan_ex_per_s"] > 0 and 0 < row["fraction_of_ceiling"] < 1
  assert "PyTorch example" in out.stdout
  assert [r["L"] for r in result["L_scaling"]] == [1, 2]
  out = run("benchmarks.evaluation", "--num_examples=30", "--k=10", "--chunk_size=4",
            "--ceiling_sizes=1024",
            f"--out={tmp_path / 'e.json'}", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "e.json").read_text())
  assert result["n"] == 30 and result["peak_memory_mb"] > 0 and result["log_px"] < 0
  before_after = result["matmul_ceiling_before_after_gflops"]
  assert len(before_after) == 2 and min(before_after) > 0
  assert result["matmul_ceiling_gflops"] == sum(before_after) / 2


@end_to_end
def test_device_benchmark_runs_every_part(data_root, tmp_path):
  """The GPU command at its CPU sizes: every part measured, none failed, the summary printed."""
  out = run("benchmarks.device", "--small", "--short_epochs=2", f"--out={tmp_path / 'd.json'}",
            data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "d.json").read_text())
  for part in ("matmul_ceiling", "throughput", "evaluation", "precision", "conv"):
    assert "error" not in result[part] and "skipped" not in result[part], result[part]
  assert result["matmul_ceiling"]["float32"]["tflops"] > 0
  assert [t["batch_size"] for t in result["throughput"]] == [20, 128, 1024]
  assert all(t["ours_ex_per_s"] > 0 and t["plain_jax_ex_per_s"] > 0 for t in result["throughput"])
  assert 0 < result["evaluation"]["fraction_of_float32_ceiling"] < 1
  precision = result["precision"]
  # Two epochs of training move both runs well above the untrained bound (about -543 nats).
  assert -400 < precision["float32"]["test_elbo"] < 0
  assert abs(precision["bfloat16"]["test_elbo"] - precision["float32"]["test_elbo"]) < 20
  fast = precision["fast_preset"]
  assert fast["projected_minutes"] * 60 >= 1200 * precision["float32"]["epoch_s"]
  assert result["conv"]["ex_per_s"] > 0
  assert "Projected time of --preset=burda_2016_fast" in out.stdout


@end_to_end
def test_seeds_benchmark_times_replicas_against_separate_runs(data_root, tmp_path):
  out = run("benchmarks.seeds", "--num_examples=2048", "--replicas=1,2", "--repeats=1",
            f"--out={tmp_path / 's.json'}", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads((tmp_path / "s.json").read_text())["rows"]
  assert [r["replicas"] for r in rows] == [1, 2]
  assert rows[0]["speedup"] == 1.0 and all(r["vmapped_epoch_s"] > 0 for r in rows)
  assert "replica-epochs per s" in out.stdout
