"""lib.data: corpus reading, chunked tokenization on disk, token counts, dynamic masking, length grouping."""
import json
import math
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from transformers import BertTokenizer

from lib import data

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
PAD, UNK, CLS, SEP, MASK = range(5)


def tiny_tokenizer(n_words=200):
    return BertTokenizer(vocab={t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(n_words)])})


def words(*numbers):
    return " ".join(f"w{n}" for n in numbers)


def test_read_corpus_text_file_and_dataset_dir(tmp_path):
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("w1 w2 w3\n\nw4 w5\nw6\n")
    texts = data.read_corpus([{"path": str(text_file)}])
    assert texts.column_names == ["text"] and texts["text"][:] == ["w1 w2 w3", "", "w4 w5", "w6"]
    json_dir = tmp_path / "json_corpus"
    json_dir.mkdir()
    (json_dir / "train.jsonl").write_text("".join(json.dumps({"content": f"w{i} w{i + 1}", "id": i}) + "\n" for i in range(5)))
    both = data.read_corpus([{"id": str(json_dir), "split": "train", "column": "content", "max_documents": 3},
                             {"path": str(text_file)}])
    assert both.column_names == ["text"] and len(both) == 3 + 4 and both[0]["text"] == "w0 w1"
    with pytest.raises(FileNotFoundError):
        data.read_corpus([{"path": str(tmp_path / "missing.txt")}])


def test_read_corpus_turns_html_line_breaks_into_spaces(tmp_path):
    text_file = tmp_path / "reviews.txt"
    text_file.write_text("a fine film.<br /><br />the end<BR>really<br/>\n")
    assert data.read_corpus([{"path": str(text_file)}])["text"] == ["a fine film.  the end really "]


def test_tokenize_chunks_and_filters(tmp_path):
    tokenizer = tiny_tokenizer()
    docs = [words(*range(25)),  # 25 tokens -> 8 + 8 + 8 + 1 with max_length 10; the 1-token chunk (3 with CLS/SEP) dropped
            words(7, 8),        # 4 tokens with CLS/SEP: kept (min_length 4)
            words(9),           # 3: dropped
            "zz yy xx w1"]      # 3 of 4 tokens unknown: dropped
    seqs = data.tokenize_corpus(docs, tokenizer, max_length=10, min_length=4)
    ids = [list(map(int, s)) for s in seqs["input_ids"]]
    assert [len(s) for s in ids] == [10, 10, 10, 4] and list(seqs["length"]) == [10, 10, 10, 4]
    assert all(s[0] == CLS and s[-1] == SEP for s in ids)
    stream = [t for s in ids[:3] for t in s[1:-1]]
    assert stream == tokenizer(words(*range(24)), add_special_tokens=False)["input_ids"]
    assert ids[3] == [CLS, 5 + 7, 5 + 8, SEP]


def test_tokenize_cached_on_disk(tmp_path):
    tokenizer = tiny_tokenizer()
    texts = datasets.Dataset.from_dict({"text": [words(*range(i, i + 30)) for i in range(20)]})
    first = data.tokenize_corpus(texts, tokenizer, max_length=16, min_length=4, cache_dir=tmp_path / "cache")
    files = [f["filename"] for f in first.cache_files]
    assert files and all(str(tmp_path / "cache") in f for f in files)  # memory-mapped Arrow on disk
    mtime = (tmp_path / "cache").joinpath(files[0].split("/")[-1]).stat().st_mtime_ns
    second = data.tokenize_corpus(texts, tokenizer, max_length=16, min_length=4, cache_dir=tmp_path / "cache")
    assert [f["filename"] for f in second.cache_files] == files and second["input_ids"][:] == first["input_ids"][:]
    assert (tmp_path / "cache").joinpath(files[0].split("/")[-1]).stat().st_mtime_ns == mtime  # reused, not rewritten
    other = data.tokenize_corpus(texts, tokenizer, max_length=12, min_length=4, cache_dir=tmp_path / "cache")
    assert [f["filename"] for f in other.cache_files] != files  # other lengths, other file


