"""Student construction (the teacher is loaded by lib.teacher).

The student is a ``DistilBertForMaskedLM`` initialised from a BERT teacher the way the authors'
``extract_distilbert.py`` did it: embeddings, then one teacher layer per student layer (by default the authors'
[0, 2, 4, 7, 9, 11] of a 12-layer teacher), then the MLM head. Every tensor is copied by name, and shapes are
checked, so nothing can be silently skipped (the trap of ``load_state_dict(strict=False)`` across naming
schemes). Two deliberate differences from the authors' script: token_type_embeddings[0] is folded into the
position embeddings (the student then reproduces the teacher's embedding output exactly for single-segment
input), and the MLM transform is copied by default (the authors copied it only on request).
"""
import ctypes
import math
import os
import platform
import warnings
from fractions import Fraction
from pathlib import Path

import torch
import yaml
from transformers import DistilBertConfig, DistilBertForMaskedLM

from lib import hub

AUTHORS_LAYERS = [0, 2, 4, 7, 9, 11]  # scripts/extract_distilbert.py, 12-layer BERT -> 6 layers
# Below this many parameters (the smoke models: ~0.2M; MiniLM-L6, the cpu teacher: 22.7M) a matmul is too small
# to share across cores: on a busy machine every parallel region waits for a descheduled thread, so one is faster.
TINY_MODEL_PARAMETERS = 5_000_000
_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice at start-up (OMP_NUM_THREADS or the cores)
# glibc's mallopt parameters (malloc.h). By default a block over the mmap threshold (128 KiB, adapting up to
# 32 MiB) is mapped and unmapped one by one, and free memory at the heap's top is given back to the system
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_FREED = {M_TRIM_THRESHOLD: 1 << 30, M_MMAP_MAX: 0}  # keep up to 1 GiB free at the top; never mmap


def evenly_spread_layers(n_teacher, n_student):
    """Teacher layers to copy: first and last always kept, the rest evenly spaced, ties rounded down.

    12 -> 6 gives the authors' [0, 2, 4, 7, 9, 11]; 6 -> 3 gives [0, 2, 5]; 24 -> 12 gives [0, 2, 4, 6, 8,
    10, 13, 15, 17, 19, 21, 23]. A 1-layer student keeps layer 0 (the one trained on raw embeddings).
    """
    if not 0 < n_student <= n_teacher:
        raise ValueError(f"n_student_layers must be in 1..{n_teacher} (the teacher's depth), got {n_student}")
    if n_student == 1:
        return [0]
    # exact fractions: i * (n_teacher - 1) / (n_student - 1) rounded to nearest, half down (2.5 -> 2)
    return [math.ceil(Fraction(i * (n_teacher - 1), n_student - 1) - Fraction(1, 2)) for i in range(n_student)]


def count_parameters(model):
    """Number of distinct parameters: tied tensors (the MLM decoder and the word embeddings) counted once.
    Quantized models keep the count of their source: torch.ao dynamic-quantized Linear layers hold their packed
    weights outside ``parameters()`` and are counted too; an ONNX Runtime model (lib.quantize.OrtModel, not a
    torch module) carries its source's count.

    The count covers the model as given. The paper's counts (paper.TABLE3) are of the encoders without the MLM
    head (BertModel with its pooler, DistilBertModel), which is what stage 5 loads and counts; stages 1 and 2
    count the masked-LM models they train, head included."""
    if not isinstance(model, torch.nn.Module):
        return model.num_parameters
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    for module in model.modules():
        if isinstance(module, torch.ao.nn.quantized.Linear):  # the dynamic one subclasses it
            weight, bias = module._weight_bias()
            total += weight.numel() + (bias.numel() if bias is not None else 0)
    return total


weight_files = hub.weight_files  # what save_model wrote; the list lives in lib.hub


def has_weights(path):
    """Whether a local model directory holds weights (the mirror's BERT/DistilBERT hold only config + tokenizer)."""
    return Path(path).is_dir() and bool(weight_files(path))


def student_config(teacher_config, layers):
    """The DistilBERT config matching a BERT teacher's width, with ``len(layers)`` layers."""
    tc = teacher_config
    if abs(getattr(tc, "layer_norm_eps", 1e-12) - 1e-12) > 1e-15:
        warnings.warn(f"teacher layer_norm_eps={tc.layer_norm_eps}, DistilBERT always uses 1e-12: the student "
                      "will not reproduce the teacher's outputs exactly")
    return DistilBertConfig(
        vocab_size=tc.vocab_size, max_position_embeddings=tc.max_position_embeddings, sinusoidal_pos_embds=False,
        n_layers=len(layers), n_heads=tc.num_attention_heads, dim=tc.hidden_size, hidden_dim=tc.intermediate_size,
        dropout=tc.hidden_dropout_prob, attention_dropout=tc.attention_probs_dropout_prob, activation=tc.hidden_act,
        initializer_range=tc.initializer_range, pad_token_id=tc.pad_token_id,
        tie_word_embeddings=getattr(tc, "tie_word_embeddings", True),
        teacher_layers=list(layers),  # kept in config.json: the layer map for cos_layers="all" and provenance
    )


