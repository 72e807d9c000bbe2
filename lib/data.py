"""Corpus -> token sequences on disk -> dynamically masked, length-grouped batches.

The corpus is tokenized once with ``datasets.Dataset.map`` into an Arrow file (memory-mapped, never the whole
corpus in RAM), cut into chunks of max_length - 2 tokens wrapped in [CLS] ... [SEP] (510 + 2 = 512 in the
released recipe), and chunks of fewer than min_length tokens are dropped (the authors drop <= 11). Masking is
redrawn for every batch: 15% of the batch's tokens become targets, drawn with probability proportional to
max(count, 1) ** -0.7 (rarer tokens more often), then 80% [MASK] / 10% kept / 10% random.
"""
import hashlib
import json
import math
import os
import re
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from lib import hub, repo_path


LINE_BREAK_TAGS = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)


def strip_markup(batch):
    """HTML line breaks (IMDb reviews are full of "<br /><br />") become spaces: they are not language."""
    return {"text": [LINE_BREAK_TAGS.sub(" ", text or "") for text in batch["text"]]}


def read_corpus(sources, mirror=None):
    """One ``datasets.Dataset`` with a single "text" column (one document per row) from corpus sources:
    {id, name?, split?, column?, max_documents?} loaded through lib.hub, or {path, max_documents?} a local text
    file, one document per line (relative paths are relative to the repository root)."""
    parts = []
    for source in sources:
        if "path" in source:
            path = repo_path(source["path"])
            if not path.is_file():
                raise FileNotFoundError(f"corpus text file not found: {path}")
            part = datasets.load_dataset("text", data_files=str(path), split="train")
            column = "text"
        elif "id" in source:
            part = hub.load_dataset(source["id"], source.get("name"), mirror=mirror, split=source.get("split", "train"))
            column = source.get("column", "text")
            if column not in part.column_names:
                raise ValueError(f"corpus source {source['id']!r} has no column {column!r}; columns: {part.column_names}")
        else:
            raise ValueError(f"corpus source needs 'id' or 'path', got {source!r}")
        if source.get("max_documents") is not None:
            part = part.select(range(min(int(source["max_documents"]), len(part))))
        part = part.select_columns([column])
        if column != "text":
            part = part.rename_column(column, "text")
        parts.append(part.map(strip_markup, batched=True, desc="clean text"))
    if not parts:
        raise ValueError("corpus is empty: give at least one source")
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def tokenize_corpus(texts, tokenizer, max_length=512, min_length=12, cache_dir=None, max_unknown_share=0.5,
                    num_proc=None):
    """Token sequences: a Dataset with columns input_ids ([CLS] chunk [SEP], at most max_length tokens) and
    length. texts: a Dataset with a "text" column, or a list of strings. With cache_dir the result is an Arrow
    file there, named after the corpus, tokenizer and lengths, and reused on the next call once its checksum
    matches (a damaged or truncated cache is named and rebuilt, see verify_token_cache). Sequences with more than
    max_unknown_share [UNK] tokens are dropped (as the authors did)."""
    if isinstance(texts, (list, tuple)):
        texts = datasets.Dataset.from_dict({"text": list(texts)})
    if max_length < 3 or not 0 < min_length < max_length:
        raise ValueError(f"need 3 <= max_length and 0 < min_length < max_length, got {max_length}, {min_length}")
    cls_id, sep_id, unk_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    if cls_id is None or sep_id is None:
        raise ValueError("the tokenizer needs [CLS] and [SEP] tokens (a BERT tokenizer)")
    chunk = max_length - 2
    id_type = "uint16" if len(tokenizer) <= 2 ** 16 else "int32"  # halves the disk size for BERT vocabularies

    def encode(batch):
        ids_out, lengths = [], []
        for ids in tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False,
                             return_token_type_ids=False, verbose=False)["input_ids"]:
            for start in range(0, len(ids), chunk):
                seq = [cls_id, *ids[start:start + chunk], sep_id]
                if len(seq) < min_length:
                    continue
                if unk_id is not None and seq.count(unk_id) > max_unknown_share * (len(seq) - 2):
                    continue
                ids_out.append(seq)
                lengths.append(len(seq))
        return {"input_ids": ids_out, "length": lengths}

    features = datasets.Features({"input_ids": datasets.List(datasets.Value(id_type)), "length": datasets.Value("int32")})
    kwargs = {}
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser()
        cache_dir.mkdir(parents=True, exist_ok=True)
        vocab = tokenizer.backend_tokenizer.to_str() if getattr(tokenizer, "is_fast", False) else str(tokenizer.get_vocab())
        key = f"{texts._fingerprint}|{vocab}|{max_length}|{min_length}|{max_unknown_share}"
        key = hashlib.sha1(key.encode()).hexdigest()[:16]
        kwargs["cache_file_name"] = str(cache_dir / f"tokens-{key}.arrow")
        verify_token_cache(kwargs["cache_file_name"])
    tokens = texts.map(encode, batched=True, batch_size=256, remove_columns=texts.column_names, features=features,
                       num_proc=num_proc, desc="tokenize", **kwargs)
    if cache_dir is not None:
        record_token_cache(kwargs["cache_file_name"], [Path(f["filename"]) for f in tokens.cache_files])
    return tokens


