"""A GPU check of the distillation code in under 5 minutes: no network, no pretrained weights.

    make gpu-check                 # on a GPU: writes results/gpu-check/<gpu name>.json (commit it)
    make gpu-check ARGS=--cpu      # CPU dry run on tiny shapes (CI): the same code, CUDA-only checks skipped

Models are random-init BERT-base (transformers' BertConfig defaults) and its 6-layer DistilBERT student, fed
random token ids (no tokenizer download). It asserts:

- precision: the choice for this GPU, and for a T4's compute capability 7.5 (fp16 + GradScaler);
- t4_step: one full optimizer step at the t4 micro-batch (32 x 256, fp16 + GradScaler, SDPA attention, as a T4
  runs it) under a 14.5 GiB memory cap, with the peak memory against lib.training.estimate_memory;
- resume_fp16 / resume_bf16: distillation interrupted and resumed ends where an uninterrupted run does;
- launcher_precision: ACCELERATE_MIXED_PRECISION cannot override the stage's precision;
- latency_timer: lib.latency's CUDA-event timer agrees with a synchronised wall clock;

and measures distillation tokens/s and model FLOPs utilisation (MFU) at the t4 (32 x 256) and paper (5 x 512)
micro-batches. The script exits 1 when a check fails (after writing the JSON with the failure).
"""
import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForMaskedLM, BertTokenizer  # noqa: E402

from lib import latency, losses, models, training  # noqa: E402
from lib.config import DistillParams, make_params  # noqa: E402
from lib.data import mask_tokens, mlm_token_probs  # noqa: E402
from lib.results import GpuCheck, provenance, write  # noqa: E402

GIB = 2 ** 30
T4_CAPABILITY = (7, 5)
T4_MEMORY_CAP_GIB = 14.5  # a T4 has 15.1 GiB usable; keep room for the CUDA context
# dense half-precision tensor-core peaks (FLOP/s) from the vendors' data sheets, matched on the device name
PEAK_FLOPS = {"T4": 65e12, "A100": 312e12, "H100": 989e12, "H200": 989e12, "L4": 121e12, "V100": 125e12}
# resume tolerance on CUDA: kernels with atomics (embedding backward) are not bitwise repeatable even with
# deterministic algorithms requested, and AdamW normalises tiny gradient differences up to ~lr per step
RESUME_ATOL = {"cpu": 1e-6, "cuda": 4 * 5e-4}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def peak_flops(gpu_name):
    """The dense fp16/bf16 peak of a GPU by name, or None when it is not in PEAK_FLOPS."""
    for key, flops in PEAK_FLOPS.items():
        if re.search(rf"\b{key}\b", gpu_name or ""):
            return flops
    return None


def scale(cpu):
    """Model config and micro-batches: BERT-base and the real shapes on a GPU, tiny ones for the CPU dry run."""
    if cpu:
        return dict(config=BertConfig(vocab_size=256, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=128),
                    t4=(4, 32), paper=(2, 64), resume=(4, 32), timed_steps=2)
    return dict(config=BertConfig(), t4=(32, 256), paper=(5, 512), resume=(8, 128), timed_steps=10)


def random_world(config, n_sequences, seq_length, seed=0):
    """A random-init BERT teacher, a tokenizer over its vocabulary (made-up words) and random full-length sequences."""
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(config.vocab_size - 5)])})
    torch.manual_seed(seed)
    teacher = BertForMaskedLM._from_config(config, attn_implementation="sdpa").eval()
    ids = torch.randint(len(SPECIALS), config.vocab_size, (n_sequences, seq_length), generator=torch.Generator().manual_seed(seed))
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    dataset = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "length": [seq_length] * n_sequences})
    return teacher, tokenizer, dataset


def distill_params(run_dir, **values):
    defaults = dict(corpus=[{"id": "random"}], run_dir=str(run_dir), max_steps=6, checkpoint_every=100, log_every=1,
                    gradient_accumulation_steps=1, warmup_prop=0.0)
    return make_params(DistillParams, {**defaults, **values})


