"""The documented multi-process command, `torchrun --nproc_per_node 2 -m lib.distill`, on 2 CPU processes (gloo):
every rank trains to the same weights, rank 0 alone tokenizes, writes results, logs and models."""
import json
import os
import re
import subprocess
import sys

import pytest
from transformers import AutoModelForMaskedLM

from lib import REPO_ROOT, training
from lib.config import DistillParams, ParameterError, make_params


def test_distill_module_documents_a_command_that_starts_n_processes():
    import lib.distill
    assert "torchrun --standalone --nproc_per_node 2 -m lib.distill" in lib.distill.__doc__
    # accelerate launch --cpu --num_processes 2 starts one process (checked with accelerate 1.15): only named as a trap
    assert "`accelerate launch --cpu --num_processes 2` starts ONE process" in lib.distill.__doc__


def test_torchrun_two_cpu_processes_one_writer_identical_weights(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "lib.distill", "--profile", "smoke", "--no-progress",
               "-p", "teacher=smoke/tiny-bert", "-p", f"run_dir={runs}", "-p", f"results_dir={results}",
               "-p", "max_steps=3", "-p", "log_every=1", "-p", "batch_size=4", "-p", "effective_batch_size=16",
               "-p", "undistilled_name=undistilled", "-p", "ablations={no-cos: {alpha_cos: 0.0}}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               ACCELERATE_MIXED_PRECISION="bf16")  # the launcher's precision must not win over the stage's fp32
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]

    # one results file per run, each written once, by rank 0
    writes = re.findall(r"\[rank (\d)\] results written: (\S+)", out)
    assert sorted(writes) == [("0", str(results / "distill-no-cos.json")), ("0", str(results / "distill-student.json"))]
    assert sorted(p.name for p in results.iterdir()) == ["distill-no-cos.json", "distill-student.json"]
    assert re.findall(r"\[rank (\d)\] undistilled student saved", out) == ["0"]
    assert (runs / "undistilled" / "config.json").is_file()
    # the corpus was tokenized once, by rank 0; rank 1 read that cache
    assert len(list((runs / "corpus" / "distill").glob("tokens-*.arrow"))) == 1

    for name in ("student", "no-cos"):
        record = json.loads((results / f"distill-{name}.json").read_text())
        # every rank ends with the weights rank 0 saved and recorded (gathered, printed once by rank 0)
        [digests] = re.findall(rf"^{name}: .* weights sha1 by rank: (.*)$", out, flags=re.MULTILINE)
        assert digests.split() == [record["weights_sha1"]] * 2
        assert training.weights_digest(AutoModelForMaskedLM.from_pretrained(runs / name)) == record["weights_sha1"]
        # 16 sequences per step = 4 per micro-batch x 2 accumulation x 2 processes; fp32 despite the launcher's bf16
        assert record["world_size"] == 2 and record["gradient_accumulation_steps"] == 2
        assert record["effective_batch_size"] == 16 and record["precision"] == "float32"
        log = training.read_log(runs / name / "log.jsonl")  # one writer: no duplicated records
        assert [r["step"] for r in log] == [1, 2, 3] == [r["step"] for r in record["loss_curve"]]


def test_ranks_that_end_with_different_weights_fail_the_stage(monkeypatch, capsys):
    import accelerate.utils
    from lib.distill import check_ranks_agree
    summary = dict(steps=3, precision="float32", world_size=2, weights_sha1="aaa")
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda digests: digests * 2)  # two ranks agreeing
    check_ranks_agree("student", summary)
    assert capsys.readouterr().out == "student: steps 3, precision float32, world size 2, weights sha1 by rank: aaa aaa\n"
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda digests: digests + ["bbb"])  # rank 1 drifted
    with pytest.raises(RuntimeError, match="student: the 2 processes ended with different weights.*aaa, bbb"):
        check_ranks_agree("student", summary)


def test_effective_batch_size_sets_accumulation_for_any_process_count():
    params = make_params(DistillParams, dict(corpus=[{"id": "x"}], batch_size=4, effective_batch_size=32))
    assert [training.accumulation_steps(params, world) for world in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(ParameterError, match="effective_batch_size.*batch_size 4 x 3 processes"):
        training.accumulation_steps(params, 3)
    plain = make_params(DistillParams, dict(corpus=[{"id": "x"}], batch_size=4, gradient_accumulation_steps=5))
    assert training.accumulation_steps(plain, 2) == 5  # unset: per-process accumulation as given
    with pytest.raises(ParameterError, match="effective_batch_size"):
        make_params(DistillParams, dict(corpus=[{"id": "x"}], batch_size=4, effective_batch_size=30))
