"""Trains the paper's Frey Face VAE: 560-200-Z, tanh, Gaussian decoder with learned variance.

  python -m experiments.frey_face                   # Z = 2: the face manifold of Figure 4
  python -m experiments.frey_face --latent_dims=2,5,10,20 --workdir=runs/frey_sweep

The data is `frey_rawface.mat` in --data_dir (default $VAE_JAX_DATA/frey): 1,965
frames scaled to [0, 1]; 200 frames drawn with a constant key are the held-out
test set (the same split for every run). Bounds are log-densities of continuous data: positive numbers are
normal here.
"""

from absl import flags

from experiments import common

flags.adopt_module_key_flags(common)

flags.set_default(common.WORKDIR, "runs/frey_face")
flags.set_default(common.LATENT_DIM, 2)
flags.set_default(common.HIDDEN_SIZES, ["200"])
flags.set_default(common.ACTIVATION, "tanh")
flags.set_default(common.BATCH_SIZE, 100)
flags.set_default(common.EPOCHS, 300)
flags.set_default(common.EVAL_BATCH_SIZE, 200)
flags.set_default(common.LIKELIHOOD, "gaussian_sigmoid_mean")
flags.set_default(common.DATASET, "frey_face")
flags.set_default(common.BINARIZE, "none")


if __name__ == "__main__":
  common.run(common.train_main)
