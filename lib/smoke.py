"""The smoke profile's offline world: a tiny synthetic hub generated on first use.

Everything lives under hub ids ``smoke/...`` laid out like real hub repositories, so the smoke profile runs
the exact loading code of the real profiles:

- ``smoke/corpus``   text corpus (train / test), like Salesforce/wikitext
- ``smoke/glue``     nine configs with GLUE's columns, label names and splits (cola ... wnli)
- ``smoke/imdb``     multi-sentence reviews, ``text`` / ``label``
- ``smoke/squad``    extractive QA with SQuAD's columns
- ``smoke/tiny-bert`` a 4-layer, 64-wide BertForMaskedLM (random weights) with a WordPiece tokenizer
  trained on the corpus

The language is a small grammar whose labels follow from the words, so every task is learnable. Nothing
here is a finding: it exists to run the whole pipeline in minutes on a laptop.
"""
import os
import random
import shutil
from pathlib import Path

from lib import glue

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

# config -> (text columns, label names or None for regression, splits): GLUE's, from lib.glue
GLUE_LAYOUT = {name: (list(task.text), None if task.regression else list(task.label_names), list(task.splits))
               for name, task in glue.TASKS.items()}
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


def glue_row(task, rng):
    """One example of ``task`` whose label follows from the words."""
    f = _fact(rng)
    if task == glue.COLA:
        words = _say(f).split()
        label = rng.randint(0, 1)
        if not label:
            core = words[:-1]
            while core == words[:-1]:
                rng.shuffle(core)
            words = core + ["."]
        return {"sentence": " ".join(words), "label": label}
    if task == glue.SST2:
        label = rng.randint(0, 1)
        return {"sentence": _say(_fact(rng, label)), "label": label}
    if task in (glue.MRPC, glue.RTE, glue.WNLI):
        label = rng.randint(0, 1)
        other = dict(f, name=rng.choice([n for n in NAMES if n != f["name"]]), noun=rng.choice(NOUNS))
        if task == glue.MRPC:  # equivalent: the same fact in other words
            second = _say(f, synonyms=True) if label else _say(other, synonyms=True)
            return {"sentence1": _say(f), "sentence2": second, "label": label}
        entailed = f"{f['name']} {f['verb']} the {f['noun']} ."
        wrong = f"{other['name']} {f['verb']} the {other['noun']} ."
        entail_label = 0 if task == glue.RTE else 1  # rte: 0 = entailment; wnli: 1 = entailment
        return {"sentence1": _say(f), "sentence2": entailed if label == entail_label else wrong, "label": label}
    if task == glue.STSB:
        g = dict(f)
        for slot in ("name", "verb", "adj", "noun"):
            if rng.random() < 0.5:
                g[slot] = rng.choice({"name": NAMES, "verb": VERBS, "adj": POSITIVE + NEGATIVE, "noun": NOUNS}[slot])
        shared = sum(f[s] == g[s] for s in ("name", "verb", "adj", "noun"))
        return {"sentence1": _say(f), "sentence2": _say(g), "label": float(5 * shared / 4)}
    if task == glue.QQP:
        label = rng.randint(0, 1)
        q1 = f"does {f['name']} {f['verb']} the {f['noun']} ?"
        q2 = (f"is it true that {f['name']} {SYNONYMS.get(f['verb'], f['verb'])} the {f['noun']} ?" if label
              else f"does {f['name']} {f['verb']} the {rng.choice([n for n in NOUNS if n != f['noun']])} ?")
        return {"question1": q1, "question2": q2, "label": label}
    if task == glue.MNLI:
        label = rng.randint(0, 2)
        hypothesis = [f"{f['name']} {f['verb']} a {f['noun']} .",
                      f"{f['name']} {f['verb']} the {f['noun']} with a friend .",
                      f"{f['name']} never {f['verb']} any {f['noun']} ."][label]
        return {"premise": _say(f), "hypothesis": hypothesis, "label": label}
    if task == glue.QNLI:
        label = rng.randint(0, 1)
        noun = f["noun"] if label == 0 else rng.choice([n for n in NOUNS if n != f["noun"]])
        return {"question": f"who {f['verb']} the {noun} ?", "sentence": _say(f), "label": label}
    raise ValueError(f"unknown smoke GLUE task {task!r}")


def imdb_row(rng):
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


def _size(split):
    return SPLIT_SIZES.get(split.split("_")[0], 64)


def build_datasets(root, seed=0):
    rng = random.Random(seed)
    for split, n in (("train", 600), ("test", 60)):
        _write_split([{"text": t} for t in corpus_text(rng, n)], root / "smoke/corpus" / f"{split}-00000-of-00001.parquet")
    card = ["---", "configs:"]
    for task, (_, labels, splits) in GLUE_LAYOUT.items():
        card += [f"- config_name: {task}", "  data_files:"]
        for split in splits:
            rows = []
            for i in range(_size(split)):
                row = glue_row(task, rng)
                if split.startswith("test"):  # like the hub: test labels are hidden
                    row["label"] = -1.0 if labels is None else -1
                rows.append(dict(row, idx=i))
            _write_split(rows, root / "smoke/glue" / task / f"{split}-00000-of-00001.parquet", labels)
            card += [f"  - split: {split}", f"    path: {task}/{split}-00000-of-00001.parquet"]
    (root / "smoke/glue/README.md").write_text("\n".join(card + ["---", "Synthetic GLUE-schema tasks (smoke profile)."]) + "\n")
    for split in ("train", "test"):
        _write_split([imdb_row(rng) for _ in range(_size(split) if split == "test" else 200)],
                     root / "smoke/imdb" / f"{split}-00000-of-00001.parquet", ["neg", "pos"])
    for split in ("train", "validation"):
        _write_split([squad_row(rng, i) for i in range(_size(split) if split != "train" else 200)],
                     root / "smoke/squad" / f"{split}-00000-of-00001.parquet")


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


def ensure_hub(root):
    """Generate the smoke hub at ``root`` unless an up-to-date one is there (safe with concurrent callers)."""
    root = Path(root)
    marker = root / f"COMPLETE-v{VERSION}"
    if marker.exists():
        return root
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
    return root
