"""The smoke profile's offline world: a tiny synthetic hub generated on first use.

Everything lives under hub ids ``smoke/...`` laid out like real hub repositories, so the smoke profile runs
the exact loading code of the real profiles:

- ``smoke/corpus``   text corpus (train / test), like Salesforce/wikitext
- ``smoke/glue``     nine configs with GLUE's columns, label names and splits (cola ... wnli)
- ``smoke/imdb``     multi-sentence reviews, ``text`` / ``label``
- ``smoke/squad``    extractive QA with SQuAD's columns
- ``smoke/tiny-bert`` a 4-layer, 64-wide BertForMaskedLM (random weights) with a WordPiece tokenizer
  trained on the corpus

Each task's rows come from the generator its spec names (lib.tasks: ``Task.smoke``); a task registered
elsewhere (lib.tasks.register) gets its stand-in generated under its own ``smoke/...`` id on first use.

The language is a small grammar whose labels follow from the words, so every task is learnable. Nothing
here is a finding: it exists to run the whole pipeline in minutes on a laptop.
"""
import os
import random
import shutil
from pathlib import Path

VERSION = "2"  # bump when the generated data changes, so stale smoke hubs are rebuilt

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
NOUNS = ["cat", "dog", "house", "garden", "river", "book", "car", "tree", "song", "lamp", "boat", "chair"]
POSITIVE = ["good", "great", "lovely", "happy", "bright", "wonderful", "pleasant", "fine"]
NEGATIVE = ["bad", "awful", "sad", "dull", "terrible", "boring", "ugly", "poor"]
VERBS = ["sees", "likes", "finds", "paints", "visits", "reads", "cleans", "buys"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "grey"]
PLACES = ["city", "village", "park", "market", "school", "harbour"]
ADVERBS = ["today", "again", "quietly", "often", "slowly", "early"]
SYNONYMS = {"sees": "notices", "likes": "enjoys", "finds": "discovers", "buys": "purchases", "good": "fine",
            "great": "grand", "bad": "poor", "sad": "gloomy"}

SPLIT_SIZES = {"train": 240, "test": 48}  # every other split (validation*) has 64 rows
TEACHER_CONFIG = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                      max_position_embeddings=256, type_vocab_size=2)


def _fact(rng, sentiment=None):
    """One grammatical clause as a dict of its slots."""
    adjectives = {None: POSITIVE + NEGATIVE, 1: POSITIVE, 0: NEGATIVE}[sentiment]
    return dict(name=rng.choice(NAMES), verb=rng.choice(VERBS), adj=rng.choice(adjectives),
                noun=rng.choice(NOUNS), adverb=rng.choice(ADVERBS), place=rng.choice(PLACES))


def _say(f, synonyms=False):
    words = f"{f['name']} {f['verb']} the {f['adj']} {f['noun']} in the {f['place']} {f['adverb']} .".split()
    return " ".join(SYNONYMS.get(w, w) if synonyms else w for w in words)


def corpus_text(rng, n_documents):
    """Documents of 2-6 clauses, with a few colour facts so fill-mask has something to predict."""
    docs = []
    for _ in range(n_documents):
        clauses = []
        for _ in range(rng.randint(2, 6)):
            if rng.random() < 0.3:
                clauses.append(f"the {rng.choice(NOUNS)} of {rng.choice(NAMES)} is {rng.choice(COLORS)} .")
            else:
                clauses.append(_say(_fact(rng), synonyms=rng.random() < 0.2))
        docs.append(" ".join(clauses))
    return docs


# one generator per GLUE task, (rng, i) -> row: lib.tasks names each in its task's spec. Every draw of the
# original single generator is kept in its order (sst2's first, unused fact included): the smoke data, and so
# every smoke number, stay as they were.

def cola_row(rng, i=0):
    f = _fact(rng)
    words = _say(f).split()
    label = rng.randint(0, 1)
    if not label:
        core = words[:-1]
        while core == words[:-1]:
            rng.shuffle(core)
        words = core + ["."]
    return {"sentence": " ".join(words), "label": label}


def sst2_row(rng, i=0):
    _fact(rng)  # unused draw, kept (see above)
    label = rng.randint(0, 1)
    return {"sentence": _say(_fact(rng, label)), "label": label}


def _fact_and_other(rng):
    f = _fact(rng)
    label = rng.randint(0, 1)
    other = dict(f, name=rng.choice([n for n in NAMES if n != f["name"]]), noun=rng.choice(NOUNS))
    return f, label, other


def mrpc_row(rng, i=0):
    f, label, other = _fact_and_other(rng)  # equivalent: the same fact in other words
    second = _say(f, synonyms=True) if label else _say(other, synonyms=True)
    return {"sentence1": _say(f), "sentence2": second, "label": label}