def one_step(teacher, student, optimizer, scaler, batch_size, seq_length, dtype, device, generator):
    """One optimizer step of distillation on random ids, as lib.training.distill runs it."""
    vocab = teacher.config.vocab_size
    ids = torch.randint(len(SPECIALS), vocab, (batch_size, seq_length), generator=generator)
    mask = torch.ones_like(ids)
    probs = mlm_token_probs(torch.ones(vocab), 0.0, range(len(SPECIALS)))
    ids, labels = mask_tokens(ids, mask, probs, SPECIALS.index("[MASK]"), range(len(SPECIALS)), generator=generator)
    weights = losses.loss_settings()  # the released recipe: every term's default weight and options
    terms = training.forward_losses(teacher, student, ids.to(device), mask.to(device), labels.to(device), weights,
                                    training.make_layer_map(student, "last"), dtype)
    scaler.scale(terms["loss"]).backward()
    training.optimizer_step(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), scaler,
                            student.parameters(), 5.0)
    return terms["loss"].detach()


# ------------------------------------------------------------------------------------------------ checks

def check_precision(ctx):
    t4 = training.select_precision("auto", capability=T4_CAPABILITY)
    assert t4 == (torch.float16, True), f"T4 (7.5) auto precision is {t4}, expected fp16 + GradScaler"
    dtype, use_scaler = training.select_precision("auto", ctx["device"])
    if ctx["device"].type == "cuda":
        major, _ = torch.cuda.get_device_capability()
        expected = (torch.bfloat16, False) if major >= 8 else (torch.float16, True)
    else:
        expected = (torch.float32, False)
    assert (dtype, use_scaler) == expected, f"auto precision here is {(dtype, use_scaler)}, expected {expected}"
    return dict(here=str(dtype).removeprefix("torch."), grad_scaler=use_scaler, t4="float16", t4_grad_scaler=True)


def check_t4_step(ctx):
    if ctx["device"].type != "cuda":
        return None
    batch_size, seq_length = ctx["scale"]["t4"]
    teacher = ctx["teacher"].to(ctx["device"])
    student = models.build_student(teacher).to(ctx["device"])
    attention = (teacher.config._attn_implementation, student.config._attn_implementation)
    assert attention == ("sdpa", "sdpa"), f"attention implementations {attention}, a T4 runs sdpa"
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, T4_MEMORY_CAP_GIB * GIB / total))
    try:
        torch.cuda.reset_peak_memory_stats()
        optimizer = training.adamw(student, 5e-4)
        scaler = torch.amp.GradScaler("cuda")
        loss = one_step(teacher, student, optimizer, scaler, batch_size, seq_length, torch.float16, ctx["device"],
                        torch.Generator().manual_seed(0))
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / GIB
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    estimate = training.estimate_memory(teacher.config, student.config, batch_size, seq_length, "fp16")
    del student, optimizer
    torch.cuda.empty_cache()
    assert torch.isfinite(loss), f"non-finite loss {loss}"
    assert peak <= T4_MEMORY_CAP_GIB
    return dict(micro_batch=[batch_size, seq_length], precision="float16", grad_scaler=True, attention=attention[1],
                cap_gib=T4_MEMORY_CAP_GIB, peak_gib=round(peak, 3), estimate_gib=round(estimate["total_gib"], 3),
                estimate_over_peak=round(estimate["total_gib"] / peak, 3),
                logits_gib_estimated=round(estimate["parts"]["logits and loss"], 3))


def check_resume(ctx, precision):
    device = ctx["device"]
    training.CPU_FP16 = precision == "fp16" and device.type == "cpu"  # the dry run's fp16 + GradScaler path
    try:
        return _check_resume(ctx, precision, device)
    finally:
        training.CPU_FP16 = False


