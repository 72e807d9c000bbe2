"""Fine-tuning throughput as a share of this machine's fp32 matmul peak, measured in the same run: a plain Hugging
Face ``Trainer`` fine-tuning (the baseline of issue 23) beside this project's path
(``lib.finetune.finetune_classification``, called as ``run_sweep`` calls it), alternating run by run.

    python benchmarks/finetune_throughput.py                    # MiniLM from ../shared/data/hub, SST-2, 1,200 rows
    python benchmarks/finetune_throughput.py --repeats 3 --epochs 2 --train-rows 1200 --batch-size 16
    python benchmarks/finetune_throughput.py --model build/smoke-hub/smoke/tiny-bert   # no mirror: smoke data

Both fine-tune the same model on the same SST-2 rows (lib.finetune.subset, the sweep's subset), batch 16, dynamic
padding (each batch padded to its longest row), the same learning rate and seed, then predict the evaluation rows.
They alternate (plain, project, plain, project, ... with seeds 1, 2, ...), so a busy machine slows both alike; the
project's runs after the first reuse what it keeps between runs (the tokenized task), as seeds do in a sweep.

Options: --before FILE runs another version of lib/finetune.py as a third path (before/after side by side),
--grouped adds the project's path with length-grouped batches (opt-in: it changes results), --ballast N keeps N
small objects alive as a notebook kernel's heap does (what the Trainer's per-run gc.collect walks), --profile adds
one more run of the project's path with its training steps profiled, printed by kind of work (op_shares.py).
Both paths run with the process's freed memory kept, as a CPU stage runs (lib.models.keep_freed_memory: a
process-wide setting); --default-malloc runs both with glibc's defaults, for the comparison in another process.

What is printed, per run and for each path's least disturbed run (highest step rate):
- tokens/s: non-padding training tokens per second of the training steps (forward, backward, optimizer step:
  timed by a TrainerCallback from on_step_begin to on_step_end), and per second of the whole run (end to end);
- share of peak: 6 N FLOPs per non-padding token over the peak. N excludes the embedding matrices (word, position
  and token-type embeddings, which are looked up, not multiplied: Kaplan et al. 2020's convention); the share with
  N counting them is printed too. Padding positions are computed but count as no work;
- wall time split: setup (call to first step), steps, evaluation (Trainer.predict), and the fixed per-run cost,
  the run's wall time less its steps and its evaluation.
The peak is the best of several 2048 x 2048 float32 torch.matmul at the thread count training uses, measured before
the runs and again after them; the higher is used. Figures only: nothing here asserts on time.
"""
import argparse
import copy
import gc
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import transformers  # noqa: E402

import op_shares  # noqa: E402
from lib import REPO_ROOT, finetune, models  # noqa: E402
from lib.config import load_params  # noqa: E402

MIRROR = REPO_ROOT.parent / "shared" / "data" / "hub"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TINY = REPO_ROOT / "build" / "smoke-hub" / "smoke" / "tiny-bert"


def matmul_peak(size=2048, repeats=7):
    """Best fp32 GFLOP/s of a size x size matmul (2 size^3 FLOPs) over ``repeats`` tries, after one warm-up."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * size ** 3 / (time.perf_counter() - started) / 1e9)
    return best


class Meter(transformers.TrainerCallback):
    """Times each optimizer step and counts the training tokens the model sees (a forward pre-hook: non-padding
    tokens from the attention mask, padded positions from the input shape)."""

    def __init__(self, model):
        self.step_seconds, self.tokens, self.padded = [], 0, 0
        self.first_step = self.eval_seconds = None
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        if module.training and "attention_mask" in kwargs:
            self.tokens += int(kwargs["attention_mask"].sum())
            self.padded += kwargs["attention_mask"].numel()

    def on_step_begin(self, args, state, control, **kwargs):
        self.first_step = self.first_step or time.perf_counter()
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds.append(time.perf_counter() - self._began)


class StepProfile(transformers.TrainerCallback):
    """Profiles a run's training steps after its first ``skip`` (warm-up) to the end of training: operator self
    times in ``self_ms`` (op_shares.profiled), the number of steps in ``steps``."""

    def __init__(self, skip=5):
        self.skip, self.steps, self.self_ms, self._profiling = skip, 0, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.skip and self._profiling is None:
            self._profiling = op_shares.profiled()
            self.self_ms = self._profiling.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += self._profiling is not None

    def on_train_end(self, args, state, control, **kwargs):
        if self._profiling is not None:
            self._profiling.__exit__(None, None, None)
            self._profiling = None


def metered(trainer, meters, callbacks=()):
    """Attach a Meter (and ``callbacks``) to ``trainer`` and time its predict calls (the evaluation)."""
    meter = Meter(trainer.model)
    trainer.add_callback(meter)
    for callback in callbacks:
        trainer.add_callback(callback)
    predict = trainer.predict

    def timed_predict(*args, **kwargs):
        started = time.perf_counter()
        out = predict(*args, **kwargs)
        meter.eval_seconds = (meter.eval_seconds or 0.0) + time.perf_counter() - started
        return out
    trainer.predict = timed_predict
    meters.append(meter)
    return trainer


def glue_params(model, mirror, args, run_dir):
    """The GLUE stage's parameters for this benchmark: the cpu profile (the smoke profile with the tiny model)."""
    smoke = str(model) == str(TINY)
    overrides = dict(models={"model": str(model)}, tasks=["sst2"], seeds=[1], max_train_samples=args.train_rows,
                     max_eval_samples=args.eval_rows, n_epoch=args.epochs, batch_size=args.batch_size,
                     run_dir=str(run_dir), results_dir=str(run_dir / "results"), task_overrides={})
    if not smoke:
        overrides.update(mirror=str(mirror), glue_dataset="nyu-mll/glue")
    return load_params("glue", profile="smoke" if smoke else "cpu", **overrides)