def _entailment_row(rng, entail_label):
    f, label, other = _fact_and_other(rng)
    entailed = f"{f['name']} {f['verb']} the {f['noun']} ."
    wrong = f"{other['name']} {f['verb']} the {other['noun']} ."
    return {"sentence1": _say(f), "sentence2": entailed if label == entail_label else wrong, "label": label}


def rte_row(rng, i=0):
    return _entailment_row(rng, 0)  # rte: 0 = entailment


def wnli_row(rng, i=0):
    return _entailment_row(rng, 1)  # wnli: 1 = entailment


def stsb_row(rng, i=0):
    f = _fact(rng)
    g = dict(f)
    for slot in ("name", "verb", "adj", "noun"):
        if rng.random() < 0.5:
            g[slot] = rng.choice({"name": NAMES, "verb": VERBS, "adj": POSITIVE + NEGATIVE, "noun": NOUNS}[slot])
    shared = sum(f[s] == g[s] for s in ("name", "verb", "adj", "noun"))
    return {"sentence1": _say(f), "sentence2": _say(g), "label": float(5 * shared / 4)}


def qqp_row(rng, i=0):
    f = _fact(rng)
    label = rng.randint(0, 1)
    q1 = f"does {f['name']} {f['verb']} the {f['noun']} ?"
    q2 = (f"is it true that {f['name']} {SYNONYMS.get(f['verb'], f['verb'])} the {f['noun']} ?" if label
          else f"does {f['name']} {f['verb']} the {rng.choice([n for n in NOUNS if n != f['noun']])} ?")
    return {"question1": q1, "question2": q2, "label": label}


def mnli_row(rng, i=0):
    f = _fact(rng)
    label = rng.randint(0, 2)
    hypothesis = [f"{f['name']} {f['verb']} a {f['noun']} .",
                  f"{f['name']} {f['verb']} the {f['noun']} with a friend .",
                  f"{f['name']} never {f['verb']} any {f['noun']} ."][label]
    return {"premise": _say(f), "hypothesis": hypothesis, "label": label}


def qnli_row(rng, i=0):
    f = _fact(rng)
    label = rng.randint(0, 1)
    noun = f["noun"] if label == 0 else rng.choice([n for n in NOUNS if n != f["noun"]])
    return {"question": f"who {f['verb']} the {noun} ?", "sentence": _say(f), "label": label}


def glue_sizes(splits):
    """Rows per split of a smoke GLUE task: train 240, test 48, every other split (validation*) 64."""
    return {split: SPLIT_SIZES.get(split.split("_")[0], 64) for split in splits}


