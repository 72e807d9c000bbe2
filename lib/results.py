"""Results files: small JSON documents written by runs, each carrying its provenance, and their schema.

Every number the book shows is read from one of these (``results/<profile>/<name>.json``), never typed.
A result records the scale it was produced at, the full stage parameters, the git commit, package
versions, hardware and wall time.

The schema: one dataclass per kind of results file (``KINDS``), written by the lib function that computes it
(``write_result``) and read back by one reader (``read``; ``load`` for results/<profile>/<name>.json). The
reader refuses a file with an unknown or missing field, or a field of the wrong type, naming the file and the
field. Paths inside results are stored relative to the repository (``repo_relative``).

    kind            file                                            record
    teacher         results/<profile>/teacher.json                  TeacherResult   (stage 1)
    teacher_logits  results/<profile>/teacher_logits.json           TeacherLogits   (stage 1)
    distill         results/<profile>/distill-<run>.json            DistillResult   (stage 2, one per run)
    glue            results/<profile>/glue.json                     StageSummary    (stage 3)
    imdb_squad      results/<profile>/imdb_squad.json               StageSummary    (stage 4)
    latency         results/<profile>/latency.json                  LatencyResult   (stage 5)
    finetune_run    results/<profile>/{glue,imdb_squad}/<model>/<task>-seed<n>.json   FinetuneRun
    gpu_check       results/gpu-check/<gpu>.json                    GpuCheck        (scripts/gpu_check.py)
"""
import dataclasses
import json
import os
import platform
import subprocess
import tempfile
import typing
from datetime import datetime, timezone
from pathlib import Path

from lib import REPO_ROOT, config

# what each profile's numbers may be called in the book
SCALE_LABELS = {
    "smoke": "smoke scale (synthetic data, tiny random models: checks the pipeline, not a finding)",
    "cpu": "CPU-scale reproduction (MiniLM-L6 teacher, 2 CPU cores, offline mirror data)",
    "t4": "Colab T4 scale (BERT-base teacher, WikiText-103, one 16 GB T4)",
    "gpu": "one-GPU scale (the cpu study one size up: MiniLM-L6 teacher, one H200-class GPU, offline mirror data)",
    "paper": "paper scale (BERT-base teacher, Wikipedia-size corpus, multi-GPU)",
}
PACKAGES = ("torch", "transformers", "datasets", "accelerate", "numpy", "scikit-learn", "scipy", "plotly", "papermill")


def git_commit():
    """The checkout's commit, with '-dirty' when tracked code differs from it; 'unknown' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        # outputs that runs rewrite do not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results",
                                ":!book/stages"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


_pinned_commit = None


def pin_commit():
    """Record the code's commit now, as a stage starts (lib.notebook_setup): its results, written minutes or
    hours later while the working tree may have moved on, then name the commit of the code that computed them."""
    global _pinned_commit
    _pinned_commit = git_commit()
    return _pinned_commit


def versions():
    from importlib.metadata import PackageNotFoundError, version
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def hardware():
    import torch
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                    compute_capability=f"{props.major}.{props.minor}", gpu_memory_gb=round(props.total_memory / 2**30, 1))
    return info


def provenance(params=None):
    record = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "git_commit": _pinned_commit or git_commit(),
              "versions": versions(), "hardware": hardware()}
    if params is not None:
        record.update(profile=params.profile, scale=SCALE_LABELS.get(params.profile, params.profile),
                      params=config.as_dict(params))
    return record


def write_json(path, payload):
    """Write JSON atomically (temp file + rename), so an interrupted run never leaves half a result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:  # allow_nan=False: no NaN/Infinity in a results file (not JSON; see _missing)
        json.dump(_missing(payload), f, indent=1, sort_keys=False, default=_jsonable, allow_nan=False)
        f.write("\n")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private (0600); a results file is as any other new file
    os.replace(tmp, path)
    return path


