"""Durable checkpoints and the one-run-per-folder lock of a training run.

Two fixed slot folders, ``checkpoint-a`` and ``checkpoint-b``, take turns: each checkpoint overwrites the files of
the older slot in place (no tree is deleted, so a Google Drive folder's trash does not fill up), fsyncs them, then
commits a small ``manifest.json`` (step, size and sha256 of every file), written atomically and last. A slot is
usable only when its manifest verifies, so a write cut short by a crash, a full disk or a damaged file falls back to
the other slot, which holds the previous checkpoint.
"""
import hashlib
import json
import os
import socket
import time
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
    return sorted(p for p in slot.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"))


def read_manifest(slot):
    """The slot's manifest dict, or None when it has none (never written, or a write that did not finish)."""
    try:
        return json.loads((Path(slot) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def verify(slot):
    """(manifest, None) when every file of the slot matches its manifest, else (None, reason)."""
    slot = Path(slot)
    if not slot.is_dir():
        return None, "missing"
    manifest = read_manifest(slot)
    if manifest is None and (slot / SET_ASIDE).is_file():
        return None, json.loads((slot / SET_ASIDE).read_text()).get("reason", "set aside")
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
    slot.mkdir(parents=True, exist_ok=True)
    (slot / MANIFEST).unlink(missing_ok=True)  # from here until the commit, the slot does not count
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
    (slot / SET_ASIDE).unlink(missing_ok=True)
    _fsync(slot, directory=True)
    os.sync()  # a Colab Drive mount uploads what is flushed
    return slot


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

def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def acquire_lock(folder):
    """Take ``folder/run.lock`` (pid, host, start time) for this process. A lock held by a live process, or by
    one on another host, raises ParameterError('run_dir', ...) naming it; a stale lock (this host, process gone)
    is taken over with a notice. Returns the lock's path; release with release_lock."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = None
            if holder is not None and (holder.get("host") != me["host"] or _alive(int(holder.get("pid", -1)))):
                raise ParameterError("run_dir", f"another run is using {folder}: {path} is held by pid "
                                     f"{holder.get('pid')} on host {holder.get('host')!r} since {holder.get('started')}. "
                                     "Wait for it or stop it; if that process is gone (for example on another "
                                     "machine), delete the lock file; or give this run another run_dir/run_name.")
            print(f"note: taking over the stale lock {path} ({holder or 'unreadable'}): its process is gone")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise ParameterError("run_dir", f"could not take the lock {path}: another run took it at the same moment")


def release_lock(path):
    """Remove a lock this process holds (a lock since taken over by another process is left alone)."""
    path = Path(path)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
