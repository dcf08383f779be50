"""The evaluators' registry and what they keep, with fakes (nothing compiled): each
method's contract, the kept-results round trip, the figures over seeds."""

import json
import types

import pytest

from vae_jax import evaluators
from vae_jax.evaluators import base
from vae_jax import settings


@pytest.mark.parametrize("name", sorted(evaluators.EVALUATORS))
def test_every_method_is_an_evaluator_built_from_its_options_and_the_run(name):
  """Each class declares the whole protocol (nothing probed): its Options (valid
  defaults), whether it trains along, and builds with every method's options."""
  import vae_jax  # pylint: disable=g-import-not-at-top
  cls = evaluators.get(name)
  protocol = {m for m in dir(base.Evaluator) if not m.startswith("_")} | set(
      base.Evaluator.__annotations__)
  assert set(protocol) == {"Options", "trains_along", "scope", "run", "headline",
                           "during_training"}
  for member in protocol:
    assert member in dir(cls), member
  if cls.Options is not None:
    assert issubclass(cls.Options, settings.Settings) and cls.Options in evaluators.options_classes()
  options = {c: c() for c in evaluators.options_classes()}
  method = evaluators.build(name, options, vae_jax.RunConfig())
  assert method.options is (options[cls.Options] if cls.Options else None)
  assert method.scope(10000).startswith(name)
  assert (name in evaluators.DURING_TRAINING) == cls.trains_along
  if cls.trains_along:
    assert callable(method.during_training())
  else:
    with pytest.raises(NotImplementedError, match=f"method={name}: too slow"):
      method.during_training()


def test_an_unknown_method_is_one_line_naming_the_choices():
  with pytest.raises(ValueError, match=r"method=nope: expected one of \['elbo', 'iwae'"):
    evaluators.get("nope")
  assert evaluators.DURING_TRAINING[0] == "elbo"
  assert len(evaluators.options_classes()) == len(set(evaluators.options_classes()))


def test_during_training_merges_the_methods_figures(monkeypatch):
  def fake(figures):
    class Fake(base.Method):
      trains_along = True

      def during_training(self):
        return lambda model, params, x, key: figures
    return Fake
  monkeypatch.setitem(evaluators.EVALUATORS, "a", fake({"test_elbo": -1.0}))
  monkeypatch.setitem(evaluators.EVALUATORS, "b", fake({"active_units": 3}))
  fn = evaluators.during_training(["a", "b"], config=None)
  assert fn("model", "params", "x", "key") == {"test_elbo": -1.0, "active_units": 3}


def test_kept_results_round_trip_under_their_settings(tmp_path):
  path, same = tmp_path / "evaluation.partial.json", {"k": 5000, "epoch": 3}
  kept = evaluators.Kept(path, same)
  kept.on_block("iwae")({"done": 2000, "totals": {"log_px": -1.0}})
  kept.finish("elbo", {"elbo": -99.0})
  again = evaluators.Kept(path, same)
  assert again.done() == ["elbo"] and again.result("elbo") == {"elbo": -99.0}
  assert again.resume("iwae") == {"done": 2000, "totals": {"log_px": -1.0}}
  again.finish("iwae", {"log_px": -95.0})
  assert evaluators.Kept(path, same).resume("iwae") is None  # finished: its blocks go
  other = evaluators.Kept(path, {"k": 10, "epoch": 3})  # other settings: a fresh start
  assert other.done() == [] and other.resume("iwae") is None
  path.write_text("{not json")
  assert evaluators.Kept(path, same).done() == []  # damage: a fresh start
  kept.remove()
  assert not path.exists()


def test_a_scoped_view_prefixes_every_name(tmp_path):
  kept = evaluators.Kept(tmp_path / "p.json", {})
  view = kept.scoped("seed1/")
  view.finish("elbo", 1.0)
  view.on_block("iwae")({"done": 1})
  assert kept.result("seed1/elbo") == 1.0 and kept.resume("seed1/iwae") == {"done": 1}
  assert view.result("elbo") == 1.0 and view.resume("iwae") == {"done": 1}
  assert json.loads((tmp_path / "p.json").read_text())["results"] == {"seed1/elbo": 1.0}


def test_over_seeds_means_spreads_and_pools_the_monte_carlo_error():
  results = [{"epoch": 5, "log_px": -90.0, "mc_stderr": 0.3, "note": "a"},
             {"epoch": 5, "log_px": -92.0, "mc_stderr": 0.4, "note": "b"}]
  out = evaluators.over_seeds(results)
  assert out["epoch"] == 5 and out["log_px"] == -91.0 and out["note"] == "a"
  assert out["log_px_sd"] == pytest.approx(2 ** 0.5)
  assert out["mc_stderr"] == pytest.approx(((0.09 + 0.16) / 2 / 2) ** 0.5)
  assert "epoch_sd" not in out and "mc_stderr_sd" not in out


def test_another_checkpoints_or_damaged_kept_results_are_named_in_one_line(tmp_path, caplog):
  path = tmp_path / "evaluation.partial.json"
  mine = {"epoch": 3, "checkpoint_sha256": "aa", "data_sha256": "dd"}
  evaluators.Kept(path, mine).finish("elbo_L1", {"elbo": -99.0})
  with caplog.at_level("WARNING"):
    other = evaluators.Kept(path, {**mine, "checkpoint_sha256": "bb"})  # a copied folder
  assert other.done() == []
  assert caplog.records[-1].getMessage().endswith(
      "kept by an evaluation with other checkpoint_sha256; starting afresh")
  for damaged in ('{"settings": {}, "results": [], "blocks": {}}',
                  '{"settings": {}, "results": {}, "blocks": {"x": 5}}', "[1]"):
    path.write_text(damaged)
    with caplog.at_level("WARNING"):
      assert evaluators.Kept(path, mine).done() == []
    assert caplog.records[-1].getMessage().endswith("damaged; starting the evaluation afresh")
