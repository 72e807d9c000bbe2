"""`make gpu-check ARGS=--cpu`: the GPU check's code on tiny shapes on CPU, CUDA-only checks skipped by name."""
import json
import os
import subprocess
import sys

import pytest

from lib import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import gpu_check  # noqa: E402


def test_peak_flops_by_gpu_name():
    assert gpu_check.peak_flops("Tesla T4") == 65e12
    assert gpu_check.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_check.peak_flops("NVIDIA H200") == gpu_check.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_check.peak_flops("NVIDIA L4") == 121e12
    assert gpu_check.peak_flops("NVIDIA L40S") is None and gpu_check.peak_flops("NVIDIA GeForce RTX 4090") is None


def test_make_gpu_check_cpu_dry_run(tmp_path):
    out = tmp_path / "gpu-check.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(["make", "gpu-check", f"ARGS=--cpu --out {out}", f"PYTHON={sys.executable}"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    for name in ("t4_step", "latency_timer"):  # each CUDA-only check says it was skipped
        assert f"{name}: skipped (no CUDA)" in result.stdout
    record = json.loads(out.read_text())
    assert record["passed"] and record["dry_run"] and record["gpu"] is None and record["failed"] == []
    checks = record["checks"]
    assert {k: v["status"] for k, v in checks.items()} == {
        "precision": "pass", "t4_step": "skipped (no CUDA)", "resume_fp16": "pass", "resume_bf16": "pass",
        "launcher_precision": "pass", "latency_timer": "skipped (no CUDA)"}
    assert checks["precision"]["t4"] == "float16" and checks["precision"]["t4_grad_scaler"]
    assert checks["resume_fp16"]["precision"] == "float16" and checks["resume_bf16"]["precision"] == "bfloat16"
    for name in ("resume_fp16", "resume_bf16"):  # on CPU the resumed run is the uninterrupted one, exactly
        assert checks[name]["max_abs_weight_diff"] == 0.0 and checks[name]["interrupted_at"] == 3
    assert checks["launcher_precision"]["ran"] == ["torch.float32"]
    for name in ("t4", "paper"):
        assert record["throughput"][name]["tokens_per_s"] > 0 and record["throughput"][name]["mfu"] is None
    assert record["provenance"]["git_commit"]
    assert not (REPO_ROOT / "results" / "gpu-check" / "cpu-dry-run.json").exists()


def test_t4_budget_arithmetic_from_the_profile():
    from lib import budget, config
    rows = {r["stage"]: r for r in budget.t4_budget("t4", mfu=0.3)}
    n_teacher, n_student = 109_514_298, 66_985_530  # BERT-base and DistilBERT, as published
    assert budget.parameter_counts() == (n_teacher, n_student)
    distill = config.load_params("distill", profile="t4")
    tokens = distill.max_steps * distill.effective_batch_size * distill.max_length
    assert rows["2 distill"]["flops"] == tokens * (6 * n_student + 2 * n_teacher)
    assert rows["2 distill"]["t4_hours"] == pytest.approx(rows["2 distill"]["flops"] / (65e12 * 0.3) / 3600)
    # GLUE: 3 seeds, the four large training sets capped at 50,000; teacher at BERT-base size, the others DistilBERT's
    glue = config.load_params("glue", profile="t4")
    per_example = {t: 6 * glue.n_epoch * min(budget.TRAIN_SIZES[t], 50_000 if t in ("sst2", "qqp", "mnli", "qnli") else 10**9)
                   + 2 * budget.EVAL_SIZES[t] for t in glue.tasks}
    expected = 128 * sum(per_example.values()) * (n_teacher + 2 * n_student) * 3
    assert rows["3 GLUE"]["flops"] == pytest.approx(expected)
    assert rows["5 latency"]["t4_hours"] == 0
    assert sum(r["t4_hours"] for r in rows.values()) < 25  # fits a handful of Colab sessions
