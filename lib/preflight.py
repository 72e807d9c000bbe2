"""Checks a stage runs in seconds, right after its parameters are loaded and before any model is: the output
folders are writable, the disk has room for the checkpoints, the corpus can yield a batch, and every model the
stage needs resolves. Each failure is a ParameterError naming the parameter to fix."""
import json
import math
import shutil
import uuid
from pathlib import Path

from lib import config, hub, paper, repo_path
from lib.config import ParameterError

PRODUCED_BY = {paper.TEACHER: config.TEACHER}  # a model folder's name -> the stage that writes it (others: distill)


def check(params, output_dir=None, pending=()):
    """Run every check for ``params`` (a stage's parameters). output_dir: where the executed notebook goes.
    pending: stages that run before this one in the same pipeline run, whose outputs do not exist yet."""
    stage = config.stage_of(params)
    for name in ("results_dir", "run_dir"):
        writable(params.path(name), name)
    if output_dir is not None:
        writable(Path(output_dir), "output_dir")
    from lib.checkpoints import check_lock  # here, not at the top: the module imports torch, preflight does not
    for folder in output_folders(params):  # another live run writing there: refused before anything loads
        check_lock(folder)
    for name, value in models_needed(params):
        producer = producer_of(params, value)
        if producer is not None and producer in pending:
            continue  # an earlier stage of this pipeline run writes it; checked when this stage starts
        resolve_model(params, name, value, producer)
    if stage in (config.TEACHER, config.DISTILL):
        needed = params.batch_size * getattr(params, "gradient_accumulation_steps", 1)
        check_corpus(params, needed)
        teacher = teacher_config(params, pending)
        if teacher is not None:
            if stage == config.DISTILL:
                params.check_teacher_depth(teacher["num_hidden_layers"])
            disk_space(params, teacher)


def writable(path, name):
    """Create and delete a probe file in ``path`` (or, when it does not exist yet, in its nearest existing
    parent, which must be a folder)."""
    path = Path(path).expanduser()
    probe_dir = path
    broken = config.dead_link(path)  # exists() is False for a symlink loop: the walk up would step past it
    if broken:
        raise ParameterError(name, f"{path} cannot be created: {broken[0]} is {broken[1]}; remove the link or give "
                                   "another path")
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ParameterError(name, f"{path} cannot be created: {probe_dir} is a file, not a folder")
    probe = probe_dir / f".write-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as err:
        raise ParameterError(name, f"{path} is not writable ({type(err).__name__}: {err}); give a writable "
                                   "folder") from None


def output_folders(params):
    """The folders a stage writes and locks while it runs (lib.checkpoints: one run per folder): stage 1 its
    teacher, stage 2 each run's folder and the undistilled student's, stages 3 and 4 their per-run results."""
    stage, run_dir = config.stage_of(params), params.path("run_dir")
    if stage == config.TEACHER:
        return [run_dir / config.TEACHER]
    if stage == config.DISTILL:
        names = [params.run_name, *params.ablations] + ([params.undistilled_name] if params.undistilled_name else [])
        return [run_dir / name for name in names]
    if stage in (config.GLUE, config.IMDB_SQUAD):
        return [params.path("results_dir") / stage]
    return []


def models_needed(params):
    """(parameter name, model id or path) of every model the stage loads."""
    needed = []
    if hasattr(params, "teacher"):
        needed.append(("teacher", params.teacher))
    for label, value in (getattr(params, "models", None) or {}).items():
        needed.append((f"models.{label}", value))
    if getattr(params, "squad_distill", False) and params.squad_teacher:
        needed.append(("squad_teacher", params.squad_teacher))
    return needed


def _is_local(params, value):
    path = Path(value).expanduser()
    return str(value).startswith((params.run_dir, "/", ".", "~")) or path.exists() or path.is_symlink()


def producer_of(params, value):
    """The stage that writes a model folder inside run_dir, or None for other ids and paths."""
    if not str(value).startswith(params.run_dir):
        return None
    return PRODUCED_BY.get(Path(value).name, config.DISTILL)


