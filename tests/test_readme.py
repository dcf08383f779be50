"""Every Python block of README.md and docs/*.md runs as written; README stays a page."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = [(page, block) for page in PAGES
            for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]


def test_readme_is_a_front_page_and_links_every_docs_page():
  text = (ROOT / "README.md").read_text()
  assert len(text.splitlines()) <= 200
  for page in PAGES[1:]:
    assert f"docs/{page.name}" in text, page.name
  for link in re.findall(r"\]\(((?:docs/)?[\w/.]+\.md)", text):
    assert (ROOT / link).is_file(), link


def test_the_docs_hold_the_api_examples():
  assert sum(page.name == "api.md" for page, _ in SNIPPETS) >= 4


# Blocks that train a model for seconds belong to the slow tier.
TRAINS = re.compile(r"for \w+ in range\(\d{2,}\)|train_and_evaluate|make_train_epoch|num_samples=5000|the prior.s parameters learn too")


@pytest.mark.parametrize("index", [
    pytest.param(i, marks=pytest.mark.slow, id=f"{p.name}-{i}") if TRAINS.search(s)
    else pytest.param(i, id=f"{p.name}-{i}") for i, (p, s) in enumerate(SNIPPETS)])
def test_snippet_runs(index):
  page, block = SNIPPETS[index]
  exec(compile(block, f"{page.name}, python block {index + 1}", "exec"), {})
