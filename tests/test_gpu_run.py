"""`make gpu-run`: the gpu profile's files, the no-GPU refusal, and the CPU dry run of the whole command."""
import dataclasses
import os
import json
import subprocess
import sys

import pytest

from lib import REPO_ROOT, config

from conftest import SHARED_HUB

RUN = [sys.executable, "scripts/gpu_run.py"]


@pytest.mark.parametrize("stage", list(config.STAGES))
def test_the_gpu_profile_loads_and_validates(stage):
    values = config.profile_values("gpu", stage)  # real fields only, whether or not the mirror is here
    names = {f.name for f in dataclasses.fields(config.STAGES[stage].params)}
    assert set(values) <= names, sorted(set(values) - names)
    if not SHARED_HUB.is_dir():
        pytest.skip(f"offline mirror not present at {SHARED_HUB}: the values' checks need it")
    params = config.load_params(stage, profile="gpu")
    assert params.profile == "gpu" and getattr(params, "precision", "auto") == "auto"


def test_the_gpu_profile_runs_the_cpu_study_with_its_ablations():
    cpu, gpu = (config.profile_values(p, config.DISTILL) for p in ("cpu", "gpu"))
    assert gpu["ablations"] == cpu["ablations"] and gpu["teacher"] == cpu["teacher"]
    assert gpu["max_steps"] * gpu["batch_size"] > cpu["max_steps"] * cpu["batch_size"]  # bounded, and larger


def test_without_a_gpu_it_stops_with_a_clear_message():
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("a CUDA GPU is here")
    result = subprocess.run(RUN, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no CUDA GPU here" in result.stderr and "ARGS=--cpu" in result.stderr


@pytest.mark.slow
def test_make_gpu_run_cpu_dry_run_writes_both_results(tmp_path):
    result = subprocess.run(["make", "--no-print-directory", "gpu-run", f"ARGS=--cpu --out {tmp_path}",
                             f"PYTHON={sys.executable}"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    check = json.loads((tmp_path / "gpu-check" / "cpu-dry-run.json").read_text())
    assert check["passed"] and check["dry_run"]
    for name in ("teacher", "distill-student", "glue", "imdb_squad", "latency"):
        assert (tmp_path / "gpu" / f"{name}.json").is_file(), name
    for step in ("gpu-check --cpu", "smoke-sized gpu profile"):
        assert f"### gpu-run: {step} done in" in result.stdout
    summary = [line for line in result.stdout.splitlines() if line.startswith("### gpu-run: ")][-1]
    assert "; total " in summary  # the last gpu-run line sums the steps (make may print its own lines after it)
