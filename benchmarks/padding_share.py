"""Padding share of distillation batches with and without length grouping, on a real corpus.

    python benchmarks/padding_share.py                                  # IMDb train from ../shared/data/hub
    python benchmarks/padding_share.py --mirror /path/to/hub --max-documents 5000 --batch-size 32

Prints the share of padded positions over all batches (the compute a batch spends on nothing) for random
batches and for lib.data.length_grouped_batches. Target: under 10% with grouping on IMDb text.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoTokenizer  # noqa: E402

from lib import REPO_ROOT, data, hub  # noqa: E402


def padding_share(lengths, batches):
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", default=str(REPO_ROOT.parent / "shared" / "data" / "hub"))
    parser.add_argument("--corpus", default="stanfordnlp/imdb")
    parser.add_argument("--tokenizer", default="google-bert/bert-base-uncased")
    parser.add_argument("--max-documents", type=int, default=5000)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    tokenizer = hub.from_pretrained(AutoTokenizer, args.tokenizer, args.mirror)
    sources = [{"id": args.corpus, "split": "train", "column": "text", "max_documents": args.max_documents}]
    sequences = data.tokenize_corpus(data.read_corpus(sources, args.mirror), tokenizer, args.max_length, min_length=12)
    lengths = data.sequence_lengths(sequences)
    grouped = data.length_grouped_batches(lengths, args.batch_size, seed=0)
    import random
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    shuffled = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    print(f"{args.corpus}: {len(lengths):,} sequences of <= {args.max_length} tokens, batch {args.batch_size}")
    print(f"padding share, random batches:         {padding_share(lengths, shuffled):6.1%}")
    print(f"padding share, length-grouped batches: {padding_share(lengths, grouped):6.1%}")


if __name__ == "__main__":
    main()