def _umask():
    """This process's umask, read without changing it (Linux: /proc/self/status; elsewhere the usual 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _missing(value):
    """NaN (a missing value, e.g. a retention with no teacher, pandas' empty cell) as None, recursively; an
    infinity is left for json.dump to refuse, since it is a bug rather than a gap."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _missing(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_missing(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch values
        return _missing(value.tolist())
    return value


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a results file")


def repo_relative(path):
    """A path as results store it: an absolute path inside the repository made relative to it (a relative path or
    hub id is kept as given), an absolute one outside it kept absolute (e.g. /content/drive/...): no results file names this machine's
    checkout."""
    if path is None or not Path(path).is_absolute():  # a hub id, or relative to the repository already
        return None if path is None else str(path)
    full = Path(os.path.normpath(path))
    return str(full.relative_to(REPO_ROOT)) if full.is_relative_to(REPO_ROOT) else str(full)


# ------------------------------------------------------------------------------------------- the schema
# Nested blocks (a summary's rows, a latency table's rows, metrics by split) stay plain JSON lists and dicts:
# their columns are those of lib.finetune.summarize and lib.latency.table3, which the tests pin.

@dataclasses.dataclass(kw_only=True)
class StageResult:
    """What every stage results file holds besides its own fields: its name, wall time and provenance."""
    name: str
    wall_time_s: float
    provenance: dict


@dataclasses.dataclass(kw_only=True)
class TeacherResult(StageResult):
    teacher: str                 # the teacher's hub id or path (params.teacher)
    saved_to: str                # where stage 1 saved the (adapted) teacher
    parameters: int
    layers: int
    hidden_size: int
    had_mlm_head: bool
    adapted: bool                # whether the masked-LM head was trained (adapt_mlm)
    heldout_sequences: int
    mlm_before: dict             # lib.teacher.evaluate_mlm: mlm_accuracy, perplexity, loss, n_tokens, n_sequences
    mlm_after: dict
    adaptation: dict | None = None  # lib.teacher.adapt: each run's curve on the selection sequences, and the choice
    loss_log: list | None = None    # the kept adaptation's training log (lib.teacher.train_mlm_head)
    weights: str | None = None      # lib.training.weights_digest of the saved teacher: a re-run reuses it when equal


@dataclasses.dataclass(kw_only=True)
class TeacherLogits(StageResult):
    text: str                    # the sentence, one token masked
    position: int                # the masked position
    tokens: list                 # the teacher's top-k tokens there
    logits: list                 # and their logits
    answer: str | None           # the masked position's correct token
    answer_rank: int | None      # its index in tokens (None: not among them)
    temperatures: list | None    # the temperatures of logsumexp
    logsumexp: list | None       # the full-vocabulary logsumexp(logits / T) at each of those temperatures


@dataclasses.dataclass(kw_only=True)
class DistillResult(StageResult):
    teacher: str
    student_dir: str
    teacher_parameters: int
    student_parameters: int
    student_layers: list | None  # the teacher layers the student was initialised from (None: random init)
    steps: int
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    epochs: float
    tokens: int
    tokens_per_s: float | None
    resumed_from: int | str | None
    precision: str
    world_size: int
    final: dict                  # the last logged value of each loss term
    log_path: str
    checkpoint: str | None
    segments: list | None
    weights_sha1: str | None
    gradient_accumulation_steps: int | None
    effective_batch_size: int | None
    loss_curve: list             # {step, tokens, loss, loss_<term>...} per logged step
    # held-out intrinsic measures (params.heldout_sequences > 0; else None), lib.distill.heldout_evaluator: the
    # same sequences and masks for every run and model of the stage. A measure: {mlm_accuracy, kl_to_teacher (KL(
    # teacher || student) at T = 1, nats per masked token), perplexity, loss, n_tokens (masked targets),
    # n_sequences}; a curve point adds step, tokens (seen so far) and seconds (the evaluation's).
    heldout: dict | None         # the final student's measures (the last point of heldout_curve)
    heldout_curve: list | None   # a point at step 0 (as initialised) and every eval_every steps (eval_every > 0), and the end
    heldout_reference: dict | None  # main run only: {"teacher": ..., <undistilled_name>: ...} measured alike


@dataclasses.dataclass(kw_only=True)
class StageSummary(StageResult):
    """glue.json and imdb_squad.json: lib.finetune.summarize's rows over the stage's fine-tuning runs."""
    summary: list
    runs: int
    budget: dict | None = None   # the budget rule's ladder per task (lib.finetune.apply_budget_rule); None: no ladder


@dataclasses.dataclass(kw_only=True)
class LatencyResult(StageResult):
    table3: list                 # lib.latency.table3: one row per timed model
    sweep: list                  # lib.latency.sweep_models rows
    size_quality: list           # lib.latency.size_quality_table rows

    def timings(self, suffix=""):
        """{model: measured and extrapolated times kept apart} from ``table3``: measured_s (the median pass over the
        examples timed), n_examples (how many were timed), n_total (the full set), factor (n_total / n_examples),
        extrapolated_s (the full-pass estimate measured_s x factor; None when the whole set was timed) and
        measured_whole_set. ``suffix``: '' (tokenization excluded) or '_with_tokenizer'. Rows written before
        lib.latency.table3 recorded ``extrapolation_factor`` get it from their n_total and n_examples."""
        out = {}
        for row in self.table3:
            n, n_total = row.get("n_examples"), row.get("n_total") or row.get("n_examples")
            whole = bool(n) and n >= n_total
            out[row["model"]] = {"measured_s": row[f"total_s{suffix}"], "n_examples": n, "n_total": n_total,
                                 "factor": row.get("extrapolation_factor") or (n_total / n if n else None),
                                 "extrapolated_s": None if whole else row[f"extrapolated_total_s{suffix}"],
                                 "measured_whole_set": whole}
        return out


@dataclasses.dataclass(kw_only=True)
class FinetuneRun:
    """One fine-tuning run (lib.finetune.run_sweep): results/<profile>/<stage>/<model>/<task>-seed<n>.json."""
    model: str
    task: str
    model_path: str
    seed: int
    teacher_path: str | None     # the fine-tuned teacher of a "(D)" run
    metrics: dict
    score: float
    metrics_by_split: dict
    predictions: dict            # per evaluation split: what the model predicted (lib.finetune._prediction_summary)
    train: dict
    hparams: dict
    single_class: bool | None    # one class for the whole primary evaluation split (None: SQuAD)
    majority_rate: float | None
    run_key: dict | None         # what the result depends on (lib.finetune.run_key); None: a (D) run's teacher
    provenance: dict
    predictions_file: str | None = None  # SQuAD: {question id: answer text} (official script's input), repo-relative
    wall_time_s: float | None = None     # the fine-tuning's seconds, evaluation included (None: not kept then)


@dataclasses.dataclass(kw_only=True)
class GpuCheck:
    """scripts/gpu_check.py's record: results/gpu-check/<gpu>.json."""
    name: str
    gpu: str | None
    dry_run: bool
    passed: bool
    failed: list
    checks: dict
    throughput: dict
    model: str
    wall_time_s: float
    provenance: dict


# a stage's results name (lib.config.STAGES) is its kind; distill-<run> files are of kind distill
KINDS = {config.TEACHER: TeacherResult, config.TEACHER_LOGITS: TeacherLogits, config.DISTILL: DistillResult,
         config.GLUE: StageSummary, config.IMDB_SQUAD: StageSummary, config.LATENCY: LatencyResult,
         "finetune_run": FinetuneRun, "gpu_check": GpuCheck}

# The one legacy shape the reader converts: results written before these fields existed (results/cpu and
# results/smoke of earlier commits) lack them and read them as None; distill's checkpoint was 'checkpoint_dir'.
_ADDED_LATER = {config.DISTILL: ("segments", "weights_sha1", "gradient_accumulation_steps", "effective_batch_size",
                                  "heldout", "heldout_curve", "heldout_reference"),
                "finetune_run": ("single_class", "majority_rate", "predictions_file", "wall_time_s"),
                config.TEACHER_LOGITS: ("answer", "answer_rank", "temperatures", "logsumexp"),
                config.TEACHER: ("adaptation", "loss_log", "weights"), config.GLUE: ("budget",), config.IMDB_SQUAD: ("budget",)}
_RENAMED = {config.DISTILL: {"checkpoint_dir": "checkpoint"}}


PREDICTIONS = "predictions"  # a fine-tuning run's folder of predictions ({question id: answer}), not a record
BUDGET = "budget"  # a model's folder of budget-ladder runs (lib.finetune.budget_path): records, not the stage's runs


def results_files(root):
    """Every results record under ``root`` (results/ or one profile's folder): the JSON files but the runs'
    predictions, which their records name (FinetuneRun.predictions_file)."""
    return sorted(p for p in Path(root).rglob("*.json") if p.parent.name != PREDICTIONS)


def kind_of(path):
    """The kind of a results file, from where it lies and its name."""
    path = Path(path)
    if path.parent.name == "gpu-check":
        return "gpu_check"
    if path.parent.parent.name in (config.GLUE, config.IMDB_SQUAD) or path.parent.name == BUDGET:
        return "finetune_run"
    if path.stem.startswith(config.DISTILL_RESULTS_PREFIX):
        return config.DISTILL
    if path.stem in KINDS:
        return path.stem
    raise ValueError(f"{path}: not a results file of a known kind ({', '.join(KINDS)})")


def as_record(data, kind, source="results"):
    """``data`` (a results file's JSON) as the record of ``kind``; ValueError naming ``source`` and the field
    when a field is unknown, missing or of the wrong type."""
    cls = KINDS[kind]
    data = dict(data)
    for old, new in _RENAMED.get(kind, {}).items():
        if old in data and new not in data:
            data[new] = data.pop(old)
    for name in _ADDED_LATER.get(kind, ()):
        data.setdefault(name, None)
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in hints]
    missing = [k for k in hints if k not in data]
    if unknown or missing:
        raise ValueError(f"{source}: not a {kind} results file: "
                         + "; ".join(([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
                                     + ([f"missing field(s) {', '.join(missing)}"] if missing else [])))
    for name, hint in hints.items():
        if not _has_type(data[name], hint):
            raise ValueError(f"{source}: field {name!r} should be {hint}, got {type(data[name]).__name__}")
    return cls(**data)


def _has_type(value, hint):
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType) \
        else (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind not in (float, int, type(None)) and isinstance(value, kind):
            return True
    return False


def to_dict(record):
    """A record as its JSON document: name and wall time first, provenance last."""
    data = dataclasses.asdict(record)
    first = {k: data.pop(k) for k in ("name", "wall_time_s", "model", "task") if k in data}
    last = {"provenance": data.pop("provenance")}
    return {**first, **data, **last}


def write(path, record):
    """Write ``record`` to ``path`` (atomically), after checking it against its kind's schema."""
    as_record(to_dict(record), _kind_of_record(record, path), source=str(path))
    return write_json(path, to_dict(record))


def _kind_of_record(record, path):
    kinds = [k for k, cls in KINDS.items() if type(record) is cls]
    return kinds[0] if len(kinds) == 1 else kind_of(path)


def write_result(params, kind, wall_time_s, name=None, **fields):
    """results_dir/<name>.json: the record of ``kind`` with ``fields``, the wall time and the provenance of
    ``params`` (name: the kind's own unless given, e.g. distill-<run>). Returns the record."""
    name = name or kind
    record = KINDS[kind](name=name, wall_time_s=round(wall_time_s, 3), provenance=provenance(params), **fields)
    write(params.path("results_dir") / f"{name}.json", record)
    return record


def wall_time(params, name, seconds, worked, same=lambda record: True):
    """The wall time for the record ``name`` a call writes: its own ``seconds`` when it did the work; when it only read
    finished work back (a second `make stages`), the time the existing record gives, if ``same(record)``."""
    if worked:
        return seconds
    try:
        before = load(params.path("results_dir"), name)
    except ValueError:  # a damaged record: nothing to keep
        return seconds
    return before.wall_time_s if before is not None and same(before) else seconds


def read(path, kind=None):
    """The record in the results file ``path`` (kind: from the path unless given). A missing file raises
    FileNotFoundError; a file that is not valid JSON or does not fit the schema raises ValueError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"results file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"results file {path}: a JSON object expected, got {type(data).__name__}")
    return as_record(data, kind or kind_of(path), source=str(path))


def load(results_dir, name):
    """The record of results_dir/<name>.json, or None when that run has not happened."""
    path = Path(results_dir) / f"{name}.json"
    return read(path) if path.is_file() else None


def read_runs(folder):
    """Every fine-tuning run record under ``folder`` (results/<profile>/<stage>/<model>/*.json), sorted by path."""
    return [read(p, "finetune_run") for p in sorted(Path(folder).glob("*/*.json"))]
