"""Runs that survive what users do to them: signals, a second signal during the save, an interrupt between two
log records, damaged or unusual checkpoint files, a full disk, a refused run, a busy folder (issue 20)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_training import distill_params, one_thread, setup  # noqa: F401 (fixtures)

from lib import REPO_ROOT, checkpoints, config, data, distill, finetune, models, training
from lib.config import ParameterError, load_params


def interrupt_at_optimizer_step(monkeypatch, n, signum=signal.SIGINT, hook=None):
    """Send ``signum`` to this process when the n-th optimizer step is about to run (its micro-batches are done)."""
    real, calls = training.optimizer_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)
    monkeypatch.setattr(training, "optimizer_step", step)
    return calls


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_checkpoint_like_sigint_and_release_the_lock(setup, tmp_path, monkeypatch, signum,
                                                                        capsys):
    teacher, tokenizer, dataset = setup
    interrupt_at_optimizer_step(monkeypatch, 4, signum)
    with pytest.raises(KeyboardInterrupt, match=signal.Signals(signum).name):
        training.distill(teacher, models.build_student(teacher), dataset,
                         distill_params(max_steps=8, checkpoint_every=100), tmp_path, tokenizer, progress=False)
    assert "interrupted: checkpoint of step 3" in capsys.readouterr().out
    assert checkpoints.read_manifest(checkpoints.find_checkpoint(tmp_path))["step"] == 3
    assert not (tmp_path / "run.lock").exists()
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.SIG_IGN)  # the handler is put back


def test_a_second_signal_during_the_emergency_save_does_not_abort_it(setup, tmp_path, monkeypatch, capsys):
    teacher, tokenizer, dataset = setup
    interrupt_at_optimizer_step(monkeypatch, 3)
    real_save = training.save_checkpoint

    def impatient_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Interrupt again
        os.kill(os.getpid(), signal.SIGTERM)
        return real_save(*args, **kwargs)
    monkeypatch.setattr(training, "save_checkpoint", impatient_save)
    with pytest.raises(KeyboardInterrupt):
        training.distill(teacher, models.build_student(teacher), dataset,
                         distill_params(max_steps=8, checkpoint_every=100), tmp_path, tokenizer, progress=False)
    out = capsys.readouterr().out
    assert "SIGINT received while the interrupted run's checkpoint is written: finishing it first" in out
    assert "SIGTERM received while" in out
    slot = checkpoints.find_checkpoint(tmp_path)
    assert checkpoints.verify(slot)[0]["step"] == 2


def test_after_sigint_between_log_records_the_loss_curve_equals_the_uninterrupted_one(setup, tmp_path, monkeypatch):
    teacher, tokenizer, dataset = setup
    params = distill_params(max_steps=8, log_every=4, checkpoint_every=100)
    reference = models.build_student(teacher)
    training.distill(teacher, reference, dataset, params, tmp_path / "reference", tokenizer, progress=False)
    with monkeypatch.context() as m:
        interrupt_at_optimizer_step(m, 3)  # steps 1 and 2 are in the window, not yet logged
        with pytest.raises(KeyboardInterrupt):
            training.distill(teacher, models.build_student(teacher), dataset, params, tmp_path / "run", tokenizer,
                             progress=False)
    resumed = models.build_student(teacher)
    summary = training.distill(teacher, resumed, dataset, params, tmp_path / "run", tokenizer, progress=False)
    assert summary["resumed_from"] == 2
    fields = ("step", "loss", "loss_ce", "loss_mlm", "loss_cos", "grad_norm", "tokens", "padding_share")
    expected = [{k: r[k] for k in fields} for r in training.read_log(tmp_path / "reference" / "log.jsonl")]
    assert [{k: r[k] for k in fields} for r in summary["log"]] == expected  # exactly, to the last bit
    for name, tensor in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


def test_a_resume_says_from_which_step_and_checkpoint_and_resume_false_says_it_starts_over(setup, tmp_path,
                                                                                              monkeypatch, capsys):
    teacher, tokenizer, dataset = setup
    params = distill_params(max_steps=6, checkpoint_every=2)
    with monkeypatch.context() as m:
        interrupt_at_optimizer_step(m, 4)
        with pytest.raises(KeyboardInterrupt):
            training.distill(teacher, models.build_student(teacher), dataset, params, tmp_path, tokenizer,
                             progress=False)
    capsys.readouterr()
    training.distill(teacher, models.build_student(teacher), dataset, params, tmp_path, tokenizer, progress=False)
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"resuming {tmp_path.name} from step 3 of 6: checkpoint {tmp_path}/checkpoint-")
    assert line.endswith(" s ago)")
    training.distill(teacher, models.build_student(teacher), dataset, distill_params(max_steps=6, resume=False),
                     tmp_path, tokenizer, progress=False)
    assert f"resume=false: starting {tmp_path.name} over at step 0" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- checkpoint files

def test_a_checkpoint_written_into_a_set_aside_slot_verifies(setup, tmp_path):
    teacher, tokenizer, _ = setup
    student = models.build_student(teacher)
    for step in (1, 2):
        checkpoints.save_checkpoint(tmp_path, student, tokenizer, {"step": step})
    checkpoints.set_aside(tmp_path / "checkpoint-b", "set aside: its weights gave a non-finite loss")
    slot = checkpoints.save_checkpoint(tmp_path, student, tokenizer, {"step": 2})
    assert slot.name == "checkpoint-b" and checkpoints.verify(slot)[1] is None
    assert not (slot / checkpoints.SET_ASIDE).exists()
    # the next write goes to the other slot; a crash there still leaves this one
    (tmp_path / "checkpoint-a" / "manifest.json").unlink()
    assert checkpoints.find_checkpoint(tmp_path) == slot


@pytest.mark.parametrize("manifest", [[1, 2], {"step": 3}, {"step": 3, "files": []}, {"step": "3", "files": {}},
                                      {"step": 3, "files": {"training_state.pt": 12}}])
def test_a_manifest_of_the_wrong_shape_falls_back_to_the_other_slot(setup, tmp_path, manifest):
    teacher, tokenizer, _ = setup
    student = models.build_student(teacher)
    for step in (1, 2):
        checkpoints.save_checkpoint(tmp_path, student, tokenizer, {"step": step})
    (tmp_path / "checkpoint-b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="checkpoint-b is not usable .unreadable manifest.json"):
        assert checkpoints.find_checkpoint(tmp_path) == tmp_path / "checkpoint-a"


def test_a_full_disk_during_a_checkpoint_names_the_disk_and_the_path(setup, tmp_path, monkeypatch):
    teacher, tokenizer, _ = setup
    student = models.build_student(teacher)
    checkpoints.save_checkpoint(tmp_path, student, tokenizer, {"step": 1})

    def full_disk(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed, unexpected pos 64")
    monkeypatch.setattr(checkpoints.torch, "save", full_disk)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.save_checkpoint(tmp_path, student, tokenizer, {"step": 2})
    message = str(err.value)
    assert f"could not write the checkpoint of step 2 to {tmp_path / 'checkpoint-b'}" in message
    assert "MB free there" in message and "Free space on that disk" in message and "unexpected pos" in message
    assert checkpoints.find_checkpoint(tmp_path) == tmp_path / "checkpoint-a"  # the previous one is kept


# ------------------------------------------------------------------------------------------- the stages

def smoke_distill(tmp_path, **overrides):
    values = dict(teacher="smoke/tiny-bert", run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"),
                  max_steps=2, checkpoint_every=2, log_every=1, undistilled_name="undistilled", ablations={},
                  heldout_sequences=0)
    return load_params(config.DISTILL, profile="smoke", **{**values, **overrides})


def live_lock_of_another_host(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.lock").write_text(json.dumps({"pid": 4242, "host": "colabvm1", "started": "2026-12-01T10:00:00",
                                                 "renewed": time.time()}))


def test_a_busy_folder_is_refused_before_tokenizing_or_loading(tmp_path, monkeypatch):
    params = smoke_distill(tmp_path)
    live_lock_of_another_host(tmp_path / "runs" / "student")

    def never(*args, **kwargs):
        raise AssertionError("the corpus was read before the lock was checked")
    monkeypatch.setattr(data, "read_corpus", never)
    monkeypatch.setattr(distill, "load_teacher", never)
    from lib import preflight
    with pytest.raises(ParameterError, match="'colabvm1'.*run again then") as err:
        preflight.check(params)
    with pytest.raises(ParameterError, match="'colabvm1'") as err2:
        distill.run(params, progress=False)
    assert str(err.value) == str(err2.value)
    assert not (tmp_path / "runs" / "undistilled").exists()


def test_a_refused_resume_leaves_the_undistilled_student_as_it_was(tmp_path):
    params = smoke_distill(tmp_path, n_student_layers=2)
    distill.run(params, progress=False)
    weights = tmp_path / "runs" / "undistilled" / "model.safetensors"
    before = weights.read_bytes()
    with pytest.raises(ParameterError, match="n_student_layers") as err:
        distill.run(smoke_distill(tmp_path, n_student_layers=1, resume=True), progress=False)
    assert "a resumed run cannot change" in str(err.value)
    assert weights.read_bytes() == before
    assert not list((tmp_path / "runs").rglob("run.lock"))  # released after the refusal


def test_the_distill_command_runs_the_preflight_with_its_messages(tmp_path):
    run_dir = tmp_path / "runs"
    result = subprocess.run([sys.executable, "-m", "lib.distill", "--profile", "smoke", "-p", f"run_dir={run_dir}",
                             "-p", f"results_dir={tmp_path / 'results'}", "-p", f"teacher={run_dir}/teacher"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode == 1
    assert (f"ERROR: parameter 'teacher': {run_dir}/teacher not found — it is produced by stage 'teacher' "
            "(01_teacher); run that stage first") in result.stderr
    assert "Provide a mirror" not in result.stderr + result.stdout


def test_the_glue_stage_takes_its_results_folder_lock(tmp_path, monkeypatch):
    params = load_params(config.GLUE, profile="smoke", run_dir=str(tmp_path / "runs"),
                         results_dir=str(tmp_path / "results"))
    live_lock_of_another_host(tmp_path / "results" / config.GLUE)
    monkeypatch.setattr(finetune, "run_sweep", lambda *a, **k: pytest.fail("the sweep ran beside a live lock"))
    with pytest.raises(ParameterError, match="'colabvm1'"):
        finetune.run(params)
