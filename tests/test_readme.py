"""Every Python block of README.md runs as written (the API section's four examples among them)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_the_four_api_examples():
  assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index):
  exec(compile(SNIPPETS[index], f"README.md, python block {index + 1}", "exec"), {})
