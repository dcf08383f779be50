"""Every Python block of README.md and docs/*.md runs as written; README stays a page."""

import pathlib
import re

import pytest

from tests import helpers

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


# The blocks build, train and score models, op by op as a reader runs them (seconds
# of compiling each): the slow tier. The fast tier parses every command of the docs.
@pytest.mark.slow
@pytest.mark.parametrize("index", [pytest.param(i, id=f"{p.name}-{i}")
                                   for i, (p, _) in enumerate(SNIPPETS)])
def test_snippet_runs(index):
  page, block = SNIPPETS[index]
  exec(compile(block, f"{page.name}, python block {index + 1}", "exec"), {})


COMMANDS = [(page, line) for page in PAGES
            for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S)
            for line in re.sub(r"\\\n\s*", " ", block).splitlines()
            if line.startswith("python -m experiments.")]


@pytest.mark.parametrize("index", [pytest.param(i, id=f"{p.name}-{i}")
                                   for i, (p, _) in enumerate(COMMANDS)])
def test_every_training_and_evaluation_command_in_the_docs_parses(index):
  """The flags of each `python -m experiments.*` line of README.md and docs/ parse as the
  command would parse them (nothing runs)."""
  import shlex  # pylint: disable=g-import-not-at-top
  from experiments import cli  # pylint: disable=g-import-not-at-top
  page, line = COMMANDS[index]
  module, *argv = shlex.split(line.split("python -m ", 1)[1].split("#")[0])
  if any(a.startswith(("--flagfile", "--config=")) for a in argv):
    pytest.skip("names a file of the reader's")
  try:
    entry = helpers.command_entry(module)
  except AttributeError:
    pytest.skip(f"{module} builds its entry inside main")
  cli.parse(entry, argv)


def test_the_docs_speak_to_users_without_a_log_of_sessions_or_commit_hashes():
  """Dated tables, not the story of rounds and machines; no commit hashes in prose."""
  narrative = re.compile(r"this round|this session|previous session|that afternoon|"
                         r"\blent\b|\bnot yet re-measured", re.I)
  commit = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
  for page in PAGES:
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for i, line in enumerate(prose.splitlines(), 1):
      assert not narrative.search(line), f"{page.name}: {line}"
      assert not commit.search(line), f"{page.name}: {line}"


# README's commands at the end-to-end tests' shape (helpers.TINY_FLAGS, so that the
# main command's programs are the other tests'): every flag the reader types is kept;
# these only shrink the data, the network and the evaluation.
SHRINK = {
    "experiments.mnist": ["--epochs=1", *helpers.TINY_FLAGS, "--pseudo_inputs=8"],
    "experiments.evaluate": ["--test_examples=20", "--k=10", "--ais_examples=2",
                             "--ais_intermediate=5", "--ais_chains=2", "--leapfrog_steps=2"],
}
SHRINK["experiments.train"] = SHRINK["experiments.mnist"][:1] + ["--conv_channels=4",
                                                                 "--conv_hidden=16"]


@pytest.mark.slow  # a dozen runs
@pytest.mark.system
def test_readmes_commands_run_one_after_another_in_one_folder(data_root, tmp_path, capfd,
                                                              monkeypatch):
  """As a new user types them, in README's order, in one folder: none fails (each that
  trains has a run folder of its own, or resumes its own)."""
  import shlex  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("VAE_JAX_DATA", str(data_root))
  (tmp_path / "faces").mkdir()  # "your images": a folder of them
  rng = np.random.default_rng(0)
  for i in range(200):
    Image.fromarray(rng.integers(0, 256, (16, 16), np.uint8)).save(tmp_path / f"faces/{i}.png")
  readme = [line for page, line in COMMANDS if page.name == "README.md"]
  assert len(readme) >= 10
  for line in readme:
    module, *argv = shlex.split(line.split("python -m ", 1)[1].split("#")[0])
    code, err = helpers.cli(capfd, module, *argv, *SHRINK[module])
    assert code == 0, f"{line}\n{err[-3000:]}"
  assert (tmp_path / "runs/burda_fast/evaluation.json").is_file()


def test_every_extra_the_docs_install_is_declared():
  """`pip install -e ".[cuda]"` and the like name extras pyproject.toml has (that the
  cuda extra resolves was checked with `pip install --dry-run`: it downloads 2 GB)."""
  tomllib = pytest.importorskip("tomllib", reason="Python 3.11's TOML reader")
  extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
      "optional-dependencies"]
  named = {e for page in PAGES for group in re.findall(r'pip install -e "\.\[([\w,]+)\]"',
                                                        page.read_text())
           for e in group.split(",")}
  assert {"cuda", "test", "tensorboard"} <= named and named <= set(extras), named - set(extras)
