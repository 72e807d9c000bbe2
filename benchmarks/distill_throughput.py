"""Distillation throughput: non-padding tokens per second of full training steps (teacher forward without
gradients, student forward + backward, AdamW step) for a teacher/student shape, with random weights, for two
implementations of the same arithmetic side by side: the authors' released distiller.py step written plainly
(released_forward_losses: full-vocabulary logits at every position, autograd through every softmax) and this
project's (lib.training.forward_losses).

    python benchmarks/distill_throughput.py --teacher bert-base --seq-len 128 --batch-size 8 --steps 3
    python benchmarks/distill_throughput.py --teacher path/to/config_or_model_dir --student-layers 3 --device cuda
    # the cpu profile's shapes: MiniLM-L6 -> 3 layers, 16 x 128, 2 threads
    python benchmarks/distill_throughput.py --teacher ../shared/data/hub/sentence-transformers/all-MiniLM-L6-v2 \
        --student-layers 3 --batch-size 16 --seq-len 128 --threads 2 --steps 6 --device cpu

The two run interleaved (one step of each in turn, on the same batch, from the same initial student and the same
dropout seed), so that a busy machine slows both alike; tokens/s are medians over the steps. The first step's
losses of the two are printed side by side (they agree to float32 rounding). GPU timings are synchronised and
follow warm-up steps. On CPU, peak memory is the process's peak resident set (both students, weights, optimizer
and Python included); on CUDA, torch's peak allocated memory per implementation. The analytical T4 estimate of
lib.training.estimate_memory is printed alongside.

Share of the matmul peak (issue 23): between the steps, under the same load, the run times 2048^3 float32 matmuls
(torch's thread count as set) for this machine's peak GFLOP/s; a step's FLOPs per non-padding token are 6 x the
student's parameters that take part + 2 x the teacher's (flops_per_token: embeddings are lookups, the vocabulary
projection counts on the tokens the heads take, attention scores and element-wise ops are left out); each
implementation's tokens/s x FLOPs per token is its share of that peak. --json includes them. Both run with the
process's freed memory kept, as a CPU stage runs (lib.models.keep_freed_memory); --default-malloc for glibc's
defaults. --profile N then
profiles N more steps of the current implementation and prints their time by kind of work (op_shares.py).
"""
import argparse
import copy
import json
import statistics
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch.nn.functional as F  # noqa: E402
from transformers import AutoConfig, BertConfig, BertForMaskedLM  # noqa: E402

import op_shares  # noqa: E402
from lib import models, training  # noqa: E402
from lib.data import mask_tokens, mlm_token_probs  # noqa: E402
from lib.losses import logit_rows  # noqa: E402

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


