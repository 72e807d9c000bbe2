"""Table 3 on this machine: BERT-base vs DistilBERT size and batch-1 CPU latency, timed interleaved in one run,
plus int8 dynamic quantization of the student.

    python benchmarks/latency.py                      # 32-token ratio, 100-pair STS-B dev subset, int8 (ONNX Runtime)
    python benchmarks/latency.py --examples 1500      # the paper's full pass (minutes on 2 cores)
    python benchmarks/latency.py --backends onnxruntime torch torchao --sweep

Models come from the mirror (or the hub): trained weights when present, else the architecture from its config with
random weights (latency does not depend on weight values). Figures on a shared machine are noisy: the load
average is printed before and after; compare ratios from one run, not absolute times across runs.
"""
import argparse
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import latency, paper, quantize  # noqa: E402
from lib.models import count_parameters  # noqa: E402

TEACHER, STUDENT = "google-bert/bert-base-uncased", "distilbert/distilbert-base-uncased"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", default=os.environ.get("DISTILBERT_MIRROR") or _default_mirror())
    parser.add_argument("--teacher", default=TEACHER)
    parser.add_argument("--student", default=STUDENT)
    parser.add_argument("--seq-len", type=int, default=32, help="tokens for the fixed-length batch-1 ratio")
    parser.add_argument("--examples", type=int, default=100, help="STS-B dev pairs timed (0: skip, 1500: all)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the STS-B subset")
    parser.add_argument("--fixed-repeats", type=int, default=30, help="timed calls at the fixed length")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--interleave", choices=["pass", "example"], default="example")
    parser.add_argument("--backends", nargs="*", default=["onnxruntime"], choices=["onnxruntime", "torch", "torchao"],
                        help="int8 dynamic quantization paths for the student (none: skip)")
    parser.add_argument("--sweep", action="store_true", help="also sweep sequence lengths x batch sizes")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    teacher, teacher_tok, teacher_trained = latency.load_for_timing(args.teacher, args.mirror)
    student, student_tok, student_trained = latency.load_for_timing(args.student, args.mirror)
    print("machine:", latency.machine_info())
    print(f"\n{'model':<28}{'weights':>10}{'params':>14}{'size MB':>10}")
    for label, model, trained in (("teacher " + args.teacher, teacher, teacher_trained),
                                  ("student " + args.student, student, student_trained)):
        print(f"{label:<28.28}{'trained' if trained else 'random':>10}{count_parameters(model):>14,}"
              f"{latency.size_on_disk_mb(model):>10.1f}")

    quantized = {}
    for backend in args.backends:
        quantized[f"student-int8-{backend}"] = quantize.quantize_dynamic_int8(student, backend,
                                                                             num_threads=args.threads)
        print(f"student int8 ({backend}): {latency.size_on_disk_mb(quantized[f'student-int8-{backend}']):.1f} MB")

    models = {"teacher": teacher, "student": student, **quantized}
    fixed = latency.sweep(models, [args.seq_len], [1], warmup=args.warmup, repeats=args.fixed_repeats,
                          num_threads=args.threads)
    ms, fastest = fixed.set_index("model")["latency_ms"], fixed.set_index("model")["latency_ms_min"]
    print(f"\nbatch 1, {args.seq_len} tokens, {args.fixed_repeats} calls interleaved call by call (median | min):")
    for label in ms.index:
        print(f"  {label:<28}{ms[label]:8.2f} ms  x{ms[label] / ms['teacher']:.3f} of teacher | "
              f"{fastest[label]:8.2f} ms  x{fastest[label] / fastest['teacher']:.3f}")
    print(f"RATIO student/teacher at {args.seq_len} tokens: {ms['student'] / ms['teacher']:.3f} (medians), "
          f"{fastest['student'] / fastest['teacher']:.3f} (minima); paper {latency.PAPER_RATIO:.2f}, limit ~0.5")

    if args.examples:
        texts, _ = latency.dev_examples("stsb", mirror=args.mirror, max_examples=args.examples)
        pairs = {"teacher": (teacher, teacher_tok), "student": (student, student_tok),
                 **{label: (model, student_tok) for label, model in quantized.items()}}
        for include in (False, True):
            out = latency.compare_interleaved(pairs, texts, warmup=args.warmup, repeats=args.repeats,
                                              num_threads=args.threads, include_tokenizer=include,
                                              interleave=args.interleave)
            print(f"\nSTS-B dev, {len(texts)} pairs, batch 1, tokenizer {'included' if include else 'excluded'}, "
                  f"{out['num_threads']} threads, median of {args.repeats} passes, "
                  f"load {out['machine'].get('loadavg_1min')} -> {out['loadavg_1min_after']}:")
            # teacher and student are BERT-base and DistilBERT by default
            in_paper = {label: f" (paper {paper.TABLE3[name]['seconds']} s)"
                        for label, name in (("teacher", paper.BERT_BASE), ("student", paper.DISTILBERT))}
            for label, r in out["models"].items():
                print(f"  {label:<26}{r['total_s']:8.2f} s  per example {r['per_example_ms_median']:7.2f} ms median "
                      f"{r['per_example_ms_mean']:7.2f} ms mean, {r['mean_tokens']:.1f} tokens; "
                      f"x{latency.STSB_DEV_SIZE} -> {latency.extrapolate_total_s(r):6.1f} s{in_paper.get(label, '')}")
            median = {label: r["per_example_ms_median"] for label, r in out["models"].items()}
            for label in out["models"]:
                if label != "teacher":
                    print(f"RATIO {label}/teacher on STS-B (tokenizer {'included' if include else 'excluded'}): "
                          f"{out['ratio'][label]:.3f} (pass totals; per pass "
                          f"{[round(x, 3) for x in out['ratio_per_pass'][label]]}), "
                          f"{median[label] / median['teacher']:.3f} (per-example medians)")

    if args.sweep:
        table = latency.sweep({"teacher": teacher, "student": student}, [16, 32, 64, 128, 256, 512], [1, 8],
                              warmup=2, repeats=3, num_threads=args.threads, max_batch_tokens=2048)
        print("\n" + table.pivot(index=["seq_len", "batch_size"], columns="model", values="latency_ms")
              .assign(ratio=lambda t: t["student"] / t["teacher"]).round(2).to_string())


def _default_mirror():
    path = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hub"
    return str(path) if path.is_dir() else None


if __name__ == "__main__":
    main()