# --- the token cache's checksums ---
# datasets reuses an Arrow cache file unchecked: flipped bits were trained on in silence (other weights), and a
# truncated file failed with Arrow's "Expected to be able to read N bytes" naming no file. A sidecar JSON beside
# it records each file's size and sha256, written only once the cache is complete, so it doubles as the mark
# that the cache was finished. Hashing costs about 1 s per GB (the cpu profile's cache, ~20 MB: a few ms).

def _checksum_path(cache_file):
    return Path(cache_file).with_suffix(".sha256.json")


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _cache_files(cache_file):
    """The cache file and its shards (``tokens-<key>_00000_of_00002.arrow`` when tokenized with num_proc)."""
    cache_file = Path(cache_file)
    return sorted(cache_file.parent.glob(f"{cache_file.stem}*.arrow"))


def _cache_problem(file, recorded):
    """Why ``file`` cannot be trusted against its recorded {bytes, sha256} (None when it can)."""
    if recorded is None:
        return ("no checksum recorded (written before checksums were kept, or stopped before its checksum "
                "was written)")
    size = file.stat().st_size
    if size != recorded["bytes"]:
        return f"{size} bytes where {recorded['bytes']} were written (truncated or overwritten)"
    if _sha256(file) != recorded["sha256"]:
        return "its sha256 differs from the checksum recorded when it was written (damaged)"
    return None


def _read_checksums(sidecar):
    try:
        return json.loads(sidecar.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):  # missing or unreadable: nothing is vouched for
        return {}


def verify_token_cache(cache_file):
    """Check every file of the token cache ``cache_file`` against its recorded checksum; a file that fails is named
    in a notice and the cache removed, so that tokenize_corpus rebuilds it instead of training on it."""
    sidecar, files = _checksum_path(cache_file), _cache_files(cache_file)
    recorded = _read_checksums(sidecar)
    problems = [(file, _cache_problem(file, recorded.get(file.name))) for file in files]
    gone = sorted(set(recorded) - {file.name for file in files})  # a shard deleted: the rest no longer add up
    problems += [(Path(cache_file).with_name(name), "recorded but missing") for name in gone if files]
    failed = next(((file, problem) for file, problem in problems if problem is not None), None)
    if files and failed is None:
        return
    if failed is not None:
        print(f"token cache {failed[0]}: {failed[1]}; rebuilding it")
    for stale in files:
        stale.unlink()
    sidecar.unlink(missing_ok=True)  # no cache left: its checksums would vouch for the next one


def record_token_cache(cache_file, files):
    """Record the size and sha256 of the cache's ``files`` (those map wrote or reused) not yet recorded, atomically
    (temp file + rename): a cache whose checksum is missing is rebuilt, never trusted."""
    sidecar = _checksum_path(cache_file)
    recorded = _read_checksums(sidecar)
    files = [f for f in files if f.parent == sidecar.parent and f.name not in recorded]
    if not files:
        return
    recorded.update({f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)} for f in files})
    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"files": recorded}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, sidecar)


def sequence_lengths(dataset):
    """The "length" column as a numpy array (computed from input_ids when absent)."""
    if "length" in dataset.column_names:
        return np.asarray(dataset.with_format("numpy")["length"], dtype=np.int64)
    return np.array([len(ids) for ids in dataset["input_ids"]], dtype=np.int64)


