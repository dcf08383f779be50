r"""Trains a VAE on MNIST.

  python -m experiments.mnist                       # PyTorch example's model, 10 epochs
  python -m experiments.mnist --L=5 --epochs=30
  python -m experiments.mnist --latent_dims=2,5,10,20,200 --workdir=runs/sweep
  python -m experiments.mnist --hidden_sizes=500 --activation=tanh --optimizer=adagrad \
      --learning_rate=0.02 --batch_size=100        # Kingma & Welling's setting
  python -m experiments.mnist --preset=burda_2016 --workdir=runs/burda
  python -m experiments.mnist --preset=burda_2016_fast --workdir=runs/burda_fast
  python -m experiments.evaluate --workdir=runs/burda_fast    # log p(x), k = 5000

burda_2016_fast answers for Burda et al.'s (2016) one-layer VAE row (784-200-200-50
tanh, ELBO with L = 1, dynamic binarization; they report -86.76 after 3,280 epochs):
batch 250, Adam 2e-3 with b2 = 0.95, 5 epochs of warm-up then a cosine decay over
1,200 epochs, evaluated every 10. Expected (README): test ELBO -90.1 and log p(x)
about -86.6 (k = 5000) after 1,200 epochs.

Defaults are the PyTorch example's (784-400-20, relu, batch 128, Adam 1e-3) with
dynamic binarization, so the bound is a true Bernoulli likelihood. Expected:
a test ELBO of about -102.9 nats after 10 epochs and -99.5 after 30 (README).
"""

from absl import app
from absl import flags

from experiments import common
from vae_jax import data as data_lib

flags.adopt_module_key_flags(common)

BINARIZE = flags.DEFINE_enum(
    "binarize", "dynamic", list(data_lib.BINARIZATIONS),
    "dynamic: a fresh Bernoulli draw of each pixel every time an image is used; fixed: one "
    "draw made once with a constant seed; none: grey levels (the PyTorch example's inputs, "
    "for which the Bernoulli bound is not a likelihood).")
PRESET = flags.DEFINE_enum(
    "preset", None, ["pytorch_example", "kingma_welling", "burda_2016", "burda_2016_fast"],
    "Set the architecture and optimizer of a reference (explicit flags still win): "
    "pytorch_example (the defaults); kingma_welling (500 tanh, Adagrad 0.02, batch 100); "
    "burda_2016 (200-200 tanh, 50 latent, batch 20, Adam with Burda's schedule, 3,280 epochs); "
    "burda_2016_fast (the same model, batch 250, Adam 2e-3 with b2 = 0.95, 5 epochs of warm-up "
    "and a cosine decay, 1,200 epochs, evaluated every 10).")
flags.set_default(common.WORKDIR, "runs/mnist")

PRESETS = {
    "pytorch_example": {},
    "kingma_welling": dict(hidden_sizes=["500"], activation="tanh", optimizer="adagrad",
                           learning_rate=0.02, batch_size=100),
    "burda_2016": dict(hidden_sizes=["200", "200"], activation="tanh", latent_dim=50,
                       batch_size=20, lr_schedule="burda", epochs=3280),
    "burda_2016_fast": dict(hidden_sizes=["200", "200"], activation="tanh", latent_dim=50,
                            batch_size=250, learning_rate=2e-3, adam_b2=0.95,
                            lr_schedule="warmup_cosine", warmup_epochs=5, epochs=1200,
                            eval_every=10),
}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup()
  common.apply_defaults(PRESETS.get(PRESET.value, {}))
  try:
    dataset = common.load_dataset("mnist")
    common.train_all(common.run_config(dataset="mnist", binarize=BINARIZE.value), dataset,
                     common.workdir())
  except common.USER_ERRORS as e:
    common.fail(str(e))


if __name__ == "__main__":
  app.run(main)
