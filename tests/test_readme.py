"""The README's Python snippets run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippets_run():
  snippets = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  assert snippets
  for code in snippets:
    exec(compile(code, str(README), "exec"), {})
