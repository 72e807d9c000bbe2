"""Distillation throughput: non-padding tokens per second and peak memory of full training steps (teacher forward
in inference mode, student forward + backward, AdamW step) for a teacher/student shape, with random weights.

    python benchmarks/distill_throughput.py --teacher bert-base --seq-len 128 --batch-size 8 --steps 3
    python benchmarks/distill_throughput.py --teacher path/to/config_or_model_dir --student-layers 3 --device cuda

GPU timings are synchronised and follow warm-up steps. On CPU, peak memory is the process's peak resident set
(weights, optimizer and Python included); on CUDA, torch's peak allocated memory. The analytical T4 estimate of
lib.training.estimate_memory is printed alongside.
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoConfig, BertConfig, BertForMaskedLM  # noqa: E402

from lib import models, training  # noqa: E402
from lib.data import mask_tokens, mlm_token_probs  # noqa: E402

PRESETS = {
    "bert-base": dict(),  # BertConfig defaults: 12 layers, 768 hidden, 12 heads, 3072 FFN
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "minilm-l6": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "tiny": dict(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128),
}


def teacher_config(name):
    if name in PRESETS:
        return BertConfig(**PRESETS[name])
    return AutoConfig.from_pretrained(name)  # a config.json's folder or a model directory


def benchmark(teacher_name="bert-base", student_layers=None, seq_len=128, batch_size=8, steps=3, warmup=1,
              device="cpu", precision="auto", alpha_cos=1.0, seed=0):
    torch.manual_seed(seed)
    device = torch.device(device)
    dtype, use_scaler = training.select_precision(precision, device)
    teacher = BertForMaskedLM(teacher_config(teacher_name)).to(device).eval()
    n_teacher = teacher.config.num_hidden_layers
    student = models.build_student(teacher, n_layers=student_layers or max(1, n_teacher // 2)).to(device).train()
    optimizer = training.adamw(student, 5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    weights = dict(alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=alpha_cos, alpha_mse=0.0, temperature=2.0,
                   restrict_ce_to_mask=False)
    vocab = teacher.config.vocab_size
    probs = mlm_token_probs(torch.ones(vocab).numpy(), 0.0, range(5))
    generator = torch.Generator().manual_seed(seed)

    def step():
        input_ids = torch.randint(5, vocab, (batch_size, seq_len), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        masked, labels = mask_tokens(input_ids, attention_mask, probs, 4, range(5), generator=generator)
        losses = training.forward_losses(teacher, student, masked.to(device), attention_mask.to(device),
                                         labels.to(device), weights, None, dtype)
        scaler.scale(losses["loss"]).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return losses["loss"]

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    estimate = training.estimate_memory(teacher.config, student.config, batch_size, seq_len, "fp16")
    return dict(teacher=teacher_name, teacher_layers=n_teacher, student_layers=student.config.teacher_layers,
                teacher_parameters=models.count_parameters(teacher), student_parameters=models.count_parameters(student),
                device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                threads=torch.get_num_threads(), precision=str(dtype).replace("torch.", ""), seq_len=seq_len,
                batch_size=batch_size, steps=steps, seconds_per_step=seconds / steps,
                tokens_per_s=batch_size * seq_len * steps / seconds, peak_memory_mib=peak_mib,
                peak_memory_kind="cuda max allocated" if device.type == "cuda" else "process peak RSS",
                t4_fp16_estimate_gib=estimate["total_gib"], final_loss=float(loss.detach()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="bert-base", help=f"preset {list(PRESETS)} or a config/model directory")
    parser.add_argument("--student-layers", type=int, default=None, help="default: half the teacher's layers")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available; both are run "
                                                         "when auto finds a GPU)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device != "auto" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        result = benchmark(args.teacher, args.student_layers, args.seq_len, args.batch_size, args.steps, args.warmup,
                           device, args.precision if device != "cpu" or args.precision != "fp16" else "fp32")
        if args.json:
            print(json.dumps(result))
            continue
        print(f"{result['teacher']} ({result['teacher_parameters'] / 1e6:.1f}M) -> {len(result['student_layers'])} "
              f"layers {result['student_layers']} ({result['student_parameters'] / 1e6:.1f}M), "
              f"batch {result['batch_size']} x seq {result['seq_len']}, {result['precision']} on {result['device']} "
              f"({result['threads']} threads)")
        print(f"  {result['tokens_per_s']:,.0f} tokens/s   {result['seconds_per_step']:.3f} s/step   "
              f"peak memory {result['peak_memory_mib']:,.0f} MiB ({result['peak_memory_kind']})   "
              f"T4 fp16 estimate {result['t4_fp16_estimate_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
