"""Durable checkpoints and the one-run-per-folder lock of a training run.

Two fixed slot folders, ``checkpoint-a`` and ``checkpoint-b``, take turns: each checkpoint overwrites the files of
the older slot in place (no tree is deleted, so a Google Drive folder's trash does not fill up), fsyncs them, then
commits a small ``manifest.json`` (step, size and sha256 of every file), written atomically and last. A slot is
usable only when its manifest verifies, so a write cut short by a crash, a full disk or a damaged file falls back to
the other slot, which holds the previous checkpoint.
"""
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import threading
import time
import uuid
import warnings
from pathlib import Path

import torch

from lib.config import ParameterError
from lib.models import save_model

SLOTS = ("checkpoint-a", "checkpoint-b")
MANIFEST = "manifest.json"
STATE = "training_state.pt"
LOCK = "run.lock"
SET_ASIDE = "manifest.set-aside.json"


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected; the message names the paths and the way out."""


def _fsync(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError:  # some mounts (Drive, some network file systems) refuse fsync on directories
        if not directory:
            raise
    finally:
        os.close(fd)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(slot):
    return sorted(p for p in slot.rglob("*")
                  if p.is_file() and p.name not in (MANIFEST, SET_ASIDE) and not p.name.endswith(".tmp"))


def _well_formed(manifest):
    if not (isinstance(manifest, dict) and isinstance(manifest.get("step"), int)
            and isinstance(manifest.get("files"), dict)):
        return False
    return all(isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int) and isinstance(entry[1], str)
               for entry in manifest["files"].values())


def read_manifest(slot):
    """The slot's manifest dict, or None when it has none (never written, a write that did not finish, or a file
    that is not a manifest: valid JSON of another shape counts as damaged too)."""
    try:
        manifest = json.loads((Path(slot) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if _well_formed(manifest) else None


def verify(slot):
    """(manifest, None) when every file of the slot matches its manifest, else (None, reason)."""
    slot = Path(slot)
    if not slot.is_dir():
        return None, "missing"
    manifest = read_manifest(slot)
    if manifest is None and (slot / SET_ASIDE).is_file():
        try:
            return None, json.loads((slot / SET_ASIDE).read_text()).get("reason", "set aside")
        except (OSError, ValueError, AttributeError):
            return None, f"set aside (unreadable {SET_ASIDE})"
    if manifest is None:
        state = "no " + MANIFEST if not (slot / MANIFEST).exists() else "unreadable " + MANIFEST
        missing = "" if (slot / STATE).is_file() else f", no {STATE}"
        return None, f"{state}{missing} (a checkpoint write that did not finish)"
    for name, (size, sha) in manifest["files"].items():
        path = slot / name
        if not path.is_file():
            return None, f"{name} is missing"
        if path.stat().st_size != size:
            return None, f"{name} has {path.stat().st_size} bytes, the manifest says {size} (truncated?)"
        if _sha256(path) != sha:
            return None, f"{name} does not match its sha256 checksum (damaged)"
    return manifest, None


def save_checkpoint(run_dir, student, tokenizer, state):
    """Write the student (save_pretrained) and the training state into the slot that does not hold the newest
    checkpoint, in place; fsync; commit the manifest last. Returns the slot's path."""
    run_dir = Path(run_dir)
    steps = {slot: (read_manifest(run_dir / slot) or {}).get("step", -1) for slot in SLOTS}
    slot = run_dir / min(SLOTS, key=lambda s: (steps[s], s))  # the older (or never committed) slot
    try:
        _write_slot(slot, student, tokenizer, state)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as "unexpected pos" / basic_ios::clear
        free = shutil.disk_usage(slot if slot.exists() else run_dir).free if run_dir.exists() else None
        where = f"{free / 1e6:,.0f} MB free there" if free is not None else "its folder is gone"
        raise CheckpointError(f"could not write the checkpoint of step {state['step']} to {slot} ({where}; "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else err!r}). "
                              "The previous checkpoint is kept. Free space on that disk, or use another run_dir, "
                              "and run again to resume.") from err
    return slot


def _write_slot(slot, student, tokenizer, state):
    slot.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, SET_ASIDE):  # from here until the commit, the slot does not count
        (slot / name).unlink(missing_ok=True)
    _fsync(slot, directory=True)
    save_model(student, slot / "student", tokenizer)
    torch.save(state, slot / STATE)
    files = {}
    for path in _files(slot):
        _fsync(path)
        files[path.relative_to(slot).as_posix()] = (path.stat().st_size, _sha256(path))
    _fsync(slot / "student", directory=True)
    tmp = slot / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"step": state["step"], "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, slot / MANIFEST)
    _fsync(slot, directory=True)
    os.sync()  # a Colab Drive mount uploads what is flushed