def released_forward_losses(teacher, student, input_ids, attention_mask, labels, weights, layer_map=None,
                            dtype=torch.float32):
    """The arithmetic of the authors' distiller.py step, written as plainly as they wrote it: both models' logits
    at every position, the selected rows gathered with masked_select, KLDivLoss("batchmean") on log_softmax /
    softmax, CrossEntropyLoss(ignore_index=-100) over every position, MSELoss("sum"), CosineEmbeddingLoss
    ("mean"). The reference of tests/test_losses.py's parity tests. Two departures, both this project's options: a
    term whose alpha is 0 is skipped (the release always computed L_ce), and layer_map (cos_layers="all") averages
    the cosine loss over several layer pairs (the release: the last hidden states only)."""
    alpha_ce, alpha_mlm, alpha_cos, alpha_mse = (weights[k] for k in ("alpha_ce", "alpha_mlm", "alpha_cos", "alpha_mse"))
    temperature = weights["temperature"]
    with torch.no_grad(), training.autocast(input_ids.device, dtype):
        teacher_out = teacher(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=alpha_cos > 0)
    with training.autocast(input_ids.device, dtype):
        student_out = student(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=alpha_cos > 0)
    s_logits, t_logits = student_out.logits.float(), teacher_out.logits.float()
    vocab = s_logits.size(-1)
    if weights["restrict_ce_to_mask"]:
        mask = (labels > -1).unsqueeze(-1).expand_as(s_logits)
    else:
        mask = attention_mask.bool().unsqueeze(-1).expand_as(s_logits)
    s_logits_slct = torch.masked_select(s_logits, mask).view(-1, vocab)
    t_logits_slct = torch.masked_select(t_logits, mask).view(-1, vocab)
    terms = dict(loss_ce=None, loss_mlm=None, loss_cos=None, loss_mse=None)
    if alpha_ce > 0:
        terms["loss_ce"] = F.kl_div(F.log_softmax(s_logits_slct / temperature, dim=-1),
                                    F.softmax(t_logits_slct / temperature, dim=-1), reduction="batchmean") * temperature ** 2
    if alpha_mlm > 0:
        terms["loss_mlm"] = F.cross_entropy(s_logits.view(-1, vocab), labels.view(-1), ignore_index=-100)
    if alpha_mse > 0:
        terms["loss_mse"] = F.mse_loss(s_logits_slct, t_logits_slct, reduction="sum") / s_logits_slct.size(0)
    if alpha_cos > 0:
        losses = []
        for s_index, t_index in layer_map or [(-1, -1)]:
            s_hidden, t_hidden = student_out.hidden_states[s_index].float(), teacher_out.hidden_states[t_index].float()
            mask = attention_mask.bool().unsqueeze(-1).expand_as(s_hidden)
            s_hidden_slct = torch.masked_select(s_hidden, mask).view(-1, s_hidden.size(-1))
            t_hidden_slct = torch.masked_select(t_hidden, mask).view(-1, s_hidden.size(-1))
            target = s_hidden_slct.new(s_hidden_slct.size(0)).fill_(1)
            losses.append(F.cosine_embedding_loss(s_hidden_slct, t_hidden_slct, target, reduction="mean"))
        terms["loss_cos"] = sum(losses) / len(losses)
    alphas = dict(loss_ce=alpha_ce, loss_mlm=alpha_mlm, loss_cos=alpha_cos, loss_mse=alpha_mse)
    return dict(loss=sum(alphas[k] * v for k, v in terms.items() if v is not None), **terms)


IMPLEMENTATIONS = dict(released=released_forward_losses, current=training.forward_losses)
PEAK_SIZE = 2048  # the peak: a 2048 x 2048 @ 2048 x 2048 float32 matmul, timed between the steps


