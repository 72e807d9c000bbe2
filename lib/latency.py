"""Size and speed (the paper's Table 3) and beyond: parameter counts, size on disk, batch-1 inference time over
STS-B dev with the tokenizer excluded or included, teacher and student timed interleaved in one run, sequence
length / batch size sweeps, GPU timing with CUDA events in fp16/bf16, and int8 models (made by lib.quantize).

Timing protocol (all timings go through ``_run_schedule``): every model gets ``warmup`` untimed calls first, then
``repeats`` timed passes over the same batches. Models compared together are interleaved, example by example by
default (or pass by pass), the first model rotating each repeat, so that they all see the same machine state; on
a shared machine that matters more than the number of repeats. Pass totals (the paper's full-pass time) and
per-example medians are both reported: when other processes load the cores, torch's threads stall and the totals
grow a heavy tail (mean per example 2-4x the median was seen here), while the medians stay put. CPU calls are
timed with ``time.perf_counter``; CUDA calls with CUDA events, synchronised after every call (batch-1 latency:
each example finishes before the next starts). Latency does not depend on weight values, so config-only models
(random weights) time the same architecture as trained checkpoints.

Int8 models are timed with the same protocol: ``load_models`` adds the quantized student when ``params.quantize``.
Model labels are lib.paper's (BERT_BASE, DISTILBERT, TEACHER, STUDENT); the paper's figures come from lib.paper.
Over 400 lines because the protocol (devices, timer, schedule, text inputs, sweeps) and the stage functions that
apply it (``load_models``, ``table3``, ``sweep_models``) are read together; ONNX/int8 live in lib.quantize.
"""
import copy
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers
from tqdm.auto import tqdm

from lib import glue, hub, paper, quantize
from lib.finetune import subset
from lib.hub import WEIGHT_FILES
from lib.models import count_parameters, has_weights

PAPER_TIMED = (paper.BERT_BASE, paper.DISTILBERT)  # the labels of the paper's Table 3 models that stage 5 can time
# the paper's DistilBERT / BERT-base time ratio (Table 3); the architectures' limit is about 0.5 (half the layers)
PAPER_RATIO = paper.TABLE3[paper.DISTILBERT]["seconds"] / paper.TABLE3[paper.BERT_BASE]["seconds"]
STSB_DEV_SIZE = glue.TASKS[glue.STSB].eval_size  # the paper's timed pass
TASK_CLASSES = {"base": "AutoModel", "sequence-classification": "AutoModelForSequenceClassification",
                "masked-lm": "AutoModelForMaskedLM"}
SIZE_FILES = WEIGHT_FILES + ("*.onnx", "*.onnx.data")  # what size_on_disk_mb counts: torch weights and ONNX


# ---------------------------------------------------------------------------------------------- models and size

def build_from_config(repo_id, mirror=None, task="base", num_labels=2):
    """The architecture named by ``repo_id`` (its config.json via hub/mirror) with random weights, in eval mode."""
    if task not in TASK_CLASSES:
        raise ValueError(f"task {task!r} is not one of {list(TASK_CLASSES)}")
    config = hub.from_pretrained(transformers.AutoConfig, repo_id, mirror=mirror)
    if task == "sequence-classification":
        config.num_labels = num_labels
    return getattr(transformers, TASK_CLASSES[task]).from_config(config).eval()