CONFIG_ONLY_STAGES = (config.LATENCY,)  # lib.latency times a model without weights with random ones


def resolve_model(params, name, value, producer=None):
    """A model folder (a path, a smoke id, or a hub id with a mirror copy) must hold what the stage loads from it:
    config.json, weights (but in CONFIG_ONLY_STAGES) and its tokenizer (every stage loads the tokenizer from the
    model's own folder); a hub id with no local copy must resolve (mirror, cache or hub, config only)."""
    location = hub.resolve(value, params.mirror)
    if not _is_local(params, value) and location == value:
        return _resolve_on_hub(params, name, value)
    path = repo_path(location)
    shown = value if _is_local(params, value) else f"{value} ({path})"
    made = (f" — it is produced by stage {producer!r} ({config.STAGES[producer].notebook}); run that stage first"
            if producer else "")
    broken = config.dead_link_text(path)
    if broken:
        raise ParameterError(name, broken)
    if path.is_file():
        raise ParameterError(name, f"{shown} is a file, not a model folder")
    if not (path / "config.json").is_file():
        what = "not found" if not path.exists() else "has no config.json (not a model folder)"
        raise ParameterError(name, f"{shown} {what}{made}")
    stage = config.stage_of(params)
    if stage not in CONFIG_ONLY_STAGES and not hub.weight_files(path):
        raise ParameterError(name, f"{shown} has no weights (none of {', '.join(hub.WEIGHT_FILES)}), only a "
                                   f"config: stage {stage!r} loads its trained weights; give a folder saved with "
                                   f"save_pretrained{made}")
    if not hub.has_tokenizer_vocabulary(path):
        raise ParameterError(name, f"{shown} has no tokenizer (none of {', '.join(hub.TOKENIZER_VOCABULARIES)}): "
                                   f"stage {stage!r} loads the tokenizer from the model's folder; save it there "
                                   f"too (tokenizer.save_pretrained){made}")
    return path


def _resolve_on_hub(params, name, value):
    try:
        from transformers import AutoConfig
        hub.from_pretrained(AutoConfig, value, mirror=params.mirror)
    except (OSError, ValueError) as err:
        raise ParameterError(name, f"model {value!r} does not resolve: {str(err).splitlines()[0]}") from None
    return value


def teacher_config(params, pending=()):
    """The teacher's config.json as a dict (no model load), or None when an earlier pending stage writes it."""
    producer = producer_of(params, params.teacher)
    if producer is not None and producer in pending:
        return None
    if _is_local(params, params.teacher) or params.teacher.startswith(hub.SMOKE_PREFIX):
        path = repo_path(hub.resolve(params.teacher, params.mirror))
        return json.loads((path / "config.json").read_text())
    from transformers import AutoConfig
    return hub.from_pretrained(AutoConfig, params.teacher, mirror=params.mirror).to_dict()


def bert_parameters(cfg, n_layers=None):
    """Parameter count of a BERT-style masked LM from its config (the estimate of lib.training.estimate_memory)."""
    hidden, ffn, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    layers = cfg["num_hidden_layers"] if n_layers is None else n_layers
    per_layer = 4 * hidden * hidden + 2 * hidden * ffn + 9 * hidden + ffn
    embeddings = (vocab + cfg.get("max_position_embeddings", 512) + cfg.get("type_vocab_size", 2)) * hidden
    return embeddings + 2 * hidden + layers * per_layer + hidden * hidden + 3 * hidden + vocab