def _check_resume(ctx, precision, device):
    if precision == "bf16" and device.type == "cuda" and torch.cuda.get_device_capability()[0] < 8:
        return dict(status="skipped (bf16 needs compute capability >= 8)")
    batch_size, seq_length = ctx["scale"]["resume"]
    teacher, tokenizer, dataset = random_world(ctx["scale"]["config"], 8 * batch_size, seq_length, seed=1)
    params = distill_params(ctx["work"] / f"resume-{precision}", batch_size=batch_size, max_length=seq_length,
                            precision=precision, learning_rate=5e-4)
    run = lambda student, out, **kw: training.distill(teacher, student, dataset, params, out, tokenizer,  # noqa: E731
                                                      progress=False, device=str(device), **kw)
    reference = models.build_student(teacher)
    ref = run(reference, params.path("run_dir") / "reference")

    def interrupt(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    try:
        run(models.build_student(teacher), params.path("run_dir") / "run", on_log=interrupt)
        raise AssertionError("the interrupt did not stop the run")
    except KeyboardInterrupt:
        pass
    resumed = models.build_student(teacher)
    again = run(resumed, params.path("run_dir") / "run")
    assert again["resumed_from"] == 3 and again["steps"] == ref["steps"] == 6, (again["resumed_from"], again["steps"])
    expected = str(training.DTYPES[precision]).removeprefix("torch.")
    assert ref["precision"] == again["precision"] == expected, (ref["precision"], again["precision"])
    diff = max(float((resumed.state_dict()[k].float() - v.float()).abs().max()) for k, v in reference.state_dict().items())
    loss_diff = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(again["log"], ref["log"]))
    atol = RESUME_ATOL[device.type]
    assert diff <= atol, f"resumed weights differ from the uninterrupted run by {diff} > {atol}"
    assert loss_diff <= 1e-3, f"resumed losses differ by {loss_diff:.2e} (relative) > 1e-3"
    out = dict(precision=expected, steps=6, interrupted_at=3, max_abs_weight_diff=diff, tolerance=atol,
               max_rel_loss_diff=loss_diff, micro_batch=[batch_size, seq_length])
    if precision == "fp16":
        out["grad_scale"] = [r["grad_scale"] for r in again["log"]]
        assert out["grad_scale"] == [r["grad_scale"] for r in ref["log"]], "the GradScaler did not resume its scale"
    return out


def check_launcher_precision(ctx):
    device = ctx["device"]
    batch_size, seq_length = ctx["scale"]["resume"]
    teacher, tokenizer, dataset = random_world(ctx["scale"]["config"], 4 * batch_size, seq_length, seed=2)
    params = distill_params(ctx["work"] / "launcher", batch_size=batch_size, max_length=seq_length, precision="fp32",
                            max_steps=2)
    student, seen = models.build_student(teacher), set()
    for module in student.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda module, args, out: seen.add(str(out.dtype)))
    before = os.environ.get("ACCELERATE_MIXED_PRECISION")
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"
    try:
        summary = training.distill(teacher, student, dataset, params, params.path("run_dir"), tokenizer,
                                   progress=False, device=str(device))
    finally:
        if before is None:
            os.environ.pop("ACCELERATE_MIXED_PRECISION")
        else:
            os.environ["ACCELERATE_MIXED_PRECISION"] = before
    assert seen == {"torch.float32"}, f"the student's matmuls ran in {seen} with precision fp32 and a bf16 launcher"
    assert summary["precision"] == "float32", summary["precision"]
    return dict(launcher="bf16", stage="fp32", ran=sorted(seen), recorded=summary["precision"])


def check_latency_timer(ctx):
    device = ctx["device"]
    if device.type != "cuda":
        return None
    a = torch.randn(4096, 4096, device=device, dtype=torch.float16)

    def step():
        for _ in range(20):
            a @ a

    for _ in range(3):
        step()
    events, walls = [], []
    for _ in range(10):
        events.append(latency._timed(step, device))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
    event, wall = statistics.median(events), statistics.median(walls)
    assert abs(event - wall) <= 0.1 * wall + 1e-3, f"CUDA-event median {event * 1e3:.2f} ms vs wall {wall * 1e3:.2f} ms"
    return dict(event_ms=round(event * 1e3, 3), wall_ms=round(wall * 1e3, 3), tolerance="10% + 1 ms")


