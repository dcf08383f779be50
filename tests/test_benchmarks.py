"""The benchmarks run end to end in a tiny setting (their numbers are not tested)."""

import json

import pytest

from tests.test_experiments import run


pytestmark = pytest.mark.slow  # the benchmarks end to end

def test_throughput_and_evaluation_benchmarks_run(data_root, tmp_path):
  out = run("benchmarks.throughput", "--num_examples=2048", "--batch_sizes=128", "--Ls=1,2",
            "--repeats=1", f"--out={tmp_path / 't.json'}", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "t.json").read_text())
  assert result["matmul_ceiling_gflops"]["gflops"] > 0
  row = result["throughput"][0]
  assert row["scan_ex_per_s"] > 0 and 0 < row["fraction_of_ceiling"] < 1
  assert "PyTorch example" in out.stdout
  assert [r["L"] for r in result["L_scaling"]] == [1, 2]
  out = run("benchmarks.evaluation", "--num_examples=30", "--k=10", "--chunk_size=4",
            f"--out={tmp_path / 'e.json'}", data_root=data_root)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((tmp_path / "e.json").read_text())
  assert result["n"] == 30 and result["peak_memory_mb"] > 0 and result["log_px"] < 0
  before_after = result["matmul_ceiling_before_after_gflops"]
  assert len(before_after) == 2 and min(before_after) > 0
  assert result["matmul_ceiling_gflops"] == sum(before_after) / 2