def plain_run(model_path, params, seed, out_dir, meters):
    """Fine-tuning as a plain Trainer script writes it: load, tokenize, train, predict, all in this call."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    from lib import hub
    data = finetune.load_task("sst2", params)  # the same rows as the project's path
    tokenizer = AutoTokenizer.from_pretrained(hub.resolve(model_path, params.mirror))
    encoded = data.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=params.max_length),
                       batched=True, remove_columns=["sentence", "idx"]).rename_column("label", "labels")
    transformers.set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(hub.resolve(model_path, params.mirror), num_labels=2)
    args = TrainingArguments(output_dir=str(out_dir), seed=seed, learning_rate=params.learning_rate,
                             num_train_epochs=params.n_epoch, per_device_train_batch_size=params.batch_size,
                             per_device_eval_batch_size=2 * params.batch_size, warmup_steps=params.warmup_prop,
                             save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True)
    trainer = metered(Trainer(model=model, args=args, train_dataset=encoded["train"],
                              data_collator=DataCollatorWithPadding(tokenizer)), meters)
    trainer.train()
    return trainer.predict(encoded["validation"]).predictions


def project_run(model_path, params, seed, out_dir, meters, module=finetune, callbacks=()):
    """lib.finetune.finetune_classification as run_sweep calls it (through _finetune), its Trainer metered.
    module: lib.finetune, or another version of it (--before); callbacks: more TrainerCallbacks (--profile)."""
    make = module._make_trainer
    module._make_trainer = lambda *a, **k: metered(make(*a, **k), meters, callbacks)  # the benchmark's hook only
    try:
        return module._finetune("sst2", model_path, seed, params, out_dir)
    finally:
        module._make_trainer = make


def grouped_run(model_path, params, seed, out_dir, meters):
    """The project's path with length-grouped batches (lib.finetune.group_by_length: opt-in, changes results)."""
    grouped = copy.copy(params)
    grouped.group_by_length = True  # what a stage parameter of that name would set
    return project_run(model_path, grouped, seed, out_dir, meters)


