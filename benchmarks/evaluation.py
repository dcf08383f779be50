"""Time and peak memory of the k = 5000 log-likelihood of the 10,000 MNIST test images.

  python -m benchmarks.evaluation                         # the default model, random weights
  python -m benchmarks.evaluation --workdir=runs/mnist    # a trained run's weights

The cost does not depend on the weights. Peak memory is this process's peak
resident set (on the CPU the device's memory is the host's), measured before
and after, so the data set's own share can be told apart. The decoder's FLOP
rate (its matmuls, n * k passes) is set against the machine's float32 matmul
ceiling, measured in the same run just before and just after the evaluation
(their mean; large square `jnp.dot`s, the best of XLA's two CPU dot paths: see
`common.matmul_ceiling`). The evaluation runs as
`experiments.evaluate` runs it (`evaluate.marginal_log_likelihood`, with its
CPU compiler options). Writes --out (JSON).
"""

import jax
from absl import app
from absl import flags

from benchmarks import common
from vae_jax import data
from vae_jax import evaluate
from vae_jax import presets
from vae_jax import runner

K = flags.DEFINE_integer("k", 5000, "Importance samples per image.", lower_bound=1)
NUM = flags.DEFINE_integer("num_examples", 10000, "Test images.", lower_bound=1)
CHUNK = flags.DEFINE_integer("chunk_size", 500, "Samples evaluated at once.", lower_bound=1)
BATCH = flags.DEFINE_integer("batch_size", 20, "Images evaluated at once.", lower_bound=1)
WORKDIR = flags.DEFINE_string("workdir", None, "A training run to take the weights from.")
CEILING = flags.DEFINE_list("ceiling_sizes", ["1024", "2048", "3072"], "Square matmul "
                            "sizes of the ceiling (the best of them).")
OUT = flags.DEFINE_string("out", "runs/benchmarks/evaluation.json", "Where the JSON goes.")


def main(argv):
  del argv
  if WORKDIR.value:
    _, model, state, _ = runner.load_run(WORKDIR.value)
    params = state.params
  else:  # the PyTorch example's model as the main command builds it
    model = presets.pytorch_example().build_model((28, 28, 1))
    params = model.init(jax.random.key(0))
  mnist = data.load_mnist(data.default_data_root() / "mnist")
  x = data.model_inputs(mnist, "dynamic")[1][:NUM.value]  # the binarized test images
  # The ceiling on each side of the evaluation: the machine's speed drifts over minutes.
  ceilings = [common.matmul_ceiling(sizes=[int(n) for n in CEILING.value])["gflops"]]
  before = evaluate.peak_memory_mb()
  result = evaluate.marginal_log_likelihood(model.parts, params, x, jax.random.key(0), num_samples=K.value,
                                   chunk_size=CHUNK.value, batch_size=BATCH.value)
  result.update(peak_memory_mb=evaluate.peak_memory_mb(), memory_before_mb=before,
                model=type(model).__name__, chunk_size=CHUNK.value, batch_size=BATCH.value)
  per_sample = common.decoder_flops_per_sample(model)
  ceilings.append(common.matmul_ceiling(sizes=[int(n) for n in CEILING.value])["gflops"])
  ceiling = sum(ceilings) / 2
  rate = None if per_sample is None else per_sample * result["n"] * K.value / result["seconds"] / 1e9
  result.update(decoder_gflops=rate, matmul_ceiling_gflops=ceiling,
                matmul_ceiling_before_after_gflops=ceilings,
                ceiling_fraction=None if rate is None else rate / ceiling)
  print(common.table(["images", "k", "seconds", "peak memory (MB)", "before (MB)", "log p(x)",
                      "decoder GFLOP/s", "matmul ceiling GFLOP/s", "fraction"],
                     [[result["n"], K.value, result["seconds"], result["peak_memory_mb"],
                       before, result["log_px"], rate if rate is not None else "-", ceiling,
                       result["ceiling_fraction"] if rate is not None else "-"]]))
  common.write_json(OUT.value, result)


if __name__ == "__main__":
  app.run(main)