def load_for_timing(repo_id, mirror=None, task="base", num_labels=2, tokenizer_id=None):
    """(model, tokenizer, pretrained): the trained checkpoint when its weights are present, else the same
    architecture from its config with random weights (``pretrained`` False) -- equal latency either way.
    ``tokenizer_id``: where the tokenizer lives when the checkpoint directory has none (default ``repo_id``)."""
    tokenizer = hub.from_pretrained(transformers.AutoTokenizer, tokenizer_id or repo_id, mirror=mirror)
    location = hub.resolve(repo_id, mirror)
    if Path(location).is_dir() and not has_weights(location):
        return build_from_config(repo_id, mirror, task, num_labels), tokenizer, False
    if task not in TASK_CLASSES:
        raise ValueError(f"task {task!r} is not one of {list(TASK_CLASSES)}")
    kwargs = {"num_labels": num_labels} if task == "sequence-classification" else {}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # a base model from an MLM checkpoint: the unused head is expected
    try:
        model = hub.from_pretrained(getattr(transformers, TASK_CLASSES[task]), repo_id, mirror=mirror, **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.eval(), tokenizer, True


def size_on_disk_mb(model_or_path):
    """Size of the saved weights in MB (10^6 bytes). A path: that file, or a directory's weight files
    (safetensors, pytorch_model*.bin, onnx). A model: saved with ``save_pretrained`` (safetensors) into a temporary
    directory and measured; models that safetensors cannot hold (quantized) are saved with ``torch.save``."""
    if isinstance(model_or_path, quantize.OrtModel):
        return size_on_disk_mb(model_or_path.path)
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if path.is_file():
            files = [path] + [p for p in [Path(f"{path}.data")] if p.is_file()]  # ONNX external data
        elif path.is_dir():
            files = sorted({f for pattern in SIZE_FILES for f in path.glob(pattern)})
        else:
            raise FileNotFoundError(f"size_on_disk_mb: no such file or directory {path}")
        if not files:
            raise FileNotFoundError(f"size_on_disk_mb: no weight files ({', '.join(SIZE_FILES)}) in {path}")
        return sum(f.stat().st_size for f in files) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        try:
            model_or_path.save_pretrained(tmp)
        except Exception:  # quantized tensors: safetensors refuses them
            for f in Path(tmp).iterdir():
                f.unlink()
            torch.save(model_or_path.state_dict(), Path(tmp) / "model.pt")
        return size_on_disk_mb(tmp)


# ---------------------------------------------------------------------------------------------- devices

def resolve_device(device="cpu"):
    """'cpu', 'cuda[:n]' or 'auto' (cuda when available) as a torch.device; a clear error when cuda is missing."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: no CUDA GPU available here (use 'cpu' or 'auto')")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not one of cpu, cuda, auto")
    return device


def resolve_precision(precision, device):
    """torch dtype for 'auto' | 'fp32' | 'fp16' | 'bf16', by lib.training.select_precision's device rule (bf16
    only on compute capability >= 8: older GPUs such as the T4 report bf16 support but emulate it). Timing adds one
    restriction: on CPU only fp32, since half precision there is not what a CPU deployment would run."""
    from lib.training import select_precision
    device = torch.device(device)
    if device.type == "cpu" and precision in ("fp16", "bf16"):
        raise ValueError(f"precision {precision!r}: half precision is timed on GPU only; use fp32 on CPU")
    return select_precision(precision, device)[0]


def prepare(model, device="cpu", precision="fp32"):
    """``model`` in eval mode on ``device`` in ``precision`` (a copy when it has to be cast, so trained fp32 weights
    are not rounded in place)."""
    device = resolve_device(device)
    dtype = resolve_precision(precision, device)
    if dtype != torch.float32:
        model = copy.deepcopy(model)
    return model.eval().to(device=device, dtype=dtype)


def _model_device(model):
    if isinstance(model, quantize.OrtModel):
        return torch.device("cpu")
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextmanager
def _threads(num_threads):
    """torch intra-op threads set to ``num_threads`` (0: leave as is) for the duration, restored after."""
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0, got {num_threads}")
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine_info(device="cpu"):
    """What the timings depend on: processor, cores, torch threads, load average (the machine may be shared)."""
    device = torch.device(device)
    info = {"device": str(device), "torch": torch.__version__, "num_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "processor": _cpu_name(), "platform": platform.platform()}
    if hasattr(os, "getloadavg"):
        info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---------------------------------------------------------------------------------------------- timer

def _timed(step, device):
    """Seconds taken by one call of ``step``. On CUDA, events bracket the call and we wait for its end, so the
    figure covers the GPU work (and, the stream being idle at the start, any CPU work such as tokenization)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def _run_schedule(steps, warmup, repeats, devices, interleave="example", progress=True, desc="timing"):
    """Time ``steps`` (label -> list of zero-argument calls, same length for every label) -> label -> array
    [repeats, n] of seconds. ``warmup`` untimed calls per label first (interleaved), then ``repeats`` passes; the
    label that goes first rotates each repeat. interleave='pass': one label's whole pass, then the next;
    'example': every label on item i before any moves to i + 1."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if interleave not in ("pass", "example"):
        raise ValueError(f"interleave {interleave!r} is not one of ['pass', 'example']")
    labels = list(steps)
    n = len(steps[labels[0]])
    if n == 0 or any(len(steps[label]) != n for label in labels):
        raise ValueError(f"every model needs the same, non-zero number of batches: {[len(steps[k]) for k in labels]}")
    times = {label: np.zeros((repeats, n)) for label in labels}
    with torch.inference_mode():
        for i in range(warmup):
            for label in labels:
                steps[label][i % n]()
        bar = tqdm(total=repeats * n * len(labels), desc=desc, disable=not progress, leave=False)
        for r in range(repeats):
            order = labels[r % len(labels):] + labels[:r % len(labels)]
            pairs = ([(label, i) for label in order for i in range(n)] if interleave == "pass"
                     else [(label, i) for i in range(n) for label in order])
            for label, i in pairs:
                times[label][r, i] = _timed(steps[label][i], devices[label])
                bar.update()
        bar.close()
    return times


def _summary(times, n_examples, batch_size, n_tokens):
    """Pass totals and per-example figures from an array [repeats, n_batches] of seconds."""
    pass_s = times.sum(axis=1)
    per_batch = np.median(times, axis=0)  # each batch's median over repeats
    return {"total_s": float(np.median(pass_s)), "total_s_min": float(pass_s.min()),
            "pass_s": [float(s) for s in pass_s],
            "per_example_ms_median": float(np.median(per_batch)) * 1e3 / batch_size,
            "per_example_ms_mean": float(np.median(pass_s)) * 1e3 / n_examples,
            "n_examples": n_examples, "n_batches": times.shape[1], "batch_size": batch_size,
            "repeats": times.shape[0], "mean_tokens": n_tokens / n_examples}


def extrapolate_total_s(result, n_total=STSB_DEV_SIZE):
    """A subset's full-pass time scaled to ``n_total`` examples (per-example mean x n_total, i.e. the measured
    ``total_s`` x ``extrapolation_factor``). An estimate, not a measurement; honest only if the subset is
    representative in length: compare its ``mean_tokens`` with the full set's."""
    return result["per_example_ms_mean"] * n_total / 1e3