def student_teacher_names(layers, tie_word_embeddings=True):
    """(student parameter, teacher parameter) pairs copied verbatim. The student's position embeddings are not
    in the list: they receive teacher position embeddings + token_type_embeddings[0] (see build_student)."""
    pairs = [
        ("distilbert.embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight"),
        ("distilbert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.weight"),
        ("distilbert.embeddings.LayerNorm.bias", "bert.embeddings.LayerNorm.bias"),
    ]
    per_layer = [
        ("attention.q_lin", "attention.self.query"),
        ("attention.k_lin", "attention.self.key"),
        ("attention.v_lin", "attention.self.value"),
        ("attention.out_lin", "attention.output.dense"),
        ("sa_layer_norm", "attention.output.LayerNorm"),
        ("ffn.lin1", "intermediate.dense"),
        ("ffn.lin2", "output.dense"),
        ("output_layer_norm", "output.LayerNorm"),
    ]
    for s_layer, t_layer in enumerate(layers):
        for s_name, t_name in per_layer:
            for kind in ("weight", "bias"):
                pairs.append((f"distilbert.transformer.layer.{s_layer}.{s_name}.{kind}",
                              f"bert.encoder.layer.{t_layer}.{t_name}.{kind}"))
    pairs += [
        ("vocab_transform.weight", "cls.predictions.transform.dense.weight"),
        ("vocab_transform.bias", "cls.predictions.transform.dense.bias"),
        ("vocab_layer_norm.weight", "cls.predictions.transform.LayerNorm.weight"),
        ("vocab_layer_norm.bias", "cls.predictions.transform.LayerNorm.bias"),
        ("vocab_projector.bias", "cls.predictions.bias"),
    ]
    if not tie_word_embeddings:  # otherwise the projector is the word embedding matrix itself
        pairs.append(("vocab_projector.weight", "cls.predictions.decoder.weight"))
    return pairs