def matmul_rate(device, size=PEAK_SIZE, repeats=3):
    """GFLOP/s of ``repeats`` float32 size^3 matmuls (torch's thread count as set): this machine's matmul peak, as
    busy as the steps around it."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    a @ b  # warm: the first call allocates
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size ** 3 * repeats / (time.perf_counter() - started) / 1e9


def matmul_parameters(model):
    """(body, head): the parameters a token's matmuls (and the small ops next to them) use once each: every one
    outside the embeddings (lookups, not FLOPs), the vocabulary projection (weight tied to the word embeddings,
    and bias) apart as the head."""
    decoder = training.vocab_projection(model)
    head = {id(p): p for p in decoder.parameters()} if decoder is not None else {}
    unique = {}
    for name, p in model.named_parameters():
        unique.setdefault(id(p), (name, p))
    body = sum(p.numel() for key, (name, p) in unique.items() if key not in head and "embeddings" not in name)
    return body, sum(p.numel() for p in head.values())


def flops_per_token(teacher, student, head_share=1.0):
    """FLOPs per non-padding token of a distillation step: 6 x the student's parameters that take part (forward,
    and backward for the inputs and the weights) + 2 x the teacher's (forward only), the vocabulary projection
    counted on the share of tokens the heads take (1 with restrict_ce_to_mask false: every real token). Attention
    scores (QK^T, AV: ~2% here) are left out, as are the element-wise ops."""
    (s_body, s_head), (t_body, t_head) = matmul_parameters(student), matmul_parameters(teacher)
    return 6 * (s_body + s_head * head_share) + 2 * (t_body + t_head * head_share)


def benchmark(teacher_name="bert-base", student_layers=None, seq_len=128, batch_size=8, steps=3, warmup=1,
              device="cpu", precision="auto", alpha_cos=1.0, seed=0, profile_steps=0):
    torch.manual_seed(seed)
    device = torch.device(device)
    dtype, use_scaler = training.select_precision(precision, device)
    teacher = BertForMaskedLM(teacher_config(teacher_name)).to(device).eval()
    n_teacher = teacher.config.num_hidden_layers
    first_student = models.build_student(teacher, n_layers=student_layers or max(1, n_teacher // 2)).to(device).train()
    weights = dict(alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=alpha_cos, alpha_mse=0.0, temperature=2.0,
                   restrict_ce_to_mask=False)
    vocab = teacher.config.vocab_size
    probs = mlm_token_probs(torch.ones(vocab).numpy(), 0.0, range(5))
    generator = torch.Generator().manual_seed(seed)
    runs = {}
    for name in IMPLEMENTATIONS:  # each its own copy of the same initial student, optimizer and scaler
        student = copy.deepcopy(first_student)
        runs[name] = dict(student=student, optimizer=training.adamw(student, 5e-4), seconds=[], losses=[],
                          scaler=torch.amp.GradScaler(device.type, enabled=use_scaler), peak_mib=0.0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    peak_rates = []

    def step(name, batch, step_seed):
        run = runs[name]
        torch.manual_seed(step_seed)  # the same dropout masks for both
        losses = IMPLEMENTATIONS[name](teacher, run["student"], *batch, weights, None, dtype)
        run["scaler"].scale(losses["loss"]).backward()
        run["scaler"].unscale_(run["optimizer"])
        torch.nn.utils.clip_grad_norm_(run["student"].parameters(), 5.0)
        run["scaler"].step(run["optimizer"])
        run["scaler"].update()
        run["optimizer"].zero_grad(set_to_none=True)
        return losses["loss"]

    for index in range(warmup + steps):
        input_ids = torch.randint(5, vocab, (batch_size, seq_len), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        masked, labels = mask_tokens(input_ids, attention_mask, probs, 4, range(5), generator=generator)
        batch = (masked.to(device), attention_mask.to(device), labels.to(device))
        order = list(IMPLEMENTATIONS) if index % 2 == 0 else list(IMPLEMENTATIONS)[::-1]  # neither always first
        for name in order:
            sync()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            loss = step(name, batch, seed + index)
            sync()
            if index >= warmup:
                runs[name]["seconds"].append(time.perf_counter() - started)
            runs[name]["losses"].append(float(loss.detach()))
            if device.type == "cuda":
                runs[name]["peak_mib"] = max(runs[name]["peak_mib"], torch.cuda.max_memory_allocated(device) / 2 ** 20)
        if index >= warmup:  # the peak under the same load as the steps
            peak_rates.append(matmul_rate(device))

    if profile_steps:  # after the timed steps, so the profiler's own cost is in none of them
        with op_shares.profiled() as self_ms:
            for index in range(profile_steps):
                step("current", batch, seed + warmup + steps + index)
        runs["current"]["op_shares"] = op_shares.shares(self_ms)

    tokens = batch_size * seq_len  # every position is a real token here (no padding)
    head_share = float(logit_rows(attention_mask, labels, **weights).sum()) / tokens  # of the last batch
    step_flops = flops_per_token(teacher, first_student, head_share)
    peak = statistics.median(peak_rates)
    estimate = training.estimate_memory(teacher.config, first_student.config, batch_size, seq_len, "fp16")
    result = dict(teacher=teacher_name, teacher_layers=n_teacher, student_layers=first_student.config.teacher_layers,
                  teacher_parameters=models.count_parameters(teacher),
                  student_parameters=models.count_parameters(first_student),
                  device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                  threads=torch.get_num_threads(), precision=str(dtype).replace("torch.", ""), seq_len=seq_len,
                  batch_size=batch_size, steps=steps, t4_fp16_estimate_gib=estimate["total_gib"],
                  matmul_peak_gflops=peak, matmul_peak_runs_gflops=peak_rates, mflop_per_token=step_flops / 1e6,
                  head_share=head_share)
    for name, run in runs.items():
        seconds = statistics.median(run["seconds"])
        gflops = tokens / seconds * step_flops / 1e9
        result[name] = dict(seconds_per_step=seconds, tokens_per_s=tokens / seconds, first_loss=run["losses"][0],
                            step_seconds=run["seconds"], gflops=gflops, share_of_peak=gflops / peak)
        if device.type == "cuda":
            result[name]["peak_memory_mib"] = run["peak_mib"]
        if "op_shares" in run:
            result[name]["op_shares"] = run["op_shares"]
    result["profile_steps"] = profile_steps
    result["speedup"] = result["current"]["tokens_per_s"] / result["released"]["tokens_per_s"]
    if device.type == "cpu":
        result["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return result


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
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's default malloc settings "
                        "(the comparison for lib.models.keep_freed_memory, which CPU stages apply)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="then profile N more steps of the "
                        "current implementation and print where their time goes (op_shares.py)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = not args.default_malloc and models.keep_freed_memory()  # as a CPU stage runs (set_torch_threads)
    print(f"malloc: {'freed memory kept (lib.models.keep_freed_memory)' if kept else 'glibc defaults'}")
    devices = [args.device] if args.device != "auto" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        result = benchmark(args.teacher, args.student_layers, args.seq_len, args.batch_size, args.steps, args.warmup,
                           device, args.precision if device != "cpu" or args.precision != "fp16" else "fp32",
                           profile_steps=args.profile)
        if args.json:
            print(json.dumps(result))
            continue
        print(f"{result['teacher']} ({result['teacher_parameters'] / 1e6:.1f}M) -> {len(result['student_layers'])} "
              f"layers {result['student_layers']} ({result['student_parameters'] / 1e6:.1f}M), "
              f"batch {result['batch_size']} x seq {result['seq_len']}, {result['precision']} on {result['device']} "
              f"({result['threads']} threads), median of {result['steps']} interleaved steps each")
        for name in IMPLEMENTATIONS:
            run = result[name]
            memory = f"   peak memory {run['peak_memory_mib']:,.0f} MiB" if "peak_memory_mib" in run else ""
            print(f"  {name:9s} {run['tokens_per_s']:7,.0f} tokens/s   {run['seconds_per_step']:.3f} s/step   "
                  f"{run['gflops']:6.1f} GFLOP/s = {run['share_of_peak']:.0%} of peak   "
                  f"first-step loss {run['first_loss']:.6f}{memory}")
        print(f"  current / released: {result['speedup']:.2f}x")
        peaks = result["matmul_peak_runs_gflops"]
        print(f"  matmul peak {result['matmul_peak_gflops']:.1f} GFLOP/s (median of {len(peaks)} timings of 3 x {PEAK_SIZE}^3 float32 matmuls between the steps, "
              f"{min(peaks):.0f}-{max(peaks):.0f}); "
              f"{result['mflop_per_token']:.1f} MFLOP per token (6 x student + 2 x teacher parameters outside the "
              f"embeddings, heads on {result['head_share']:.0%} of the tokens)")
        if "process_peak_rss_mib" in result:
            print(f"  process peak RSS {result['process_peak_rss_mib']:,.0f} MiB (both implementations)")
        print(f"  T4 fp16 estimate {result['t4_fp16_estimate_gib']:.2f} GiB")
        if "op_shares" in result["current"]:
            op_shares.print_shares("current", result["current"]["op_shares"], result["profile_steps"])


if __name__ == "__main__":
    main()