def extrapolation_factor(n_examples, n_total):
    """How many times more examples the full pass has than the timed subset (1.0: the whole set was timed)."""
    if n_examples <= 0 or n_total <= 0:
        raise ValueError(f"extrapolation_factor: counts must be > 0, got {n_examples} timed of {n_total}")
    return n_total / n_examples


# ---------------------------------------------------------------------------------------------- text inputs

def _dev_split(task, dataset, mirror):
    if task not in glue.TASKS:
        raise ValueError(f"task {task!r} is not one of {list(glue.TASKS)}")
    return hub.load_dataset(dataset, task, mirror=mirror, split=glue.TASKS[task].eval_splits[0])


def dev_examples(task=glue.STSB, dataset="nyu-mll/glue", mirror=None, max_examples=None, seed=0):
    """(texts, labels) of a GLUE dev split: texts are strings or (sentence1, sentence2) pairs. ``max_examples``
    keeps a seeded random subset (in dataset order), more representative of lengths than the first rows."""
    data = _dev_split(task, dataset, mirror)
    if max_examples is not None and max_examples <= 0:
        raise ValueError(f"max_examples must be > 0 or None, got {max_examples}")
    data = subset(data, max_examples, seed)
    columns = glue.TASKS[task].text
    texts = list(zip(*(data[c] for c in columns))) if len(columns) == 2 else list(data[columns[0]])
    return texts, list(data["label"])