def build_student(teacher, layers=None, n_layers=None, random_init=False, seed=None):
    """A DistilBertForMaskedLM student of a BertForMaskedLM teacher.

    layers: teacher layer indices to copy (default: ``evenly_spread_layers`` for ``n_layers``, itself half the
    teacher's depth by default). random_init: keep DistilBERT's random initialisation (the ablation) instead of
    copying; the architecture is the same. seed: draw that initialisation from this seed (the global RNG is left
    as it was), so it does not depend on what ran before; None: from the global RNG.
    """
    n_teacher = teacher.config.num_hidden_layers
    if layers is None:
        layers = evenly_spread_layers(n_teacher, n_layers or max(1, n_teacher // 2))
    layers = list(layers)
    if n_layers is not None and n_layers != len(layers):
        raise ValueError(f"n_layers={n_layers} but {len(layers)} layers given: {layers}")
    if not layers or sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= n_teacher:
        raise ValueError(f"layers must be increasing distinct indices in 0..{n_teacher - 1}, got {layers}")
    if getattr(teacher.config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"teacher position_embedding_type={teacher.config.position_embedding_type!r}: "
                         "DistilBERT has absolute position embeddings only")

    config = student_config(teacher.config, layers)
    if random_init and seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return DistilBertForMaskedLM(config)
    student = DistilBertForMaskedLM(config)
    if random_init:
        return student

    teacher_params = dict(teacher.named_parameters(remove_duplicate=False))
    student_params = dict(student.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for s_name, t_name in student_teacher_names(layers, config.tie_word_embeddings):
            source, target = teacher_params[t_name], student_params[s_name]
            if source.shape != target.shape:
                raise ValueError(f"shape mismatch copying {t_name} {tuple(source.shape)} -> {s_name} {tuple(target.shape)}")
            target.copy_(source)
        # BERT adds token_type_embeddings[0] to every single-segment input; DistilBERT has no token types, so
        # that vector moves into every position embedding
        embeddings = teacher.bert.embeddings
        student.distilbert.embeddings.position_embeddings.weight.copy_(
            embeddings.position_embeddings.weight + embeddings.token_type_embeddings.weight[0])
    return student


def layer_map(student, cos_layers="last"):
    """Pairs (student hidden-state index, teacher hidden-state index) for the cosine loss. Index 0 is the
    embedding output, i + 1 the output of layer i. "last": the last layers only (the released recipe); "all":
    each student layer against the teacher layer it was copied from (extension)."""
    if cos_layers == "last":
        return [(-1, -1)]
    if cos_layers != "all":
        raise ValueError(f"cos_layers must be 'last' or 'all', got {cos_layers!r}")
    layers = getattr(student.config, "teacher_layers", None)
    if layers is None:
        raise ValueError("cos_layers='all' needs student.config.teacher_layers (set by build_student)")
    return [(i + 1, t + 1) for i, t in enumerate(layers)]


def save_model(model, output_dir, tokenizer=None):
    """save_pretrained (safetensors) of the model and, when given, its tokenizer: a directory that
    AutoModelForMaskedLM / AutoTokenizer load."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    return output_dir


def keep_freed_memory():
    """Have glibc's malloc keep the memory this process frees for its next allocations, for the rest of the
    process. Returns whether it applied (glibc only; elsewhere nothing changes).

    A training step frees and allocates the same large buffers every step (the word-embedding gradient, the
    vocabulary logit chunks, activations). By default each is unmapped when freed and mapped again next step as
    fresh pages, which the kernel faults in and zeroes one by one. Kept (no mmap, the heap trimmed only past 1 GiB
    free), they are reused. The arithmetic is unchanged, so results are bit for bit the same (the cpu profile's
    stage 2, 60 steps: the same weights digest). On 2 cores it gave stage 2 6 % more tokens/s (1,336 against
    1,260) and the fine-tuning benchmark 9 % (benchmarks/finetune_throughput.py against --default-malloc), at 1 %
    more peak memory."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return all(libc.mallopt(option, value) == 1 for option, value in KEEP_FREED.items())


def set_torch_threads(model):
    """Set torch's intra-op thread count for running ``model`` on CPU and return it: OMP_NUM_THREADS when it is
    set (always respected), else 1 for a model under TINY_MODEL_PARAMETERS, else torch's start-up default.
    Without CUDA (a CPU run) the process also keeps the memory it frees (keep_freed_memory)."""
    if not torch.cuda.is_available():
        keep_freed_memory()
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given:
        try:
            threads = int(given.split(",")[0])  # "4,2" sets nested levels; the first is torch's
        except ValueError:
            raise ValueError(f"environment variable OMP_NUM_THREADS={given!r} is not a thread count") from None
    elif sum(p.numel() for p in model.parameters()) < TINY_MODEL_PARAMETERS:
        threads = 1
    else:
        threads = _DEFAULT_THREADS
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


# ------------------------------------------------------------------------------------------- model cards

CARD = "README.md"  # a saved model folder's model card, which the hub shows and reads its metadata from
CARD_TAGS = ("distilbert-reproduced",)


def write_model_card(folder, title, about, base_model=None, tags=(), pipeline_tag=None, metrics=None,
                     provenance=None):
    """``folder``/README.md, the hub's model card: YAML front matter (library_name, tags, base_model when known,
    pipeline_tag), then ``title``, ``about`` (what the model is), ``metrics`` ({name: value} measured before the
    save, when any) and ``provenance`` (a results record's: the git commit, profile and the stage's parameters).
    No loader reads README.md and lib.finetune.model_fingerprint hashes config, weights and tokenizer files only,
    so the card changes neither the model nor the results keyed on it. Returns the card's path."""
    front = {"library_name": "transformers", "tags": [*CARD_TAGS, *tags]}
    if base_model:
        front["base_model"] = base_model
    if pipeline_tag:
        front["pipeline_tag"] = pipeline_tag
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {title}", "", about, ""]
    lines += _card_metrics(metrics) + _card_provenance(provenance)
    path = Path(folder) / CARD
    path.write_text("\n".join(lines))
    return path


def read_model_card(folder):
    """(front matter as a dict, body text) of ``folder``/README.md; ({}, "") when there is none."""
    path = Path(folder) / CARD
    if not path.is_file():
        return {}, ""
    text = path.read_text()
    parts = text.split("---\n", 2)
    if not text.startswith("---\n") or len(parts) < 3:  # a README of another kind: no metadata to read
        return {}, text
    try:
        front = yaml.safe_load(parts[1])
    except yaml.YAMLError:
        return {}, text
    return (front if isinstance(front, dict) else {}), parts[2]


def _card_metrics(metrics):
    rows = {name: value for name, value in (metrics or {}).items() if isinstance(value, (int, float))}
    if not rows:
        return ["## Metrics", "", "None measured when this model was saved.", ""]
    table = [f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
             for name, value in rows.items()]
    return ["## Metrics", "", "Measured when the model was saved:", "", "| metric | value |", "|---|---|", *table, ""]


def _card_provenance(provenance):
    if not provenance:
        return []
    scale = provenance.get("scale", provenance.get("profile"))
    return ["## Provenance", "", f"- git commit: `{provenance.get('git_commit')}`",
            f"- profile: `{provenance.get('profile')}` ({scale})", f"- created: {provenance.get('created')}",
            f"- packages: {', '.join(f'{k} {v}' for k, v in (provenance.get('versions') or {}).items())}",
            "", "The stage's parameters:", "", "```yaml",
            yaml.safe_dump(provenance.get("params") or {}, sort_keys=False).rstrip(), "```", ""]


def base_model_of(model):
    """The hub id a model given as ``model`` (a hub id or a local folder) descends from: a folder's own card's
    base_model (stage 1's teacher names the hub teacher it adapted), else ``model`` when it reads as a hub id
    ("org/name"); None for a folder without a card and for any other path."""
    from lib import repo_path
    folder = repo_path(model)
    if folder.is_dir():
        return read_model_card(folder)[0].get("base_model")
    text = str(model)
    return text if text.count("/") <= 1 and not text.startswith((".", "/", "~")) else None


def teacher_card(folder, params, record):
    """The model card of stage 1's (adapted) teacher, from its results record (lib.results.TeacherResult)."""
    adapted = "its masked-LM head trained on the corpus" if record.adapted else "as loaded (not adapted)"
    about = (f"The masked-LM teacher of a DistilBERT reproduction (stage 1): `{params.teacher}`, {adapted}; "
             f"{record.layers} layers, hidden size {record.hidden_size}, {record.parameters:,} parameters. "
             f"Metrics: masked-token accuracy and perplexity on {record.heldout_sequences} held-out sequences.")
    metrics = {f"{k} (before adaptation)": v for k, v in record.mlm_before.items()} if record.adapted else {}
    metrics.update(record.mlm_after)
    return write_model_card(folder, "DistilBERT reproduction: the teacher", about, base_model_of(params.teacher),
                            ("bert", "fill-mask"), "fill-mask", metrics, record.provenance)


def student_card(params, record):
    """The model card of a distilled student (stage 2, one per run: main and ablations), from its results record
    (lib.results.DistillResult), in run_dir/<run_name>."""
    about = (f"A DistilBERT student ({record.student_parameters:,} parameters, initialised from teacher layers "
             f"{record.student_layers}) distilled from `{params.teacher}` with the triple loss for {record.steps} "
             f"steps ({record.tokens:,} tokens), run `{params.run_name}`. Metrics: the last logged losses and, "
             "when measured, masked-token accuracy and KL to the teacher on held-out sequences.")
    metrics = {**{f"final {k}": v for k, v in record.final.items()}, **(record.heldout or {})}
    tags = ("distilbert", "fill-mask", "knowledge-distillation")
    return write_model_card(params.path("run_dir") / params.run_name, f"DistilBERT reproduction: student "
                            f"`{params.run_name}`", about, base_model_of(params.teacher), tags, "fill-mask", metrics,
                            record.provenance)


def undistilled_card(folder, params, measures=None):
    """The model card of stage 2's undistilled baseline: the student as initialised, never trained. measures:
    its held-out measures (lib.distill.heldout_evaluator), when taken."""
    from lib.results import provenance
    about = (f"The undistilled baseline of a DistilBERT reproduction: the student initialised from "
             f"`{params.teacher}` (teacher layers copied, or random with random_init) and saved before any training.")
    return write_model_card(folder, f"DistilBERT reproduction: undistilled student `{params.undistilled_name}`",
                            about, base_model_of(params.teacher), ("distilbert", "fill-mask"), "fill-mask", measures,
                            provenance(params))


def finetuned_card(folder, run):
    """The model card of a fine-tuned model a sweep kept (lib.finetune: the copy that teaches the (D) runs), from
    its fine-tuning run's record (lib.results.FinetuneRun as a dict)."""
    pipeline_tag = "question-answering" if run["task"] == "squad" else "text-classification"
    about = (f"`{run['model']}` (`{run['model_path']}`) fine-tuned on {run['task']} with seed {run['seed']}: the "
             "copy that teaches the distilled (D) fine-tuning runs. Metrics: its evaluation, in percent.")
    return write_model_card(folder, f"DistilBERT reproduction: {run['model']} fine-tuned on {run['task']}", about,
                            base_model_of(run["model_path"]), (run["task"],), pipeline_tag, run["metrics"],
                            run["provenance"])
