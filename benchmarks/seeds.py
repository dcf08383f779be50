"""Seeds in one compiled program: an epoch of N replicas (`--seeds=N`, one vmapped
program) against N separate runs' epochs, side by side in one process.

  python -m benchmarks.seeds                        # about 3 minutes on 2 cores
  python -m benchmarks.seeds --replicas=1,4,16 --preset=pytorch_example

The model and optimizer are the preset's, on random binary images of MNIST's shape
(speed does not depend on the pixel values). For each N, the vmapped epoch and the N
single-seed epochs (the same program each, seeds 0..N-1) are timed interleaved, each
figure a median of --repeats after a compiling call. Writes --out (JSON) and prints a
Markdown table.
"""

import dataclasses
import platform

import jax

from benchmarks import common
from benchmarks.epochs import config_epoch, interleaved, random_images
from experiments import cli
from vae_jax import presets
from vae_jax import settings
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class SeedsOptions(settings.Settings):
  """What benchmarks.seeds times."""
  preset: str = setting("pytorch_example", "The preset whose model and optimizer are timed.",
                        choices=tuple(presets.PRESETS))
  replicas: tuple[int, ...] = setting((1, 4, 16), "Numbers of replicas N to time.", lower=1,
                                      nonempty=True)
  num_examples: int = setting(60000, "Examples per epoch.", lower=1024)
  repeats: int = setting(3, "Timed epochs per figure (median).", lower=1)
  out: str = setting("runs/benchmarks/seeds.json", "Where the JSON goes.")


def run_benchmark(ns) -> dict:
  opts = ns.seeds
  images = random_images(opts.num_examples)
  base = presets.get(opts.preset)
  rows = []
  for n in opts.replicas:
    together = config_epoch(dataclasses.replace(base, seeds=n), images) if n > 1 else None
    alone = [config_epoch(dataclasses.replace(base, seed=r, seeds=1), images)
             for r in range(n)]

    def separate():
      for run in alone:
        m = run()
      return m
    runs = {"separate": separate, **({"vmapped": together} if together else {})}
    timed = interleaved(runs, opts.repeats)
    sep = timed["separate"][1]
    vm = timed["vmapped"][1] if together else sep
    rows.append({"replicas": n, "vmapped_epoch_s": vm, "separate_epochs_s": sep,
                 "speedup": sep / vm, "replica_epochs_per_s": n / vm})
  result = {"machine": {"processor": platform.processor() or platform.machine(),
                        "platform": jax.local_devices()[0].platform, "jax": jax.__version__},
            "preset": opts.preset, "num_examples": opts.num_examples, "rows": rows}
  common.write_json(opts.out, result)
  print(common.table(["N", "vmapped epoch (s)", "N separate epochs (s)", "speedup",
                      "replica-epochs per s"],
                     [[r["replicas"], r["vmapped_epoch_s"], r["separate_epochs_s"], r["speedup"],
                       r["replica_epochs_per_s"]] for r in rows]))
  return result


ENTRY = cli.Entry(run_benchmark, {"seeds": SeedsOptions})


def main(argv: list[str] | None = None) -> int:
  return cli.main(ENTRY, argv)


if __name__ == "__main__":
  cli.run(main)