def _encode(tokenizer, batch, max_length):
    if isinstance(batch[0], (tuple, list)):
        first, second = zip(*batch)
        return tokenizer(list(first), list(second), padding=True, truncation=True, max_length=max_length,
                         return_tensors="pt")
    return tokenizer(list(batch), padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def _text_steps(model, tokenizer, texts, batch_size, include_tokenizer, max_length, device):
    """One zero-argument call per batch, and the number of non-padding tokens seen."""
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    if include_tokenizer:
        n_tokens = sum(int(_encode(tokenizer, b, max_length)["attention_mask"].sum()) for b in batches)
        return [lambda b=b: model(**_encode(tokenizer, b, max_length).to(device)) for b in batches], n_tokens
    encoded = [_encode(tokenizer, b, max_length).to(device) for b in batches]
    return [lambda e=e: model(**e) for e in encoded], sum(int(e["attention_mask"].sum()) for e in encoded)


def compare_interleaved(models, texts, batch_size=1, warmup=10, repeats=3, num_threads=0, include_tokenizer=False,
                        interleave="example", reference=None, max_length=512, progress=True):
    """Time every model over ``texts`` (strings or sentence pairs) in one interleaved run. ``models``: label ->
    (model, tokenizer), each model already on its device and precision (see ``prepare``); with the tokenizer
    excluded every batch is encoded (and moved to the device) before timing, with it included both are timed.
    Returns {"models": label -> timing summary (total_s = median pass, per-example median and mean, ...),
    "ratio": label -> total_s / total_s of ``reference`` (default the first label, e.g. the teacher),
    "ratio_per_pass": label -> list, "paper_ratio", "num_threads", "machine", ...}."""
    if not models:
        raise ValueError("models: give at least one label -> (model, tokenizer)")
    if not texts:
        raise ValueError("texts: nothing to time")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    reference = reference or next(iter(models))
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models {list(models)}")
    devices = {label: _model_device(model) for label, (model, _) in models.items()}
    steps, n_tokens = {}, {}
    for label, (model, tokenizer) in models.items():
        steps[label], n_tokens[label] = _text_steps(model, tokenizer, texts, batch_size, include_tokenizer,
                                                    max_length, devices[label])
    with _threads(num_threads):
        machine = machine_info(devices[reference])
        times = _run_schedule(steps, warmup, repeats, devices, interleave, progress,
                              desc=f"{'+'.join(models)} x{len(texts)}")
        loadavg_after = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    results = {label: _summary(times[label], len(texts), batch_size, n_tokens[label]) for label in models}
    for label in models:
        results[label]["device"] = str(devices[label])
    ref_pass = times[reference].sum(axis=1)
    return {"models": results,
            "ratio": {label: results[label]["total_s"] / results[reference]["total_s"] for label in models},
            "ratio_per_pass": {label: [float(x) for x in times[label].sum(axis=1) / ref_pass] for label in models},
            "reference": reference, "paper_ratio": PAPER_RATIO, "include_tokenizer": include_tokenizer,
            "batch_size": batch_size, "warmup": warmup, "repeats": repeats, "interleave": interleave,
            "num_threads": machine["num_threads"], "machine": machine, "loadavg_1min_after": loadavg_after}


# ---------------------------------------------------------------------------------------------- sweeps

def synthetic_batch(model, batch_size, seq_len, device=None, seed=0):
    """Inputs of exactly ``seq_len`` tokens (no padding) for ``model``: random ids away from special tokens."""
    config = model.config
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and seq_len > max_positions:
        raise ValueError(f"seq_lengths: {seq_len} exceeds the model's max_position_embeddings {max_positions}")
    generator = torch.Generator().manual_seed(seed)
    low, high = min(1000, config.vocab_size - 1), config.vocab_size
    input_ids = torch.randint(low, high, (batch_size, seq_len), generator=generator)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    device = device or _model_device(model)
    return {k: v.to(device) for k, v in batch.items()}


def sweep(models, seq_lengths, batch_sizes, warmup=3, repeats=5, num_threads=0, max_batch_tokens=None,
          progress=True):
    """Latency and throughput over sequence lengths x batch sizes, models interleaved call by call at each point.
    ``models``: label -> model (or (model, tokenizer)), already on their device/precision. Points with
    batch_size * seq_len > ``max_batch_tokens`` are skipped. For several precisions on GPU, sweep each
    ``prepare(model, device, precision)`` and ``pd.concat`` the tables (the dtype column tells them apart).
    Returns a tidy DataFrame: one row per model and point with latency_ms (median), latency_ms_min,
    sequences_per_s, tokens_per_s, device, dtype, num_threads."""
    models = {label: m[0] if isinstance(m, tuple) else m for label, m in models.items()}
    if not models:
        raise ValueError("models: give at least one label -> model")
    if not seq_lengths or any(s < 1 for s in seq_lengths):
        raise ValueError(f"seq_lengths must be positive lengths, got {seq_lengths}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive sizes, got {batch_sizes}")
    points = [(b, s) for b in batch_sizes for s in seq_lengths if not max_batch_tokens or b * s <= max_batch_tokens]
    devices = {label: _model_device(model) for label, model in models.items()}
    rows = []
    with _threads(num_threads):
        for b, s in tqdm(points, desc="sweep", disable=not progress):
            steps = {label: [lambda m=model, x=synthetic_batch(model, b, s, devices[label]): m(**x)]
                     for label, model in models.items()}
            times = _run_schedule(steps, warmup, repeats, devices, "example", progress=False)
            for label, model in models.items():
                t = times[label][:, 0]
                median = float(np.median(t))
                rows.append({"model": label, "seq_len": s, "batch_size": b, "latency_ms": median * 1e3,
                             "latency_ms_min": float(t.min()) * 1e3, "sequences_per_s": b / median,
                             "tokens_per_s": b * s / median, "device": str(devices[label]),
                             "dtype": quantize.dtype_name(model), "num_threads": torch.get_num_threads()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- size vs quality

def size_quality_table(measured, reference=paper.TEACHER):
    """Points for the size-vs-quality figure: the paper's (Table 1 / Table 3) and this run's. ``measured``: label ->
    {params, latency, glue_score, size_mb (optional), note (optional)}, latency in any one unit; ``reference``: the
    measured label whose latency is 1 (the paper's is BERT-base). Returns a DataFrame with model, source,
    params_m, size_mb, relative_latency, glue_score, note; rows without a score keep glue_score NaN."""
    paper_reference = paper.TABLE3[paper.BERT_BASE]["seconds"]
    rows = [{"model": name, "source": "paper", "params_m": p["params_m"], "size_mb": np.nan,
             "relative_latency": p["seconds"] / paper_reference, "glue_score": paper.TABLE1[name]["score"],
             "note": "Table 3: STS-B dev pass, CPU, batch 1"} for name, p in paper.TABLE3.items()]
    if measured and reference not in measured:
        raise ValueError(f"reference {reference!r} is not one of the measured labels {list(measured)}")
    for label, m in measured.items():
        rows.append({"model": label, "source": "this run", "params_m": m["params"] / 1e6,
                     "size_mb": m.get("size_mb", np.nan),
                     "relative_latency": m["latency"] / measured[reference]["latency"],
                     "glue_score": np.nan if m.get("glue_score") is None else m["glue_score"],
                     "note": m.get("note", "")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- the stage (05_latency)

def load_models(params):
    """label -> (model, tokenizer, weights) for a LatencyParams: every entry of ``params.models`` (trained weights
    when present, else random from its config; a model of this run that does not exist yet is skipped with a
    note), plus '<student> int8' when ``params.quantize`` (the STUDENT label, else the first DistilBERT)."""
    device = resolve_device(params.device)
    loaded = {}
    for label, repo_id in params.models.items():
        location = hub.resolve(repo_id, params.mirror)
        if repo_id.startswith(params.run_dir) and not Path(location).exists():
            print(f"{label}: {repo_id} not found (not trained in this run yet): skipped")
            continue
        model, tokenizer, pretrained = load_for_timing(repo_id, params.mirror)
        loaded[label] = (prepare(model, device), tokenizer, "trained" if pretrained else "random (config only)")
    if params.quantize:
        student = (paper.STUDENT if paper.STUDENT in loaded
                   else next((k for k in loaded if "distil" in k.lower()), None))
        if student is None:
            print(f"quantize: no {paper.STUDENT!r} or DistilBERT among {list(loaded)}: nothing quantized")
        else:
            backend = quantize.available_backend()
            model, tokenizer, weights = loaded[student]
            int8 = quantize.quantize_dynamic_int8(model, backend, num_threads=params.num_threads)
            loaded[f"{student} int8"] = (int8, tokenizer, f"{weights.split(' ')[0]}, int8 dynamic ({backend})")
    return loaded


def table3(params, models=None, progress=True):
    """Table 3 for a LatencyParams: each model's parameters, size on disk and time over the STS-B dev (sub)set at
    ``params.batch_size``, all models interleaved example by example in one run, tokenizer excluded then included.
    Returns one JSON-ready record per model: total_s (measured: the median pass over the n_examples timed),
    extrapolated_total_s (an estimate: total_s x extrapolation_factor, n_total / n_examples, the full dev set over
    the examples timed; equal to total_s when the whole set was timed), per-example median and mean, the same
    ``*_with_tokenizer``, ratio to the reference (BERT-base, else teacher, else the first) from pass totals and
    from per-example medians, threads, device and load average. ``models``: a ``load_models`` result to reuse."""
    models = models if models is not None else load_models(params)
    if not models:
        raise ValueError(f"models: none of {params.models} could be loaded")
    texts, _ = dev_examples(params.sentences_task, params.sentences_dataset, params.mirror, params.max_examples,
                            params.seed)
    n_total = len(_dev_split(params.sentences_task, params.sentences_dataset, params.mirror))
    reference = next((k for k in (paper.BERT_BASE, paper.TEACHER) if k in models), next(iter(models)))
    runs = {include: compare_interleaved({k: (m, tok) for k, (m, tok, _) in models.items()}, texts,
                                         params.batch_size, params.warmup, params.repeats, params.num_threads,
                                         include_tokenizer=include, reference=reference, progress=progress)
            for include in (False, True)}
    records = []
    for label, (model, _, weights) in models.items():
        record = {"model": label, "source": params.models.get(label, params.models.get(label.replace(" int8", ""))),
                  "weights": weights, "parameters": count_parameters(model),
                  "params_m": count_parameters(model) / 1e6, "size_mb": size_on_disk_mb(model),
                  "reference": reference, "n_total": n_total}
        for include, suffix in ((False, ""), (True, "_with_tokenizer")):
            out = runs[include]
            r, ref = out["models"][label], out["models"][reference]
            record.update({f"total_s{suffix}": r["total_s"],
                           f"extrapolated_total_s{suffix}": extrapolate_total_s(r, n_total),
                           f"per_example_ms_median{suffix}": r["per_example_ms_median"],
                           f"per_example_ms_mean{suffix}": r["per_example_ms_mean"],
                           f"ratio{suffix}": out["ratio"][label],
                           f"ratio_per_example{suffix}": r["per_example_ms_median"] / ref["per_example_ms_median"]})
        r, out = runs[False]["models"][label], runs[False]
        record.update({"n_examples": r["n_examples"], "mean_tokens": r["mean_tokens"], "batch_size": r["batch_size"],
                       "extrapolation_factor": extrapolation_factor(r["n_examples"], n_total),
                       "repeats": out["repeats"], "warmup": out["warmup"], "interleave": out["interleave"],
                       "num_threads": out["num_threads"], "device": r["device"],
                       "loadavg_1min": [runs[False]["machine"].get("loadavg_1min"), runs[True]["loadavg_1min_after"]],
                       "paper_seconds": paper.TABLE3[label]["seconds"] if label in PAPER_TIMED else None})
        records.append(record)
    return records


def sweep_models(params, models=None, progress=True):
    """The sequence-length x batch-size sweep of a LatencyParams (``seq_lengths``, ``batch_sizes``,
    ``sweep_max_tokens``, each of ``precisions`` on ``device``; int8 models in fp32 on CPU only) as one tidy
    DataFrame with a ``precision`` column; labels get the precision appended when there are several."""
    models = models if models is not None else load_models(params)
    device = resolve_device(params.device)
    tables = []
    for precision in params.precisions:
        resolve_precision(precision, device)  # a clear error before anything is timed
        chosen = {}
        for label, (model, _, _) in models.items():
            if quantize.cpu_fp32_only(model):
                if precision != "fp32" or device.type != "cpu":
                    continue
                chosen[label] = model
            else:
                chosen[label] = prepare(model, device, precision)
        table = sweep(chosen, params.seq_lengths, params.batch_sizes, params.warmup, params.repeats,
                      params.num_threads, params.sweep_max_tokens, progress)
        table["precision"] = precision
        if len(params.precisions) > 1:
            table["model"] = table["model"] + f" {precision}"
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def sweep_figure(frame, title="Latency against sequence length"):
    """The sweep drawn by lib.plots (median latency against sequence length, one line per model and batch)."""
    from lib import plots
    return plots.latency_sweep_figure(frame, title)


def glue_scores(results_dir):
    """{model label: GLUE score (median over seeds)} from results_dir/glue.json, {} before stage 3 has run."""
    from lib import config, results
    record = results.load(results_dir, config.GLUE)
    return {} if record is None else {row["model"]: row["median"] for row in record.summary
                                      if row["task"] == glue.SCORE and row["metric"] == "score"}


def run(params, progress=True):
    """Stage 5 (lib.config.STAGES): Table 3 (``table3``), the sequence-length sweep (``sweep_models``) and size
    against quality (each timed model beside its GLUE score from the same results folder, when stage 3 has run),
    written to results_dir/latency.json (lib.results.LatencyResult). Returns the record."""
    from lib import config, results
    started = time.perf_counter()
    models = load_models(params)
    rows = table3(params, models=models, progress=progress)
    swept = sweep_models(params, models=models, progress=progress)
    scores = glue_scores(params.path("results_dir"))
    measured = {row["model"]: {"params": row["parameters"], "latency": row["per_example_ms_median"],
                               "size_mb": row["size_mb"], "glue_score": scores.get(row["model"])} for row in rows}
    size_quality = size_quality_table(measured, reference=rows[0]["reference"])
    return results.write_result(params, config.LATENCY, time.perf_counter() - started, table3=rows,
                                sweep=swept.to_dict(orient="records"), size_quality=size_quality.to_dict(orient="records"))
