"""A run's working directory: one run at a time (an OS file lock), the settings
it holds (config.json, checked before a resume), metrics.jsonl and TensorBoard,
atomic writes, disk and write checks before long work, and SIGINT/SIGTERM as a
request to stop. Multi-process runs: process 0 writes, every process checks.
"""

import csv
import fcntl
import io
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time


from vae_jax import multihost


def write_atomic(path: pathlib.Path, content: str | bytes) -> None:
  """Writes `content` to `path` through a temporary file and a rename: never half a file."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  if isinstance(content, bytes):
    tmp.write_bytes(content)
  else:
    tmp.write_text(content)
  os.replace(tmp, path)


def check_writable(directory: pathlib.Path,
                   other: str = "copy the run to a writable directory", label: str = "") -> None:
  """Raises OSError naming `directory` (after `label`, e.g. "workdir=") when a file
  cannot be created in it; the message offers fixing its permissions or `other`."""
  try:
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_check"):
      pass
  except OSError as e:
    raise OSError(f"{label}{directory}: cannot write there ({e.strerror or e}); fix its permissions "
                  f"or {other}") from None


class StopRequest:
  """Turns SIGINT/SIGTERM into a request to stop at the next safe point (`signal` set)."""

  def __init__(self):
    self.signal = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    # A Ctrl-C the entry point's handler counted (one raised inside an XLA callback
    # while the model was built is swallowed there) is a request already.
    if getattr(self._old.get(signal.SIGINT), "count", 0):
      self.signal = "SIGINT"
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def interruptible(fn, *args, stop: StopRequest | None = None):
  """`fn(*args)` in a thread of its own while this thread waits: XLA's compiles are long
  calls into C++ that a signal cannot interrupt, so Ctrl-C (or `stop`'s signal) ends
  the wait within 0.1 s and raises KeyboardInterrupt here; the abandoned call ends
  with the process. `fn`'s exceptions are raised here."""
  out = {}

  def call():
    try:
      out["value"] = fn(*args)
    except BaseException as e:  # pylint: disable=broad-except  (raised in the caller)
      out["error"] = e

  worker = threading.Thread(target=call, name="vae_jax-build", daemon=True)
  worker.start()
  while worker.is_alive():
    worker.join(0.1)
    if stop is not None and stop.signal is not None:
      raise KeyboardInterrupt
  if "error" in out:
    raise out["error"]
  return out["value"]


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir's lock."""


class Lock:
  """An exclusive `fcntl` lock on WORKDIR/.lock, held while the run lives.

  The kernel drops the lock when its process dies, however it dies, so a lock
  left by a killed run never blocks the next one. The file names the holder
  (PID, host, start time) for the error the second run gets.
  """

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / ".lock"
    self._fd = None

  def __enter__(self):
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
      os.close(fd)
      raise WorkdirBusy(f"{self.path.parent} is in use by {holder}; wait for that run to end "
                        f"or stop it, or pass another workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"PID {os.getpid()} on {socket.gethostname()} (since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def __exit__(self, *exc):
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def read_json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e}); repair or delete it (deleting config.json "
                     f"lets the same command resume from the checkpoints)") from None


def has_checkpoint(workdir: pathlib.Path) -> bool:
  directory = pathlib.Path(workdir) / "checkpoints"
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def check_is_dir(workdir: pathlib.Path) -> None:
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"workdir={workdir}: is a file, not a directory; pass a directory path")


def prepare(workdir: pathlib.Path, settings: dict, defaults: dict, resumable, fresh: bool) -> None:
  """Checks `workdir` against a run's `settings` (a JSON-able dict) on every process;
  process 0 alone creates it or, with `fresh`, deletes the old run, and the others
  wait for it. A run there whose settings differ outside `resumable` is refused
  (`defaults` stand in for settings its config.json predates); a run that saved
  no checkpoint has nothing to protect and is replaced. config.json is written
  later (`write_config`), once a resumed state has been accepted."""
  check_is_dir(workdir)
  primary = multihost.is_primary()
  if primary:
    workdir.mkdir(parents=True, exist_ok=True)
  config_path = workdir / "config.json"
  if fresh and primary:
    for name in ("checkpoints", "tensorboard", "metrics.jsonl", "config.json",
                 "evaluation.partial.json"):
      p = workdir / name
      if p.exists():
        logging.warning("fresh start: removing %s", p)
        shutil.rmtree(p) if p.is_dir() else p.unlink()
  elif not fresh and config_path.exists() and not has_checkpoint(workdir):
    logging.warning("%s: its run saved no checkpoint; starting this one there", workdir)
  elif not fresh and config_path.exists():
    old = read_json(config_path)
    new = json.loads(json.dumps(settings))
    # Data sizes recorded by older versions lack some keys: compare those present.
    old["data"] = {**new.get("data", {}), **old.get("data", {})}
    diff = [f"{k}: {old.get(k, defaults.get(k))!r} there, {new[k]!r} now" for k in new
            if k not in resumable and old.get(k, defaults.get(k)) != new[k]]
    if diff:
      raise ValueError(f"workdir={workdir} holds a run with other settings ({'; '.join(diff)}); "
                       f"use another workdir, or fresh=True to replace that run")
  multihost.barrier("vae_jax: workdir prepared")