def set_aside(slot, reason):
    """Uncommit a verified slot whose weights are known bad (a resume then falls back to the other slot); its
    manifest is kept as manifest.set-aside.json with the reason."""
    slot = Path(slot)
    manifest = read_manifest(slot) or {}
    (slot / SET_ASIDE).write_text(json.dumps({**manifest, "reason": reason}))
    (slot / MANIFEST).unlink(missing_ok=True)
    _fsync(slot, directory=True)


def clear_checkpoints(run_dir):
    """Uncommit the slots of an earlier run (a run that starts over): their manifests go, the files stay to be
    overwritten in place."""
    for name in SLOTS:
        for manifest in (MANIFEST, SET_ASIDE):
            (Path(run_dir) / name / manifest).unlink(missing_ok=True)


def find_checkpoint(run_dir):
    """The slot with the newest checkpoint whose manifest verifies, or None when the run has no checkpoint yet.

    A damaged newer slot is reported (warning naming it and why) and the previous one used. Slots that exist
    but none of which verifies raise CheckpointError naming them and the recovery."""
    run_dir = Path(run_dir)
    found, problems = [], []
    for name in SLOTS:
        slot = run_dir / name
        if not slot.exists():
            continue
        manifest, reason = verify(slot)
        if manifest is None:
            problems.append((slot, reason, (read_manifest(slot) or {}).get("step")))
        else:
            found.append((manifest["step"], slot))
    legacy = run_dir / "checkpoint"
    if legacy.exists() and not found:
        problems.append((legacy, "a checkpoint in the old single-folder layout (no manifest to verify)", None))
    if not found:
        if problems:
            listed = "; ".join(f"{p}: {r}" for p, r, _ in problems)
            raise CheckpointError(f"no usable checkpoint to resume from ({listed}). Set resume=false to start the "
                                  f"run over (the folders are then overwritten), or restore a good copy there.")
        return None
    step, best = max(found)
    for slot, reason, _ in problems:
        message = f"checkpoint {slot} is not usable ({reason}); resuming from {best} (step {step}) instead"
        warnings.warn(message, stacklevel=2)
    return best


def load_state(slot):
    """The training state dict of a verified slot."""
    return torch.load(Path(slot) / STATE, map_location="cpu", weights_only=True)


# one run per output folder ------------------------------------------------------------------------------------
# The lock is a lease: its holder renews a timestamp in run.lock every LEASE_EXPIRY_S / 4 seconds while it runs.
# A lock whose lease was not renewed for LEASE_EXPIRY_S is taken over, whatever host wrote it: a Colab VM that
# disconnected is gone for good, and the next VM (another host name) must not wait for a human to delete the file.
# On this host a lock whose process is gone is taken over at once.

LEASE_EXPIRY_S = float(os.environ.get("DISTILBERT_LEASE_EXPIRY_S", 120))
_HELD = {}  # lock path -> RunLock, the locks this process holds


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # PermissionError: exists, owned by someone else
        return True
    return True


def _read_lock(path):
    """The lock's holder dict, with "renewed" (epoch seconds of the last renewal; the file's mtime for a lock
    that does not say) -- or None when the file is gone."""
    try:
        text, mtime = path.read_text(), path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:  # being written right now, or torn by a crash
        holder = None
    if not isinstance(holder, dict):
        holder = {"unreadable": True}
    holder.setdefault("renewed", mtime)
    return holder


def lock_expired(holder):
    """Why ``holder``'s lock no longer counts (its process is gone, its lease ran out), or None while it is live."""
    age = time.time() - float(holder.get("renewed", 0))
    if age > LEASE_EXPIRY_S:
        return f"its lease was last renewed {age:.0f} s ago (it expires after {LEASE_EXPIRY_S:.0f} s)"
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        return "its process is gone"
    return None


def _refusal(folder, path, holder):
    age = time.time() - float(holder["renewed"])
    who = ("a lock file being written (unreadable)" if holder.get("unreadable") else
           f"pid {holder.get('pid')} on host {holder.get('host')!r} since {holder.get('started')}")
    return (f"another run is using {folder}: {path} is held by {who}, its lease renewed {age:.0f} s ago. Wait for "
            f"that run or stop it; a run whose machine is gone (a Colab VM after a disconnect) loses the lock when its "
            f"lease expires, {max(LEASE_EXPIRY_S - age, 0):.0f} s from now: run again then. Or give this run another "
            "run_dir/run_name.")


