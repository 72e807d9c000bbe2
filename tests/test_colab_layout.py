"""The generated Colab copies, run in Colab's own layout (tests/colab_layout.py): the kernel in /content beside an
unrelated /lib, the clone in /content/distilbert-reproduced, google.colab imported at start-up, results on Drive.
Running them from the repository root (tests/test_colab.py) could not see the first two."""
import json

import pytest

from colab_layout import code_cell, colab_layout, printed

WHERE = ("import json, os, socket, sys, lib\n"
         "print(json.dumps({'lib': lib.__file__, 'path': sys.path, 'cwd': os.getcwd(), 'host': socket.gethostname(),\n"
         "                  'colab': 'google.colab' in sys.modules}))")


@pytest.fixture
def layout(tmp_path):
    return colab_layout(tmp_path)


@pytest.mark.slow
def test_stage_1_then_stage_2_run_all_in_colabs_layout_onto_drive(layout):
    from lib import REPO_ROOT
    teacher = layout.notebook("01_teacher")  # the defaults: smoke profile, Drive folders
    teacher.cells.append(code_cell(WHERE))
    layout.run(teacher, hostname="colab-vm-1")
    where = json.loads(printed(teacher))
    assert where["colab"] and where["host"] == "colab-vm-1"  # the stand-in, from the kernel's start
    assert where["lib"] == str(layout.home / "lib" / "__init__.py")  # the clone's lib, not <tmp>/lib
    assert where["cwd"] == str(layout.home)
    assert not any(entry.startswith(str(REPO_ROOT)) for entry in where["path"])  # nothing found by cheating
    results = layout.drive_dir("results")
    assert (results / "teacher.json").is_file() and (layout.drive_dir("runs") / "teacher").is_dir()
    recorded = (results / "teacher.json").read_text()
    again = layout.run(layout.notebook("01_teacher"), hostname="colab-vm-2")  # Run all after a disconnect, new VM
    said = "".join(printed(again, i) for i in range(len(again.cells)) if again.cells[i].cell_type == "code")
    assert "reusing the teacher" in said  # the teacher on Drive, not a second adaptation
    assert (results / "teacher.json").read_text() == recorded

    distill = layout.notebook("02_distill")  # reads stage 1's teacher from the Drive run_dir
    layout.run(distill)
    record = json.loads((results / "distill-student.json").read_text())
    params = record["provenance"]["params"]
    assert params["run_dir"] == str(layout.drive_dir("runs")) and params["resume"] is True  # Colab's default


# kill -9 of the kernel (a VM that is gone: no handler runs, no lock is released) once a checkpoint of ``step`` or
# later is on Drive; a cell of its own before the setup, as a user's cell would be
KILL_AT_CHECKPOINT = """\
import glob, json, os, signal, threading, time
def _kill_at_checkpoint(folder, step):
    while True:
        for manifest in glob.glob(os.path.join(folder, "checkpoint-*", "manifest.json")):
            try:
                if json.load(open(manifest))["step"] >= step:
                    os.kill(os.getpid(), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        time.sleep(0.01)
threading.Thread(target=_kill_at_checkpoint, args=({folder!r}, {step}), daemon=True).start()"""


def weights(folder):
    from safetensors.torch import load_file
    return load_file(folder / "model.safetensors")


@pytest.mark.slow
def test_a_disconnect_to_a_new_vm_resumes_on_run_all_to_the_uninterrupted_weights(layout):
    import shutil
    import time

    from nbclient.exceptions import DeadKernelError

    from colab_layout import copy_working_tree
    lease = {"DISTILBERT_LEASE_EXPIRY_S": "3"}  # a new Colab VM takes minutes to start; here the lease is short
    layout.run(layout.notebook("01_teacher"), env=lease, hostname="colab-vm-1")
    edits = dict(max_steps=24, checkpoint_every=4, ablations={})
    runs = layout.drive_dir("runs")
    interrupted = layout.notebook("02_distill", **edits)
    interrupted.cells.insert(2, code_cell(KILL_AT_CHECKPOINT.format(folder=str(runs / "student"), step=8)))
    with pytest.raises(DeadKernelError):
        layout.run(interrupted, env=lease, hostname="colab-vm-1")
    killed = time.time()
    holder = json.loads((runs / "student" / "run.lock").read_text())
    assert holder["host"] == "colab-vm-1" and not (runs / "student" / "model.safetensors").exists()

    # a new VM: /content is new (Drive is not), another host name; Run all, nothing else
    for entry in layout.content.iterdir():
        if entry != layout.drive:
            shutil.rmtree(entry)
    copy_working_tree(layout.home)
    time.sleep(max(0.0, killed + 3.5 - time.time()))
    resumed = layout.run(layout.notebook("02_distill", **edits), env=lease, hostname="colab-vm-2")
    out = "".join(printed(resumed, i) for i in range(len(resumed.cells)) if resumed.cells[i].cell_type == "code")
    assert f"taking over the stale lock {runs / 'student' / 'run.lock'} (pid {holder['pid']} on host 'colab-vm-1')" in out
    assert "resuming student from step " in out
    record = json.loads((layout.drive_dir("results") / "distill-student.json").read_text())
    assert record["resumed_from"] >= 8 and record["steps"] == 24

    layout.run(layout.notebook("02_distill", run_name="reference", **edits), env=lease, hostname="colab-vm-3")
    reference, student = weights(runs / "reference"), weights(runs / "student")
    assert reference.keys() == student.keys()
    for name, tensor in reference.items():
        assert (student[name] == tensor).all(), name