def measure_throughput(ctx, name):
    """Distillation tokens/s at a micro-batch (accumulation 1, so each step is one micro-batch), and MFU:
    (6 x student parameters + 2 x teacher parameters) FLOPs per token over the GPU's peak."""
    device = ctx["device"]
    batch_size, seq_length = ctx["scale"][name]
    dtype, use_scaler = training.select_precision("auto", device)
    teacher = ctx["teacher"].to(device)
    student = models.build_student(teacher).to(device)
    optimizer = training.adamw(student, 5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    generator = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):  # warm-up: kernel selection, allocator
        one_step(teacher, student, optimizer, scaler, batch_size, seq_length, dtype, device, generator)
    sync()
    steps = ctx["scale"]["timed_steps"]
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step(teacher, student, optimizer, scaler, batch_size, seq_length, dtype, device, generator)
    sync()
    seconds = time.perf_counter() - t0
    tokens_per_s = steps * batch_size * seq_length / seconds
    n_student, n_teacher = models.count_parameters(student), models.count_parameters(teacher)
    flops_per_token = 6 * n_student + 2 * n_teacher
    peak = peak_flops(ctx["gpu"]) if device.type == "cuda" else None
    del student, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(micro_batch=[batch_size, seq_length], precision=str(dtype).removeprefix("torch."),
                tokens_per_s=round(tokens_per_s, 1), flops_per_token=flops_per_token, peak_flops=peak,
                mfu=round(tokens_per_s * flops_per_token / peak, 4) if peak else None, timed_steps=steps)


CHECKS = {
    "precision": check_precision,
    "t4_step": check_t4_step,
    "resume_fp16": lambda ctx: check_resume(ctx, "fp16"),
    "resume_bf16": lambda ctx: check_resume(ctx, "bf16"),
    "launcher_precision": check_launcher_precision,
    "latency_timer": check_latency_timer,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="dry run on CPU with tiny shapes (CUDA-only checks skipped)")
    parser.add_argument("--out", help="JSON path (default: results/gpu-check/<gpu name>.json; --cpu: a temp file)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA GPU here: run `make gpu-check ARGS=--cpu` for the CPU dry run", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    ctx = dict(device=device, gpu=gpu, scale=scale(args.cpu), work=work)
    ctx["teacher"] = random_world(ctx["scale"]["config"], 1, 8)[0]
    checks, failed = {}, []
    for name, check in CHECKS.items():
        t0 = time.perf_counter()
        try:
            result = check(ctx)
            result = dict(status="skipped (no CUDA)") if result is None else {"status": "pass", **result}
        except Exception as err:  # noqa: BLE001  every failure is recorded, then the script exits 1
            result = dict(status="fail", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-2000:])
            failed.append(name)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        checks[name] = result
        print(f"{name}: {result['status']}" + (f" ({result['error']})" if "error" in result else ""), flush=True)
    throughput = {}
    for name in ("t4", "paper"):
        throughput[name] = measure_throughput(ctx, name)
        print(f"throughput at the {name} micro-batch {throughput[name]['micro_batch']}: "
              f"{throughput[name]['tokens_per_s']:,.0f} tokens/s, MFU {throughput[name]['mfu']}", flush=True)
    record = GpuCheck(name="gpu-check", gpu=gpu, dry_run=args.cpu, passed=not failed, failed=failed, checks=checks,
                  throughput=throughput, model="BERT-base (random init) -> 6-layer DistilBERT" if not args.cpu else
                  "tiny BERT (random init) -> 2-layer student", wall_time_s=round(time.perf_counter() - started, 1),
                  provenance=provenance())
    if args.out:
        out = Path(args.out)
    elif args.cpu:
        out = Path(tempfile.gettempdir()) / "gpu-check-cpu-dry-run.json"
    else:
        out = ROOT / "results" / "gpu-check" / (re.sub(r"[^A-Za-z0-9.-]+", "-", gpu).strip("-") + ".json")
    write(out, record)
    print(f"{'PASSED' if not failed else 'FAILED: ' + ', '.join(failed)} in {record.wall_time_s} s -> {out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