def disk_space(params, teacher):
    """Room under run_dir for what the stage writes: per distillation run two checkpoint slots (fp32 weights and
    two AdamW moments, 12 bytes per parameter each) and the final model (4 bytes per parameter)."""
    if config.stage_of(params) == config.DISTILL:
        n = (len(params.student_layers) if params.student_layers else params.n_student_layers
             or teacher["num_hidden_layers"] // 2)
        runs = 1 + len(params.ablations)
        needed = runs * (2 * 12 + 4) * bert_parameters(teacher, n) + (4 * bert_parameters(teacher, n)
                                                                        if params.undistilled_name else 0)
    else:
        needed = 4 * bert_parameters(teacher)  # the adapted teacher
    path = params.path("run_dir")
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if free < needed:
        raise ParameterError("run_dir", f"{params.path('run_dir')} has {free / 1e9:.3g} GB free, the stage needs about "
                             f"{needed / 1e9:.3g} GB (checkpoints and models, estimated from parameter counts); "
                             "free space or use another run_dir")
    return needed, free


def check_corpus(params, needed):
    """The corpus is non-empty and, for text files, holds at least ``needed`` sequences (one optimizer step),
    estimated from word counts (a word is at least one token); hub sources: the id, split and column exist and the
    split has rows (parquet metadata, nothing tokenized)."""
    min_length = getattr(params, "min_length", 12)
    chunk = params.max_length - 2
    sequences = 0
    estimated = all("path" in source for source in params.corpus)  # hub rows are documents: no estimate
    for source in params.corpus:
        if "path" in source:
            path = repo_path(source["path"])
            if path.stat().st_size == 0:
                raise ParameterError("corpus", f"text file {path} is empty")
            sequences += text_sequences(path, source.get("max_documents"), chunk, min_length)
        else:
            hub_split_rows(params, source)
    if sequences == 0 and estimated:
        raise ParameterError("corpus", f"no line has the {min_length} tokens a sequence needs (min_length)")
    if estimated and sequences < needed:
        raise ParameterError("corpus", f"about {sequences} sequences of >= {min_length} tokens (estimated from word "
                             f"counts), fewer than one optimizer step needs ({needed}: batch_size x "
                             "gradient_accumulation_steps); give a bigger corpus or a smaller batch_size")
    return sequences


def text_sequences(path, max_documents, chunk, min_length):
    """Sequences of >= min_length tokens in the first max_documents lines of a text file, estimated from word
    counts. Every line is decoded as strict UTF-8, past max_documents too: the stage's loader (datasets' text
    builder) decodes the whole file and fails on the first bad byte, after the teacher has loaded."""
    sequences, offset = 0, 0
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ParameterError("corpus", "text file " + config.not_utf8(path, raw, err, i + 1, offset)) from None
            offset += len(raw)
            if max_documents is None or i < int(max_documents):
                words = len(line.split())
                sequences += words // chunk + (words % chunk + 2 >= min_length)
    return sequences


def hub_split_rows(params, source):
    """Rows of a hub corpus source's split, read from the parquet metadata of its local copy (mirror or smoke);
    None when it is only on the hub (checked when loaded)."""
    import datasets
    import pyarrow.parquet as pq
    location = hub.resolve(source["id"], params.mirror)
    if location == source["id"]:
        print(f"note: corpus source {source['id']!r} is not in a local mirror; it is checked when loaded")
        return None
    split, column = source.get("split", "train"), source.get("column", "text")
    try:
        builder = datasets.load_dataset_builder(location, source.get("name"))
    except (ValueError, OSError, datasets.exceptions.DatasetNotFoundError) as err:
        raise ParameterError("corpus", f"source {source['id']!r} ({location}): {str(err).splitlines()[0]}") from None
    files = builder.config.data_files or {}
    if split not in files:
        raise ParameterError("corpus", f"source {source['id']!r} has no split {split!r}; splits: {sorted(map(str, files))}")
    parquet = [f for f in files[split] if str(f).endswith(".parquet")]
    if not parquet:
        return None
    names = pq.read_schema(parquet[0]).names
    if column not in names:
        raise ParameterError("corpus", f"source {source['id']!r} has no column {column!r}; columns: {names}")
    rows = sum(pq.read_metadata(f).num_rows for f in parquet)
    if rows == 0:
        raise ParameterError("corpus", f"source {source['id']!r} split {split!r} is empty")
    return rows