def token_counts(dataset, vocab_size, batch_size=10_000, progress=True):
    """Occurrences of each token id in the dataset's input_ids (specials included), streamed through Arrow."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    batches = dataset.select_columns(["input_ids"]).with_format("arrow").iter(batch_size=batch_size)
    for table in tqdm(batches, total=math.ceil(len(dataset) / batch_size), desc="token counts", disable=not progress):
        ids = table.column("input_ids").combine_chunks().flatten().to_numpy()
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
    return counts


def mlm_token_probs(counts, smoothing=0.7, special_ids=()):
    """Relative probability of each token id being chosen as a masking target: max(count, 1) ** -smoothing,
    0 for special tokens (so they are never targets). smoothing=0 gives uniform masking."""
    probs = np.maximum(np.asarray(counts, dtype=np.float64), 1.0) ** -smoothing
    probs[list(special_ids)] = 0.0
    return torch.tensor(probs, dtype=torch.float32)


def special_token_ids(tokenizer):
    """Ids of the tokenizer's special tokens ([PAD], [CLS], [SEP], [MASK], [UNK])."""
    return sorted(set(tokenizer.all_special_ids))


def mask_tokens(input_ids, attention_mask, token_probs, mask_token_id, special_ids=(), mlm_mask_prop=0.15,
                word_mask=0.8, word_keep=0.1, word_rand=0.1, generator=None):
    """Dynamic masking of a padded batch (CPU tensors). Returns (masked_input_ids, labels).

    ceil(mlm_mask_prop * real tokens) targets are drawn without replacement over the whole batch with
    probability proportional to token_probs[id] (a vocabulary-size tensor, see mlm_token_probs); padding and
    special_ids are never drawn. Each target becomes [MASK] (word_mask), stays (word_keep) or becomes a random
    non-special token (word_rand). labels hold the original id at targets and -100 elsewhere.
    """
    if abs(word_mask + word_keep + word_rand - 1) > 1e-6:
        raise ValueError(f"word_mask + word_keep + word_rand must be 1, got {word_mask} + {word_keep} + {word_rand}")
    token_probs = token_probs.clone()
    token_probs[list(special_ids)] = 0.0
    weights = token_probs[input_ids] * attention_mask.to(token_probs.dtype)
    weights = weights.flatten()
    n_candidates = int((weights > 0).sum())
    n_targets = min(math.ceil(mlm_mask_prop * int(attention_mask.sum())), n_candidates)
    labels = torch.full_like(input_ids, -100)
    if n_targets == 0:
        return input_ids.clone(), labels
    targets = torch.zeros(weights.numel(), dtype=torch.bool)
    targets[torch.multinomial(weights, n_targets, replacement=False, generator=generator)] = True
    targets = targets.view_as(input_ids)
    labels[targets] = input_ids[targets]

    originals = input_ids[targets]
    action = torch.multinomial(torch.tensor([word_mask, word_keep, word_rand]), n_targets, replacement=True,
                               generator=generator)
    replaceable = (token_probs > 0).nonzero().squeeze(1)  # random tokens are drawn among non-special ids
    random_ids = replaceable[torch.randint(len(replaceable), (n_targets,), generator=generator)]
    new_ids = torch.where(action == 0, torch.full_like(originals, mask_token_id),
                          torch.where(action == 1, originals, random_ids))
    masked = input_ids.clone()
    masked[targets] = new_ids
    return masked, labels


def collate(rows, pad_token_id=0):
    """Pad a list of {"input_ids": [...]} rows to their longest: dict(input_ids, attention_mask) int64."""
    longest = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids = torch.as_tensor(np.asarray(row["input_ids"], dtype=np.int64))
        input_ids[i, :len(ids)] = ids
        attention_mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def padding_share(batch):
    """Fraction of the batch's positions that are padding."""
    mask = batch["attention_mask"]
    return 1.0 - float(mask.sum()) / mask.numel()


def length_grouped_batches(lengths, batch_size, seed, group_size=100):
    """Index batches of similar lengths, a pure function of (lengths, batch_size, seed): shuffle, cut into groups
    of group_size batches, sort each group by length, cut into batches, shuffle the batches. The last partial
    batch is dropped. Dynamic padding then pads each batch only to its own longest sequence."""
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    group = batch_size * group_size
    batches = []
    for start in range(0, len(order), group):
        members = order[start:start + group]
        members = members[np.argsort(-lengths[members], kind="stable")]
        batches += [members[i:i + batch_size].tolist() for i in range(0, len(members) - batch_size + 1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
