"""What an evaluation method is: the `Evaluator` protocol, the `Context` it scores, and
`Method`, the base its modules' classes share (big_vision's evaluators, as objects)."""

from typing import Any, Callable, ClassVar, NamedTuple, Protocol


class Context(NamedTuple):
  """What an evaluation method is given: the run and its test inputs."""
  config: Any  # the run's `RunConfig`
  model: Any  # init(key) and parts(params)
  params: Any
  x: Any  # `[n, ...]` the test set's model inputs
  key: Any  # the evaluation's key; example j of x uses fold_in(key, j)
  stop: Callable[[], bool]  # polled between compiled calls (True: stop)
  kept: Any  # `kept.Kept`: finished parts and interrupted sums (a rerun continues from them)


class Evaluator(Protocol):
  """One evaluation method, built once from every method's options and the run's
  config (`evaluators.build`) and used alike by `experiments.evaluate` (`run`) and,
  where `trains_along`, by the training loop (`during_training`)."""

  Options: ClassVar[type | None]  # its settings class (flags in experiments.evaluate)
  trains_along: ClassVar[bool]  # cheap enough to score a run every eval_every epochs

  def scope(self, n: int) -> str:
    """What it scores of n test images, for the first log line."""

  def run(self, ctx: Context) -> dict:
    """Its entries of evaluation.json."""

  def headline(self, result: dict) -> dict:
    """Their TensorBoard scalars (eval/...)."""

  def during_training(self) -> Callable[..., dict]:
    """(model, params, x, key) -> its metrics.jsonl entries (where `trains_along`)."""


class Method:
  """A method's defaults: its own options picked from every method's, the run's config,
  a scope of the whole test set, no scoring during training."""

  Options: ClassVar[type | None] = None
  trains_along: ClassVar[bool] = False

  def __init__(self, name: str, options: dict, config):
    """`options`: every method's Options instance by class (a method may use another's,
    as AIS uses the k-sample bound's); `config`: the run's RunConfig."""
    self.name, self.all_options, self.config = name, options, config
    self.options = None if self.Options is None else options.get(self.Options, self.Options())

  def scope(self, n: int) -> str:
    return f"{self.name} on all {n} test images"

  def during_training(self) -> Callable[..., dict]:
    raise NotImplementedError(f"method={self.name}: too slow to score a run during training")
