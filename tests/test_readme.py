"""Every Python block of README.md runs as written (the API section's four examples among them)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_the_four_api_examples():
  assert len(SNIPPETS) >= 4


# Blocks that train a model for seconds belong to the slow tier.
TRAINS = re.compile(r"for \w+ in range\(\d{2,}\)|train_and_evaluate|make_train_epoch|num_samples=5000|the prior.s parameters learn too")


@pytest.mark.parametrize("index", [
    pytest.param(i, marks=pytest.mark.slow) if TRAINS.search(s) else i
    for i, s in enumerate(SNIPPETS)])
def test_readme_snippet_runs(index):
  exec(compile(SNIPPETS[index], f"README.md, python block {index + 1}", "exec"), {})
