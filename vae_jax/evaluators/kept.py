"""An evaluation's kept results: finished parts and an interrupted method's block sums,
in WORKDIR/evaluation.partial.json, so that the same command continues."""

import json
import logging
from typing import Callable

from vae_jax import multihost
from vae_jax import workdir as workdir_lib


class Kept:
  """An evaluation's finished parts ({name: result}) and an interrupted method's block
  sums, under the settings that made them; with a `path` (process 0 writes it after
  each change), a rerun with the same settings continues from them."""

  def __init__(self, path=None, settings: dict | None = None):
    self.path, self.state = path, {"settings": settings, "results": {}, "blocks": {}}
    if path is None or not path.is_file():
      return
    try:
      kept = workdir_lib.read_json(path)
    except ValueError:
      kept = None
    if not (isinstance(kept, dict) and isinstance(kept.get("settings"), dict)
            and isinstance(kept.get("results"), dict) and isinstance(kept.get("blocks"), dict)
            and all(isinstance(b, dict) for b in kept["blocks"].values())):
      logging.warning("%s: damaged; starting the evaluation afresh", path)
      return
    if kept["settings"] != settings:
      differ = sorted(k for k in {**kept["settings"], **(settings or {})}
                      if kept["settings"].get(k) != (settings or {}).get(k))
      logging.warning("%s: kept by an evaluation with other %s; starting afresh", path,
                      ", ".join(differ))
      return
    self.state = kept

  def done(self) -> list[str]:
    return list(self.state["results"])

  def result(self, name: str):
    """A finished part's result, or None."""
    return self.state["results"].get(name)

  def finish(self, name: str, result) -> None:
    self.state["results"][name] = result
    self.state["blocks"].pop(name, None)
    self._save()

  def resume(self, name: str) -> dict | None:
    """What `engine.run`'s `on_block` kept of method part `name`, or None."""
    return self.state["blocks"].get(name)

  def on_block(self, name: str) -> Callable[[dict], None]:
    def keep(blocks: dict) -> None:
      self.state["blocks"][name] = blocks
      self._save()
    return keep

  def _save(self) -> None:
    if self.path is not None and multihost.is_primary():
      workdir_lib.write_atomic(self.path, json.dumps(self.state) + "\n")

  def scoped(self, prefix: str) -> "Kept":
    """A view whose names all start with `prefix` (e.g. one replica's parts)."""
    return _Scoped(self, prefix)

  def remove(self) -> None:
    if self.path is not None and multihost.is_primary() and self.path.exists():
      self.path.unlink()


class _Scoped:
  """`Kept.scoped`: the same store, every name prefixed."""

  def __init__(self, kept: Kept, prefix: str):
    self.kept, self.prefix = kept, prefix

  def result(self, name: str):
    return self.kept.result(self.prefix + name)

  def finish(self, name: str, result) -> None:
    self.kept.finish(self.prefix + name, result)

  def resume(self, name: str) -> dict | None:
    return self.kept.resume(self.prefix + name)

  def on_block(self, name: str) -> Callable[[dict], None]:
    return self.kept.on_block(self.prefix + name)