def load_module(path):
    """Another version of lib/finetune.py (e.g. ``git show HEAD:lib/finetune.py``) as a module beside lib.finetune."""
    spec = importlib.util.spec_from_file_location("finetune_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ballast(n):
    """``n`` small tracked objects kept alive, standing in for a notebook kernel's heap (what a full
    gc.collect walks): a list of n one-element lists."""
    return [[i] for i in range(n)]


def n_parameters(model_path, params):
    """(all parameters, parameters outside the embedding matrices) of the model with a 2-class head."""
    from transformers import AutoModelForSequenceClassification
    from lib import hub
    model = AutoModelForSequenceClassification.from_pretrained(hub.resolve(model_path, params.mirror), num_labels=2)
    total = sum(p.numel() for p in model.parameters())
    embedded = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    return total, total - embedded


def figures(meter, wall, started, n, n_all, peak):
    """One run's printed figures (a dict) from its Meter and wall time."""
    steps = sum(meter.step_seconds)
    evaluation = meter.eval_seconds or 0.0
    step_rate, end_to_end = meter.tokens / steps, meter.tokens / wall
    return {"wall_s": wall, "setup_s": meter.first_step - started, "steps_s": steps, "eval_s": evaluation,
            "fixed_s": wall - steps - evaluation, "step_ms": 1000 * statistics.median(meter.step_seconds),
            "n_steps": len(meter.step_seconds), "tokens": meter.tokens,
            "padding_pct": 100 * (1 - meter.tokens / meter.padded), "tok_s": step_rate, "tok_s_e2e": end_to_end,
            "peak_pct": 100 * 6 * n * step_rate / (peak * 1e9), "peak_pct_e2e": 100 * 6 * n * end_to_end / (peak * 1e9),
            "peak_pct_with_emb": 100 * 6 * n_all * step_rate / (peak * 1e9)}


COLUMNS = ("wall_s", "setup_s", "steps_s", "eval_s", "fixed_s", "step_ms", "n_steps", "padding_pct", "tok_s",
           "tok_s_e2e", "peak_pct", "peak_pct_e2e", "peak_pct_with_emb")


def print_row(label, row):
    print(f"{label:<14}" + "".join(f"{row[c]:>12.1f}" if isinstance(row[c], float) else f"{row[c]:>12}"
                                   for c in COLUMNS))


def run_paths(paths, model, params, repeats, tmp):
    """Each path once per repeat, alternating, seeds 1, 2, ...; the matmul peak before each round and at the end.
    Returns ({path: [(wall, start, Meter)]}, peaks)."""
    rows, peaks = {label: [] for label in paths}, []
    for repeat in range(repeats):
        peaks.append(matmul_peak())
        for label, fn in paths.items():
            meters, started = [], time.perf_counter()
            fn(model, params, 1 + repeat, tmp / f"{label}-{repeat}", meters)
            rows[label].append((time.perf_counter() - started, started, meters[0]))
    peaks.append(matmul_peak())
    return rows, peaks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or hub id (default: MiniLM on the mirror, "
                                                      "else the smoke tiny-bert)")
    parser.add_argument("--mirror", default=str(MIRROR))
    parser.add_argument("--train-rows", type=int, default=1200)
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path, alternating")
    parser.add_argument("--before", default=None, help="another version of lib/finetune.py, run as a third path "
                                                       "(e.g. git show HEAD:lib/finetune.py > /tmp/before.py)")
    parser.add_argument("--grouped", action="store_true", help="also run the project's path with group_by_length")
    parser.add_argument("--default-malloc", action="store_true", help="run with glibc's default malloc "
                        "settings (the comparison for lib.models.keep_freed_memory, which CPU stages apply)")
    parser.add_argument("--profile", action="store_true", help="then one more run of the project's path, its "
                        "training steps profiled: where their time goes, by kind of work (op_shares.py)")
    parser.add_argument("--ballast", type=int, default=0, help="small objects kept alive during the runs, as a "
                                                               "notebook kernel's heap (e.g. 3000000)")
    args = parser.parse_args()
    model = args.model or (MINILM if (Path(args.mirror) / MINILM).is_dir() else str(TINY))
    transformers.logging.set_verbosity_error()
    if args.default_malloc:  # set_torch_threads' call then changes nothing
        models.keep_freed_memory = lambda: False
    freed_kept = models.keep_freed_memory()  # for both paths: the setting is the process's, as in a CPU stage
    print(f"malloc: {'freed memory kept (lib.models.keep_freed_memory)' if freed_kept else 'glibc defaults'}")
    with tempfile.TemporaryDirectory() as tmp:
        params = glue_params(model, args.mirror, args, Path(tmp))
        n_all, n = n_parameters(model, params)
        print(f"model {model}: N = {n / 1e6:.2f}M parameters without embeddings ({n_all / 1e6:.2f}M with); "
              f"6N = {6 * n / 1e6:.0f} MFLOP per token; torch threads {torch.get_num_threads()}")
        paths = {"plain": plain_run, "project": project_run}
        if args.before:
            before = load_module(args.before)
            paths["before"] = lambda *a: project_run(*a, module=before)
        if args.grouped:
            paths["grouped"] = grouped_run
        kept = ballast(args.ballast)
        started = time.perf_counter()
        gc.collect()
        print(f"heap: {len(gc.get_objects()) / 1e6:.1f}M tracked objects, a full gc.collect "
              f"{time.perf_counter() - started:.2f} s")
        rows, peaks = run_paths(paths, model, params, args.repeats, Path(tmp))
        del kept
        profile = StepProfile()
        if args.profile:
            project_run(model, params, 1, Path(tmp) / "profiled", [], callbacks=[profile])
    peak = max(peaks)
    print(f"fp32 matmul peak (2048^2, best of 7, before each round and after): "
          f"{' / '.join(f'{p:.1f}' for p in peaks)} GFLOP/s; shares below use the best, {peak:.1f}")
    print(f"{'run':<14}" + "".join(f"{c:>12}" for c in COLUMNS))
    table = {}
    for label, runs in rows.items():
        table[label] = [figures(m, wall, started, n, n_all, peak) for wall, started, m in runs]
        for i, row in enumerate(table[label]):
            print_row(f"{label}#{i + 1}", row)
    # on a shared machine a run slowed by others is noise, not a figure: each path's least disturbed run (its
    # highest step rate) stands for it, as the peak is the best of its tries
    best = {label: max(runs, key=lambda r: r["tok_s"]) for label, runs in table.items()}
    for label, row in best.items():
        print_row(f"{label} best", row)
    for label in best:
        if label != "plain":
            ratio = {c: best[label][c] / best["plain"][c] for c in ("tok_s", "tok_s_e2e", "setup_s", "fixed_s", "wall_s")}
            print(f"{label} / plain (best runs): " + ", ".join(f"{c} x{v:.2f}" for c, v in ratio.items()))
    if profile.steps:
        op_shares.print_shares(f"project (one more run, steps after the first {profile.skip})",
                               op_shares.shares(profile.self_ms), profile.steps)


if __name__ == "__main__":
    main()