def test_token_counts_and_probs():
    tokenizer = tiny_tokenizer()
    rng = np.random.default_rng(0)
    docs = [words(*rng.zipf(1.5, size=rng.integers(5, 40)).clip(max=199)) for _ in range(50)]
    seqs = data.tokenize_corpus(docs, tokenizer, max_length=16, min_length=4)
    counts = data.token_counts(seqs, len(tokenizer), batch_size=7, progress=False)
    expected = Counter(int(t) for s in seqs["input_ids"] for t in s)
    assert counts.sum() == sum(expected.values()) and all(counts[t] == n for t, n in expected.items())
    probs = data.mlm_token_probs(counts, 0.7, data.special_token_ids(tokenizer))
    assert torch.all(probs[:5] == 0)
    unseen = int(np.flatnonzero(counts == 0)[-1])
    assert probs[unseen] == pytest.approx(1.0)  # max(count, 1)
    frequent = int(np.argmax(counts[5:])) + 5
    assert probs[frequent] == pytest.approx(counts[frequent] ** -0.7, rel=1e-6)


def padded_batch(n_seqs=64, max_len=128, seed=0, n_words=200):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, max_len + 1, (n_seqs,), generator=g)
    input_ids = torch.randint(5, 5 + n_words, (n_seqs, max_len), generator=g)
    attention_mask = (torch.arange(max_len) < lengths[:, None]).long()
    input_ids[:, 0] = CLS
    input_ids[torch.arange(n_seqs), lengths - 1] = SEP
    input_ids[attention_mask == 0] = PAD
    return input_ids, attention_mask


def test_mask_split_80_10_10_and_specials_never_masked():
    input_ids, attention_mask = padded_batch()
    probs = data.mlm_token_probs(np.ones(205), 0.0, range(5))
    g = torch.Generator().manual_seed(0)
    n_targets = n_mask = n_same = n_random = 0
    for _ in range(10):
        masked, labels = data.mask_tokens(input_ids, attention_mask, probs, MASK, range(5), generator=g)
        targets = labels != -100
        assert targets.sum() == math.ceil(0.15 * attention_mask.sum())  # exactly 15% of real tokens
        assert torch.equal(labels[targets], input_ids[targets])
        assert not targets[(attention_mask == 0) | (input_ids < 5)].any()  # never padding, CLS or SEP
        assert torch.equal(masked[~targets], input_ids[~targets])
        new = masked[targets]
        n_targets += int(targets.sum())
        n_mask += int((new == MASK).sum())
        n_same += int((new == input_ids[targets]).sum())
        n_random += int(((new != MASK) & (new != input_ids[targets])).sum())
        assert (new[new != MASK] >= 5).all()  # random replacements are never special tokens
    sigma = lambda p: math.sqrt(p * (1 - p) / n_targets)
    assert abs(n_mask / n_targets - 0.8) < 4 * sigma(0.8)
    keep = 0.1 + 0.1 / 200  # a random replacement equal to the original also reads as kept
    assert abs(n_same / n_targets - keep) < 4 * sigma(keep)
    assert abs(n_random / n_targets - (0.1 - 0.1 / 200)) < 4 * sigma(0.1)


def test_mask_frequency_smoothing():
    """Targets are drawn without replacement with weight max(count, 1) ** -0.7: inclusion probabilities follow
    pi = 1 - exp(-w * tau) with sum(pi) = number of targets (successive-sampling approximation)."""
    counts = np.zeros(9)
    counts[5:9] = [1, 100, 10_000, 10_000]
    probs = data.mlm_token_probs(counts, 0.7, range(5))
    per_type, repeats = 1500, 20
    input_ids = torch.tensor([5, 6, 7, 8] * per_type).view(60, 100)
    attention_mask = torch.ones_like(input_ids)
    g = torch.Generator().manual_seed(1)
    chosen = Counter()
    for _ in range(repeats):
        _, labels = data.mask_tokens(input_ids, attention_mask, probs, MASK, range(5), generator=g)
        chosen.update(input_ids[labels != -100].tolist())
    w = probs[[5, 6, 7]].double().numpy()
    n = math.ceil(0.15 * input_ids.numel())
    tau = brentq(lambda x: per_type * (1 - np.exp(-w * x)).sum() + per_type * (1 - np.exp(-w[2] * x)) - n, 0, 1e12)
    expected = 1 - np.exp(-w * tau)
    trials = per_type * repeats
    for token, pi in zip((5, 6, 7), expected):
        rate = chosen[token] / trials
        assert abs(rate - pi) < 4 * math.sqrt(pi * (1 - pi) / trials) + 0.08 * pi, (token, rate, pi)
    assert chosen[5] > 10 * chosen[6] > 10 * chosen[7]  # rarer tokens are masked far more often
    # smoothing 0: uniform, 15% of every token type
    uniform = data.mlm_token_probs(counts, 0.0, range(5))
    _, labels = data.mask_tokens(input_ids, attention_mask, uniform, MASK, range(5), generator=g)
    rates = [(input_ids[labels != -100] == t).sum().item() / per_type for t in (5, 6, 7, 8)]
    assert all(abs(r - 0.15) < 4 * math.sqrt(0.15 * 0.85 / per_type) for r in rates)