def imdb_row(rng, i=0):
    label = rng.randint(0, 1)
    n = rng.randint(3, 8)
    majority = [label] * (n // 2 + 1) + [1 - label] * (n - n // 2 - 1)
    rng.shuffle(majority)
    return {"text": " ".join(_say(_fact(rng, s)) for s in majority), "label": label}


def squad_row(rng, i):
    facts = [(rng.choice(NOUNS), name, rng.choice(COLORS)) for name in rng.sample(NAMES, rng.randint(3, 6))]
    context = " ".join(f"the {noun} of {name} is {color} ." for noun, name, color in facts)
    noun, name, color = rng.choice(facts)
    start = context.index(f"the {noun} of {name} is {color}") + len(f"the {noun} of {name} is ")
    return {"id": f"smoke-{i:05d}", "title": "colours", "context": context,
            "question": f"what colour is the {noun} of {name} ?",
            "answers": {"text": [color], "answer_start": [start]}}


def _write_split(rows, path, label_names=None):
    import datasets
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_list(rows)
    if label_names and "label" in dataset.column_names:  # GLUE's labels are ClassLabel features on the hub
        dataset = dataset.cast_column("label", datasets.ClassLabel(names=label_names))
    elif "label" in dataset.column_names and dataset.features["label"].dtype.startswith("float"):
        dataset = dataset.cast_column("label", datasets.Value("float32"))
    if "idx" in dataset.column_names:
        dataset = dataset.cast_column("idx", datasets.Value("int32"))
    dataset.to_parquet(str(path))


def build_datasets(root, seed=0):
    """The corpus, then every built-in task's smoke data (lib.tasks.BUILTIN, in its order), from one random stream."""
    from lib import tasks
    rng = random.Random(seed)
    for split, n in (("train", 600), ("test", 60)):
        _write_split([{"text": t} for t in corpus_text(rng, n)], root / "smoke/corpus" / f"{split}-00000-of-00001.parquet")
    builtin = [tasks.TASKS[name] for name in tasks.BUILTIN]
    for task in builtin:
        _write_task(task, root / task.smoke.dataset, task_rows(task, rng))
    for dataset in dict.fromkeys(task.smoke.dataset for task in builtin):
        _write_card(root / dataset, [task for task in builtin if task.smoke.dataset == dataset])


def task_rows(task, rng):
    """{split: rows} of a task's smoke stand-in (task.smoke), drawn from ``rng`` split after split."""
    return {split: [_smoke_row(task, split, i, rng) for i in range(n)] for split, n in task.smoke.sizes.items()}


def _smoke_row(task, split, i, rng):
    row = task.smoke.row(rng, i)
    if task.smoke.hidden_test_labels and split.startswith("test"):  # like the hub: test labels are hidden
        row["label"] = -1.0 if task.regression else -1
    return dict(row, idx=i) if task.smoke.idx else row


def _write_task(task, folder, rows):
    """Write a task's {split: rows} under its smoke dataset's ``folder`` (in its config's folder, if any)."""
    for split, split_rows in rows.items():
        _write_split(split_rows, folder / (task.config or "") / f"{split}-00000-of-00001.parquet",
                     list(task.label_names) if task.label_names else None)


def _write_card(folder, members):
    """The README of a smoke dataset whose tasks are configs of it (smoke/glue), listing them as the hub's does."""
    if not any(task.config for task in members):
        return
    card = ["---", "configs:"]
    for task in members:
        card += [f"- config_name: {task.config}", "  data_files:"]
        card += [line for split in task.smoke.sizes for line in
                 (f"  - split: {split}", f"    path: {task.config}/{split}-00000-of-00001.parquet")]
    footer = f"Synthetic tasks in the schema of {members[0].dataset} (smoke profile)."
    (folder / "README.md").write_text("\n".join(card + ["---", footer]) + "\n")


def ensure_registered(root, repo_id):
    """The smoke data of tasks registered outside lib.tasks (lib.tasks.register) whose stand-in is ``repo_id``:
    generated on first use, from a random stream of its own (seeded by the id), and again whenever the rows their
    generators give change (a stamp of the rows), so an edited generator is never answered with stale data."""
    import hashlib
    import json

    from lib import tasks
    members = [t for name, t in tasks.TASKS.items() if name not in tasks.BUILTIN and t.smoke.dataset == repo_id]
    if not members:
        return
    rng = random.Random(repo_id)
    rows = {task.name: task_rows(task, rng) for task in members}
    stamp = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(root) / repo_id
    if (folder / f"ROWS-{stamp}").exists():
        return
    tmp = Path(root) / f"{repo_id}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for task in members:
        _write_task(task, tmp, rows[task.name])
    _write_card(tmp, members)
    (tmp / f"ROWS-{stamp}").write_text("generated by lib.smoke\n")
    shutil.rmtree(folder, ignore_errors=True)  # a concurrent reader sees the old rows or the new, never a mix
    os.replace(tmp, folder)


def build_teacher(root, seed=0):
    """A WordPiece vocabulary of every smoke word (whole words, plus single characters for anything else) and a
    random tiny BertForMaskedLM. The vocabulary is built, not trained: the WordPiece trainer of `tokenizers` breaks
    ties between equally frequent merges in hash order, so two trainings on the same texts gave different
    vocabularies (and different smoke numbers on every fresh clone)."""
    import datasets
    import torch
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    normalizer, pre_tokenizer = BertNormalizer(lowercase=True), BertPreTokenizer()
    words = set()
    for parquet in sorted(root.glob("smoke/**/*.parquet")):
        for row in datasets.Dataset.from_parquet(str(parquet)):
            for key, value in row.items():
                if isinstance(value, str) and key not in ("id", "title"):
                    words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(value)))
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars),
             *sorted(words - set(chars))]
    out = root / "smoke/tiny-bert"
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True, model_max_length=256)
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size, **TEACHER_CONFIG))
    model.save_pretrained(out)


def ensure_hub(root, repo_id=None):
    """Generate the smoke hub at ``root`` unless an up-to-date one is there (safe with concurrent callers); with
    ``repo_id``, also the smoke data of registered tasks that live under that id (ensure_registered)."""
    root = Path(root)
    marker = root / f"COMPLETE-v{VERSION}"
    if not marker.exists():
        _build_hub(root, marker)
    if repo_id is not None:
        ensure_registered(root, repo_id)
    return root


def _build_hub(root, marker):
    import datasets
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with_bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        build_datasets(tmp)
        build_teacher(tmp)
    finally:
        if with_bars:
            datasets.enable_progress_bars()
    (tmp / marker.name).write_text("generated by lib.smoke\n")
    if root.exists() and not marker.exists():
        shutil.rmtree(root, ignore_errors=True)  # stale version
    try:
        os.replace(tmp, root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