def check_lock(folder):
    """Raise ParameterError('run_dir', ...) when a live lock of another run holds ``folder`` (the preflight's
    check: nothing is taken)."""
    path = Path(folder).expanduser() / LOCK
    holder = None if path in _HELD else _read_lock(path)
    if holder is not None and lock_expired(holder) is None:
        raise ParameterError("run_dir", _refusal(folder, path, holder))


class RunLock:
    """A lock this process holds on one folder: a thread renews its lease until ``release``."""

    def __init__(self, path):
        self.path = Path(path)
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex,
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_until_released, daemon=True, name=f"lease {path}")

    def write(self):
        """(Re)write the lock file with a renewed lease, atomically (a reader never sees half a file)."""
        tmp = self.path.with_name(f"{LOCK}.{self.me['token']}.tmp")
        tmp.write_text(json.dumps({**self.me, "renewed": time.time()}))
        os.replace(tmp, self.path)

    def owned(self):
        return (_read_lock(self.path) or {}).get("token") == self.me["token"]

    def _renew_until_released(self):
        while not self._stop.wait(LEASE_EXPIRY_S / 4):
            if not self.owned():  # taken over: this run's lease had expired (a frozen or suspended process)
                print(f"warning: {self.path} was taken over by another run; stop this one", flush=True)
                return
            try:
                self.write()
            except OSError as err:  # a full disk or a dropped mount: the lease may lapse, the run goes on
                print(f"warning: could not renew the lease {self.path}: {err}", flush=True)

    def release(self):
        self._stop.set()
        if self._thread.is_alive():  # a renewal in flight would put the file back after the unlink
            self._thread.join()
        _HELD.pop(self.path, None)
        if self.owned():
            self.path.unlink(missing_ok=True)


def acquire_lock(folder):
    """Take ``folder/run.lock`` for this process and keep its lease renewed until ``release_lock``. A live lock
    (lease renewed within LEASE_EXPIRY_S, and on this host its process alive), whatever its host, raises
    ParameterError('run_dir', ...) naming it; an expired one is taken over with a notice. Returns a RunLock."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    if path in _HELD:
        raise ParameterError("run_dir", _refusal(folder, path, _read_lock(path) or {"renewed": time.time()}))
    lock = RunLock(path)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        holder = _read_lock(path)
        why = None if holder is None else lock_expired(holder)
        if holder is not None and why is None:
            raise ParameterError("run_dir", _refusal(folder, path, holder)) from None
        if holder is not None:
            print(f"note: taking over the stale lock {path} (pid {holder.get('pid')} on host "
                  f"{holder.get('host')!r}): {why}", flush=True)
    lock.write()
    if not lock.owned():  # another run took it over at the same moment
        raise ParameterError("run_dir", f"could not take the lock {path}: another run took it at the same moment")
    _HELD[path] = lock
    lock._thread.start()
    return lock


def release_lock(lock):
    """Stop renewing ``lock`` (a RunLock) and remove its file, unless another run has since taken it over."""
    lock.release()


def holds_lock(folder):
    """Whether this process holds ``folder``'s lock (a stage that holds it runs lib.training.distill inside)."""
    return Path(folder).expanduser() / LOCK in _HELD


@contextlib.contextmanager
def hold_locks(folders):
    """Hold the locks of ``folders`` (those this process does not hold already) for the ``with`` block."""
    taken = []
    try:
        for folder in dict.fromkeys(Path(f).expanduser() for f in folders):
            if not holds_lock(folder):
                taken.append(acquire_lock(folder))
        yield taken
    finally:
        for lock in reversed(taken):
            lock.release()


# signals ------------------------------------------------------------------------------------------------------
# SIGTERM (a job scheduler, a VM shutting down, `kill`) and SIGHUP (a closed terminal or SSH session) end a run
# like SIGINT does: as a KeyboardInterrupt, so it writes its checkpoint and releases its lock. While that
# checkpoint is written, a second signal is noted, not obeyed: a half-written checkpoint helps no one.

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def signals_interrupt():
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the ``with`` block (main thread only)."""
    if not _in_main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")

    previous = {s: signal.signal(s, interrupt) for s in STOP_SIGNALS if s != signal.SIGINT}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_deferred(what):
    """SIGINT, SIGTERM and SIGHUP only print a line while ``what`` (a checkpoint write) finishes."""
    if not _in_main_thread():
        yield
        return

    def wait(signum, frame):
        print(f"{signal.Signals(signum).name} received while {what}: finishing it first", flush=True)

    previous = {s: signal.signal(s, wait) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
