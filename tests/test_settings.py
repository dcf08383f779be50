"""Declaring a setting once: bounds and choices checked when made, a JSON dict read
back field by field, and the words `--help` shows."""

import dataclasses

import pytest

import vae_jax
from vae_jax import settings
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class Example(settings.Settings):
  """An example's settings."""
  size: int = setting(3, "A size.", lower=1, upper=10)
  rate: float = setting(0.5, "A rate.", above=0.0)
  kind: str = setting("a", "A kind.", choices=("a", "b"), flag="k")
  widths: tuple[int, ...] = setting((4,), "Widths.", lower=1, nonempty=True, unique=True)
  name: str | None = setting(None, "A name.")
  on: bool = setting(False, "A switch.", resumable=True)


@pytest.mark.parametrize("changes,message", [
    (dict(size=0), "size=0: must be >= 1"), (dict(size=11), "size=11: must be <= 10"),
    (dict(rate=0.0), "rate=0.0: must be > 0.0"), (dict(rate=float("nan")), "must be a finite"),
    (dict(kind="c"), r"kind=c: expected one of \['a', 'b'\]"),
    (dict(widths=()), "widths=: must list at least one value"),
    (dict(widths=(4, 4)), "widths=4,4: lists a value twice"),
    (dict(widths=(4, 0)), "widths=4,0: must be >= 1")])
def test_values_outside_their_declaration_are_one_line_naming_the_setting(changes, message):
  with pytest.raises(ValueError, match=message):
    Example(**changes)


def test_a_dict_reads_back_field_by_field():
  example = Example(size=5, widths=(2, 3), name="x", on=True)
  values = dataclasses.asdict(example)
  values["widths"] = list(values["widths"])  # as JSON gives it
  assert settings.from_dict(Example, values, "f.json") == example
  assert settings.from_dict(Example, {"rate": 2}, "f.json").rate == 2.0  # an int is a number
  for values, message in (({"size": "5"}, r"f.json: size=\"5\": must be an integer"),
                          ({"on": 1}, "on=1: must be a boolean"),
                          ({"widths": [1, "2"]}, "must be a list of integers"),
                          ({"colour": 1}, "unknown setting 'colour'"),
                          ({"size": 0}, "f.json: size=0: must be >= 1"),
                          ([], "expected a JSON object")):
    with pytest.raises(ValueError, match=message):
      settings.from_dict(Example, values, "f.json")


def test_the_declaration_gives_the_flag_its_name_bounds_and_kind():
  fields = {f.name: f for f in settings.fields(Example)}
  assert settings.flag_name(fields["kind"]) == "k" and settings.flag_name(fields["size"]) == "size"
  assert settings.describe_bounds(fields["size"]) == ">= 1, <= 10"
  assert settings.describe_bounds(fields["rate"]) == "> 0"
  assert settings.describe_bounds(fields["kind"]) == "one of: a, b"
  assert settings.base_type(Example, fields["widths"]) == (int, True, False)
  assert settings.base_type(Example, fields["name"]) == (str, False, True)
  assert [f.name for f in settings.fields(Example) if f.metadata["resumable"]] == ["on"]


def test_nearest_names_the_close_choice_or_the_alias_and_nothing_when_none_is_near():
  assert settings.nearest("aiss", ["elbo", "iwae", "ais"]) == "; did you mean ais?"
  assert settings.nearest("lr", ["learning_rate", "L"], {"lr": "learning_rate"},
                          prefix="--") == "; did you mean --learning_rate?"
  assert settings.nearest("LR", [], {"lr": "learning_rate"}) == "; did you mean learning_rate?"
  assert settings.nearest("foo", ["elbo", "iwae"]) == ""
  field = {f.name: f for f in settings.fields(vae_jax.RunConfig)}
  assert settings.describe_bounds(field["seed"]) == ">= 0, <= 9223372036854775807"
