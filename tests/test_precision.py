"""Mixed precision on CPU: bf16 autocast, and the fp16 + GradScaler path (forced on CPU with
lib.training.CPU_FP16), each interrupted, resumed and compared with an uninterrupted run; the stage's precision
wins over a launcher's ACCELERATE_MIXED_PRECISION; a T4's choice from its compute capability."""
import pytest
import torch

from lib import models, training
from lib.config import ParameterError
from test_training import distill_params, one_thread, setup, tiny_setup  # noqa: F401 (fixtures)


@pytest.fixture
def cpu_fp16(monkeypatch):
    monkeypatch.setattr(training, "CPU_FP16", True)


def latest_state(run_dir):
    """The newest training_state.pt under run_dir (whatever the checkpoint folders are called)."""
    states = [torch.load(p, weights_only=True) for p in run_dir.rglob("training_state.pt")]
    return max(states, key=lambda s: s["step"])


def test_precision_choice_by_compute_capability_without_a_gpu():
    assert training.select_precision("auto", capability=(7, 5)) == (torch.float16, True)   # T4: fp16 + scaler
    assert training.select_precision("auto", capability=(8, 0)) == (torch.bfloat16, False)  # A100
    assert training.select_precision("auto", capability=(9, 0)) == (torch.bfloat16, False)  # H100 / H200
    assert training.select_precision("fp32", capability=(7, 5)) == (torch.float32, False)
    with pytest.raises(ParameterError, match="bf16 needs compute capability >= 8, this GPU has 7.5"):
        training.select_precision("bf16", capability=(7, 5))


def test_fp16_on_cpu_only_when_forced(monkeypatch):
    with pytest.raises(ParameterError, match="precision.*fp16 training needs a CUDA GPU"):
        training.select_precision("fp16", "cpu")
    monkeypatch.setattr(training, "CPU_FP16", True)
    assert training.select_precision("fp16", "cpu") == (torch.float16, True)
    assert training.select_precision("auto", "cpu") == (torch.float32, False)  # forcing never changes auto


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_launcher_mixed_precision_cannot_override_the_stage(setup, tmp_path, monkeypatch, precision, dtype):
    teacher, tokenizer, dataset = setup
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16" if precision == "bf16" else "bf16")
    student, seen = models.build_student(teacher), set()
    for module in student.modules():  # what the matmuls ran in (accelerate casts the logits back to fp32)
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    summary = training.distill(teacher, student, dataset, distill_params(max_steps=2, precision=precision),
                               tmp_path, tokenizer, progress=False, device="cpu")
    assert seen == {dtype}  # the dtype that ran ...
    assert summary["precision"] == str(dtype).removeprefix("torch.")  # ... is the one recorded


def interrupted_and_resumed(teacher, tokenizer, dataset, params, run_dir, stop_at):
    def interrupt(record):
        if record["step"] == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.distill(teacher, models.build_student(teacher), dataset, params, run_dir, tokenizer, progress=False,
                         on_log=interrupt, device="cpu")
    at_interrupt = latest_state(run_dir)
    assert at_interrupt["step"] == stop_at
    resumed = models.build_student(teacher)  # fresh weights: everything comes from the checkpoint
    summary = training.distill(teacher, resumed, dataset, params, run_dir, tokenizer, progress=False, device="cpu")
    assert summary["resumed_from"] == stop_at
    return resumed, summary, at_interrupt


def assert_same_run(reference, ref_summary, resumed, summary):
    assert summary["steps"] == ref_summary["steps"] and summary["precision"] == ref_summary["precision"]
    for k, v in reference.state_dict().items():
        assert torch.allclose(resumed.state_dict()[k], v, atol=1e-6), k
    assert [r["loss"] for r in summary["log"]] == pytest.approx([r["loss"] for r in ref_summary["log"]], rel=1e-5)


def test_bf16_distillation_interrupted_resumes_to_the_uninterrupted_run(setup, tmp_path):
    teacher, tokenizer, dataset = setup
    params = distill_params(max_steps=8, checkpoint_every=100, precision="bf16")
    reference = models.build_student(teacher)
    ref_summary = training.distill(teacher, reference, dataset, params, tmp_path / "reference", tokenizer,
                                   progress=False, device="cpu")
    assert ref_summary["precision"] == "bfloat16"
    resumed, summary, _ = interrupted_and_resumed(teacher, tokenizer, dataset, params, tmp_path / "run", stop_at=5)
    assert_same_run(reference, ref_summary, resumed, summary)
    # bf16 really changed the arithmetic: an fp32 run ends elsewhere
    fp32 = models.build_student(teacher)
    training.distill(teacher, fp32, dataset, distill_params(max_steps=8, checkpoint_every=100), tmp_path / "fp32",
                     tokenizer, progress=False, device="cpu")
    assert any(not torch.allclose(fp32.state_dict()[k], v, atol=1e-6) for k, v in reference.state_dict().items())


def test_fp16_grad_scaler_distillation_interrupted_resumes_to_the_uninterrupted_run(setup, tmp_path, cpu_fp16):
    teacher, tokenizer, dataset = setup
    params = distill_params(max_steps=8, checkpoint_every=100, precision="fp16")
    reference = models.build_student(teacher)
    ref_summary = training.distill(teacher, reference, dataset, params, tmp_path / "reference", tokenizer,
                                   progress=False, device="cpu")
    assert ref_summary["precision"] == "float16"
    ref_scales = [r["grad_scale"] for r in ref_summary["log"]]
    resumed, summary, at_interrupt = interrupted_and_resumed(teacher, tokenizer, dataset, params, tmp_path / "run",
                                                             stop_at=5)
    assert_same_run(reference, ref_summary, resumed, summary)
    # the scaler's state round-trips: saved at the interrupt, restored, and it ends where the reference's did
    assert at_interrupt["scaler"]["scale"] == ref_scales[4] and at_interrupt["scaler"]["_growth_tracker"] == 5
    assert [r["grad_scale"] for r in summary["log"]] == ref_scales
    assert latest_state(tmp_path / "run")["scaler"] == latest_state(tmp_path / "reference")["scaler"]