def test_mask_is_reproducible_from_generator():
    input_ids, attention_mask = padded_batch(n_seqs=8)
    probs = data.mlm_token_probs(np.arange(205), 0.7, range(5))
    a = data.mask_tokens(input_ids, attention_mask, probs, MASK, range(5), generator=torch.Generator().manual_seed(3))
    b = data.mask_tokens(input_ids, attention_mask, probs, MASK, range(5), generator=torch.Generator().manual_seed(3))
    c = data.mask_tokens(input_ids, attention_mask, probs, MASK, range(5), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_collate_and_padding_share():
    batch = data.collate([{"input_ids": [2, 7, 8, 3]}, {"input_ids": [2, 9, 3]}, {"input_ids": [2, 3]}], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[2, 7, 8, 3], [2, 9, 3, 0], [2, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert data.padding_share(batch) == pytest.approx(3 / 12)


def test_length_grouped_batches():
    lengths = np.random.default_rng(0).integers(12, 129, size=2003)
    batches = data.length_grouped_batches(lengths, batch_size=8, seed=5)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 2000 and all(len(b) == 8 for b in batches)  # only the last partial batch dropped
    assert batches == data.length_grouped_batches(lengths, batch_size=8, seed=5)
    assert batches != data.length_grouped_batches(lengths, batch_size=8, seed=6)
    share = lambda bs: np.mean([1 - lengths[b].mean() / lengths[b].max() for b in bs])
    random_batches = np.random.default_rng(1).permutation(2000).reshape(-1, 8)
    assert share(batches) < 0.05 < 0.2 < share(random_batches)  # grouping removes most of the padding


def _cached(texts, cache):
    return data.tokenize_corpus(texts, tiny_tokenizer(), max_length=16, min_length=4, cache_dir=cache)


def test_a_token_cache_with_flipped_bits_is_named_and_rebuilt(tmp_path, capsys):
    texts = datasets.Dataset.from_dict({"text": [words(*range(i, i + 30)) for i in range(20)]})
    fresh = _cached(texts, tmp_path / "cache")["input_ids"][:]
    cache = next((tmp_path / "cache").glob("tokens-*.arrow"))
    assert list((tmp_path / "cache").glob("tokens-*.sha256.json"))  # the checksum, written once the cache was whole
    raw = bytearray(cache.read_bytes())
    at = raw.find(np.asarray(fresh[0], dtype=np.uint16).tobytes())  # the first sequence's token ids
    assert at > 0
    raw[at + 4] ^= 0x08  # its third token: another word
    cache.write_bytes(bytes(raw))
    capsys.readouterr()
    again = _cached(texts, tmp_path / "cache")
    assert again["input_ids"][:] == fresh  # rebuilt, not trained on
    out = capsys.readouterr().out
    assert str(cache) in out and "checksum" in out and "rebuilding" in out
    assert _cached(texts, tmp_path / "cache")["input_ids"][:] == fresh and capsys.readouterr().out == ""


def test_a_truncated_token_cache_is_named_and_rebuilt(tmp_path, capsys):
    texts = datasets.Dataset.from_dict({"text": [words(*range(i, i + 30)) for i in range(20)]})
    fresh = _cached(texts, tmp_path / "cache")["input_ids"][:]
    cache = next((tmp_path / "cache").glob("tokens-*.arrow"))
    size = cache.stat().st_size
    with open(cache, "r+b") as f:
        f.truncate(size // 2)
    assert cache.stat().st_size == size // 2
    capsys.readouterr()
    assert _cached(texts, tmp_path / "cache")["input_ids"][:] == fresh
    out = capsys.readouterr().out
    assert str(cache) in out and "rebuilding" in out
    assert cache.stat().st_size == size
    # a cache without its checksum (written before checksums existed, or cut off before it) is not trusted either
    next((tmp_path / "cache").glob("tokens-*.sha256.json")).unlink()
    assert _cached(texts, tmp_path / "cache")["input_ids"][:] == fresh
    assert "no checksum" in capsys.readouterr().out
    cache.unlink()  # deleted by hand, its checksums left behind: they must not vouch for (or block) the next one
    assert _cached(texts, tmp_path / "cache")["input_ids"][:] == fresh
    assert _cached(texts, tmp_path / "cache")["input_ids"][:] == fresh and capsys.readouterr().out == ""