def run_record(old: dict | None, new: dict, start: int, tracked) -> dict:
  """What config.json holds for a run (re)started at epoch `start` with the settings
  `new`, given its earlier config.json `old`: `new`, and where a `tracked` setting
  (one that may change on a resume) changed, "segments": the epoch from which each
  value held, [{"from_epoch": 0, every tracked value}, {"from_epoch": N, what changed},
  ...], so the record says what every epoch used."""
  new = json.loads(json.dumps(new))  # as config.json holds it: lists, not tuples
  if not start or old is None:
    return new
  segments = list(old.get("segments") or [{"from_epoch": 0, **{k: old.get(k, new[k])
                                                              for k in tracked}}])
  latest = {k: v for segment in segments for k, v in segment.items() if k != "from_epoch"}
  changed = {k: new[k] for k in tracked if latest.get(k) != new[k]}
  if changed:
    segments.append({"from_epoch": start, **changed})
  return {**new, "segments": segments} if len(segments) > 1 else new


def write_config(workdir: pathlib.Path, settings: dict) -> None:
  if multihost.is_primary():
    write_atomic(workdir / "config.json", json.dumps(settings, indent=2, allow_nan=False) + "\n")


def check_disk_space(workdir: pathlib.Path, need_bytes: int) -> None:
  """Creates `workdir` if needed and checks it can be written with `need_bytes`
  free: each failure is refused with its real reason before any work."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OSError(f"workdir={workdir}: cannot create it ({e.strerror or e}: {e.filename}); "
                  f"pass a directory on a disk you can write to") from None
  check_writable(workdir, "pass another workdir", label="workdir=")
  free = shutil.disk_usage(workdir).free
  if free < need_bytes:
    raise ValueError(f"workdir={workdir}: {free / 1e6:.1f} MB free on its disk, but "
                     f"checkpoints of this model need about {need_bytes / 1e6:.1f} MB; free "
                     f"some space or pass another workdir")


def read_metrics(path: pathlib.Path) -> list[dict]:
  """The records of a metrics.jsonl; a torn or blank last line (a kill while
  appending) is dropped with a warning, damage elsewhere names the file and line."""
  if not path.exists():
    return []
  lines = path.read_text(errors="replace").splitlines()
  records = []
  for i, line in enumerate(lines):
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or "epoch" not in record:
        raise ValueError("not a metrics record")
      records.append(record)
    except ValueError as e:
      if i == len(lines) - 1:
        logging.warning("%s: dropping its last line, cut short (%s)", path, e)
        break
      raise ValueError(f"{path}: line {i + 1} is damaged ({e}); repair or delete that line "
                       f"(the checkpoints are intact)") from None
  return records


def event_records(path: pathlib.Path):
  """The records of a TensorBoard event file, each (its bytes, its `Event`), read from
  their TFRecord framing (length, its CRC, the event, its CRC); a record cut short by
  a kill ends them."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  data, i = pathlib.Path(path).read_bytes(), 0
  while i + 12 <= len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    end = i + 12 + n + 4
    if end > len(data):
      return
    event = event_pb2.Event()
    event.ParseFromString(data[i + 12:i + 12 + n])
    yield data[i:end], event
    i = end


def trim_events(path: pathlib.Path, last_step: int) -> None:
  """Drops the events of steps after `last_step` from a TensorBoard event file (epochs
  that run again; TensorBoard's purge hides them, the raw file held them twice) and a
  record cut short by a kill; the kept records are copied byte for byte."""
  trimmed = b"".join(raw for raw, event in event_records(path) if event.step <= last_step)
  if trimmed != path.read_bytes():
    write_atomic(path, trimmed)


def metrics_csv(records: list[dict]) -> str:
  """Records as CSV: a column per key in the order keys first appear, empty where a
  record lacks one; lists and dicts (replicas, changed settings) as JSON."""
  columns = list(dict.fromkeys(k for r in records for k in r))
  text = io.StringIO()
  w = csv.writer(text, lineterminator="\n")
  w.writerow(columns)
  for r in records:
    w.writerow([json.dumps(r[c]) if isinstance(r.get(c), (list, dict)) else r.get(c, "")
                for c in columns])
  return text.getvalue()


