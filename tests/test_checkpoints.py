"""lib.checkpoints: two verified slots written in place, fallback to the previous checkpoint, the run lock."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from test_training import distill_params, one_thread, setup, tiny_setup  # noqa: F401 (fixtures)

from lib import checkpoints, models, training
from lib.config import ParameterError


def disk_bytes(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_checkpoints_alternate_between_two_slots_and_stay_bounded(setup, tmp_path):
    teacher, tokenizer, _ = setup
    student = models.build_student(teacher)
    sizes = []
    for step in range(1, 21):
        slot = checkpoints.save_checkpoint(tmp_path, student, tokenizer, {"step": step, "blob": torch.zeros(100)})
        assert slot.name == ("checkpoint-a" if step % 2 else "checkpoint-b")
        sizes.append(disk_bytes(tmp_path))
    assert max(sizes) - sizes[1] < 64  # 20 checkpoints take the room of 2 (the manifests' step digits aside)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-a", "checkpoint-b"]
    manifest = checkpoints.read_manifest(tmp_path / "checkpoint-b")
    assert manifest["step"] == 20 and {"training_state.pt", "student/model.safetensors"} <= set(manifest["files"])
    assert checkpoints.find_checkpoint(tmp_path) == tmp_path / "checkpoint-b"


def test_truncated_latest_checkpoint_falls_back_to_the_previous_and_ends_like_an_uninterrupted_run(setup, tmp_path):
    teacher, tokenizer, dataset = setup
    params = distill_params(max_steps=8, checkpoint_every=2)
    reference = models.build_student(teacher)
    training.distill(teacher, reference, dataset, params, tmp_path / "reference", tokenizer, progress=False)

    def stop_at_4(record):
        if record["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.distill(teacher, models.build_student(teacher), dataset, params, tmp_path / "run", tokenizer,
                         progress=False, on_log=stop_at_4)
    latest = checkpoints.find_checkpoint(tmp_path / "run")
    assert checkpoints.read_manifest(latest)["step"] == 4
    weights = latest / "student" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a write cut short
    with pytest.warns(UserWarning, match=rf"{latest}.*model.safetensors has 1000 bytes.*\(step 2\)"):
        resumed = models.build_student(teacher)
        summary = training.distill(teacher, resumed, dataset, params, tmp_path / "run", tokenizer, progress=False)
    assert summary["resumed_from"] == 2 and summary["steps"] == 8
    for k, v in reference.state_dict().items():
        assert torch.allclose(resumed.state_dict()[k], v, atol=1e-6), k


def test_no_usable_checkpoint_names_the_paths_and_the_way_out(setup, tmp_path):
    teacher, tokenizer, _ = setup
    student = models.build_student(teacher)
    for step in (1, 2):
        checkpoints.save_checkpoint(tmp_path, student, tokenizer, {"step": step})
    (tmp_path / "checkpoint-a" / "training_state.pt").unlink()  # a folder that lacks its state
    with open(tmp_path / "checkpoint-b" / "training_state.pt", "r+b") as f:  # same size, damaged bytes
        f.write(b"\0" * 8)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.find_checkpoint(tmp_path)
    message = str(err.value)
    assert f"{tmp_path / 'checkpoint-a'}: training_state.pt is missing" in message
    assert f"{tmp_path / 'checkpoint-b'}: training_state.pt does not match its sha256" in message
    assert "resume=false" in message
    # a slot with files but no manifest (a checkpoint write cut short) is no silent restart either
    (tmp_path / "checkpoint-b").rename(tmp_path / "other")
    (tmp_path / "checkpoint-a" / "manifest.json").unlink()
    with pytest.raises(checkpoints.CheckpointError, match="checkpoint-a: no manifest.json, no training_state.pt"):
        checkpoints.find_checkpoint(tmp_path)
    assert checkpoints.find_checkpoint(tmp_path / "fresh") is None  # a new run: nothing to resume, no error


def test_a_second_run_in_the_same_folder_is_refused_and_a_stale_lock_taken_over(setup, tmp_path, capsys):
    teacher, tokenizer, dataset = setup
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                        "started": "2025-01-01T00:00:00"}))
        with pytest.raises(ParameterError) as err:
            training.distill(teacher, models.build_student(teacher), dataset, distill_params(max_steps=1), tmp_path,
                             tokenizer, progress=False)
        assert err.value.name == "run_dir"
        assert f"{tmp_path / 'run.lock'} is held by pid {holder.pid} on host {socket.gethostname()!r}" in str(err.value)
        assert not (tmp_path / "log.jsonl").exists()  # refused before touching the run's files
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale, taken over with a notice, and released at the end
    summary = training.distill(teacher, models.build_student(teacher), dataset, distill_params(max_steps=1),
                               tmp_path, tokenizer, progress=False)
    assert summary["steps"] == 1
    assert f"taking over the stale lock {tmp_path / 'run.lock'}" in capsys.readouterr().out
    assert not (tmp_path / "run.lock").exists()


def test_a_live_lease_on_another_host_is_refused_and_a_stale_one_taken_over(tmp_path, capsys):
    lock_file = tmp_path / "run.lock"
    lock_file.write_text(json.dumps({"pid": 1, "host": "colabvm1", "started": "x", "renewed": time.time() - 5}))
    with pytest.raises(ParameterError, match=r"'colabvm1'.*lease renewed 5 s ago.*115 s from now: run again then"):
        checkpoints.acquire_lock(tmp_path)
    with pytest.raises(ParameterError, match="'colabvm1'"):  # the preflight's check says the same, takes nothing
        checkpoints.check_lock(tmp_path)
    # the VM disconnected: its lease is not renewed, and after the expiry any host takes the lock over
    lock_file.write_text(json.dumps({"pid": 1, "host": "colabvm1", "started": "x",
                                     "renewed": time.time() - checkpoints.LEASE_EXPIRY_S - 1}))
    checkpoints.check_lock(tmp_path)
    lock = checkpoints.acquire_lock(tmp_path)
    assert "taking over the stale lock" in capsys.readouterr().out
    holder = json.loads(lock_file.read_text())
    assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
    with pytest.raises(ParameterError, match=f"held by pid {os.getpid()}"):  # not even the same process twice
        checkpoints.acquire_lock(tmp_path)
    checkpoints.release_lock(lock)
    assert not lock_file.exists()


def test_the_holder_renews_its_lease_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "LEASE_EXPIRY_S", 0.4)  # renewed every 0.1 s
    lock = checkpoints.acquire_lock(tmp_path)
    try:
        first = json.loads((tmp_path / "run.lock").read_text())["renewed"]
        time.sleep(0.6)  # longer than the expiry: only renewals keep it live
        assert json.loads((tmp_path / "run.lock").read_text())["renewed"] > first
        with pytest.raises(ParameterError, match="another run is using"):  # a second machine sees it live
            _as_another_host(monkeypatch, lambda: checkpoints.acquire_lock(tmp_path))
    finally:
        checkpoints.release_lock(lock)
    assert not lock._thread.is_alive()  # joined: no renewal in flight can write the file back
    assert not (tmp_path / "run.lock").exists()


def _as_another_host(monkeypatch, action):
    with monkeypatch.context() as m:
        m.setattr(checkpoints, "_HELD", {})
        m.setattr(socket, "gethostname", lambda: "colabvm2")
        return action()


def test_an_unreadable_lock_counts_while_fresh_and_is_taken_over_once_old(tmp_path, monkeypatch):
    lock_file = tmp_path / "run.lock"
    lock_file.write_text("")  # created, not yet written (or torn by a crash)
    with pytest.raises(ParameterError, match="being written"):
        checkpoints.acquire_lock(tmp_path)
    old = time.time() - checkpoints.LEASE_EXPIRY_S - 1
    os.utime(lock_file, (old, old))
    checkpoints.release_lock(checkpoints.acquire_lock(tmp_path))
