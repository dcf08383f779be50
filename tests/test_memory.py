"""The memory guard: what is free, and the one-line refusal."""

import pytest

from vae_jax import memory


def test_the_free_memory_is_read_on_linux():
  free = memory.available_bytes()
  assert free is None or free > 0


def test_a_computation_too_large_is_refused_naming_the_need_and_the_fix(monkeypatch):
  monkeypatch.setattr(memory, "available_bytes", lambda: 4 * 2 ** 30)
  memory.check_fits(3.5 * 2 ** 30, 0.9, "a step needs about {gib}", "lower L")  # fits
  with pytest.raises(memory.TooLarge) as e:
    memory.check_fits(3.7 * 2 ** 30, 0.9, "a step needs about {gib} (L=500)", "lower L")
  assert str(e.value) == "a step needs about 3.70 GiB (L=500), but 4.00 GiB are free; lower L"
  assert e.value.fix == "lower L" and isinstance(e.value, ValueError)
  monkeypatch.setattr(memory, "available_bytes", lambda: None)
  memory.check_fits(1e18, 0.9, "{gib}", "")  # unknown: nothing refused