class MetricsLog:
  """metrics.jsonl (one JSON record per evaluated epoch) and TensorBoard scalars and
  images, resumed at epoch `start`: lines past it belong to epochs that run again.
  Process 0 writes; on the others every method does nothing."""

  def __init__(self, workdir: pathlib.Path, start: int, start_record: dict | None = None,
               settings: dict | None = None, changed: dict | None = None):
    """`start_record`: epoch `start`'s record as its checkpoint keeps it, written
    back if metrics.jsonl lost it (a kill while appending tears the last line).
    `settings`: the run's, shown as text in TensorBoard when the run starts.
    `changed`: the settings this resumed sitting changed, named in its first line
    ("settings_changed") as config.json's segments name them."""
    self.changed = dict(changed or {})
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self.path = workdir / "metrics.jsonl"
    self.primary = multihost.is_primary()
    kept = [r for r in read_metrics(self.path) if r["epoch"] <= start]
    if start_record is not None and (not kept or kept[-1]["epoch"] < start):
      logging.warning("%s: epoch %d's line is missing; written again from its checkpoint",
                      self.path, start)
      kept.append(start_record)
    # Seconds of the run's earlier sittings, so that wall_s adds up over resumes.
    self.wall_before = kept[-1].get("wall_s", 0.0) if kept else 0.0
    self.writer = None
    if self.primary:
      write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
      self._write_csv()
      for events in (workdir / "tensorboard").glob("events.out.tfevents.*"):
        if not events.name.endswith(".tmp"):
          trim_events(events, start)
      self.writer = SummaryWriter(str(workdir / "tensorboard"),
                                  purge_step=start + 1 if start else None)
      if settings is not None and not start:
        rows = [[k, json.dumps(v)] for k, v in settings.items()]
        self.writer.add_text("settings", markdown_table(["setting", "value"], rows), 0)

  def record(self, record: dict) -> None:
    if not self.primary:
      return
    if self.changed:
      record, self.changed = {**record, "settings_changed": self.changed}, {}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    self._write_csv()
    for k, v in record.items():
      if k not in ("epoch", "step") and isinstance(v, (int, float)):  # not replicas' lists
        self.writer.add_scalar(tensorboard_tag(k), v, record["epoch"])

  def add_images(self, grids: dict, step: int) -> None:
    """TensorBoard images: {name: `[H, W]` grey or `[H, W, 3]` colour grid}."""
    for name, g in grids.items() if self.primary else ():
      self.writer.add_image(name, g, step, dataformats="HW" if g.ndim == 2 else "HWC")

  def keep_until(self, epoch: int | None) -> None:
    """Drops the lines of epochs after `epoch` (None: all): those whose checkpoint failed."""
    if self.primary:
      write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in read_metrics(self.path)
                                      if epoch is not None and r["epoch"] <= epoch))
      self._write_csv()

  def _write_csv(self) -> None:
    """metrics.csv: metrics.jsonl as a table for spreadsheets and pandas, written again
    whole (a figure that appears later, e.g. an IWAE bound, gets its column)."""
    write_atomic(self.path.with_suffix(".csv"), metrics_csv(read_metrics(self.path)))

  def records(self) -> list[dict]:
    """metrics.jsonl's records so far."""
    return read_metrics(self.path)

  def last_record(self) -> dict:
    records = read_metrics(self.path)
    return records[-1] if records else {}

  def close(self) -> None:
    if self.writer is not None:
      try:
        self.writer.close()
      except OSError:  # a full disk: the error that stopped the run matters more
        pass


_TRAIN_TAGS = ("learning_rate", "grad_norm", "skipped_steps")
_EVAL_TAGS = ("active_units", "latent_units")


def tensorboard_tag(name: str) -> str:
  """A metrics record's key as a grouped TensorBoard tag: train/elbo, test/kl,
  eval/active_units, run/epoch_s."""
  for group in ("train", "test", "eval"):
    if name.startswith(group + "_"):
      return f"{group}/{name[len(group) + 1:]}"
  if name in _TRAIN_TAGS:
    return f"train/{name}"
  return f"eval/{name}" if name in _EVAL_TAGS else f"run/{name}"


def add_evaluation(workdir: pathlib.Path, epoch: int, figures: dict) -> None:
  """Evaluation figures ({name: nats}) as TensorBoard scalars eval/NAME at `epoch`."""
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  if not multihost.is_primary() or not figures:
    return
  writer = SummaryWriter(str(workdir / "tensorboard"))
  try:
    for name, value in figures.items():
      writer.add_scalar(f"eval/{name}", value, epoch)
  finally:
    writer.close()


def markdown_table(header: list[str], rows: list[list], float_format: str = ".2f") -> str:
  """A Markdown table (the summaries runs and benchmarks write); floats as `float_format`."""
  fmt = lambda v: format(v, float_format) if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
  return "\n".join(lines)
