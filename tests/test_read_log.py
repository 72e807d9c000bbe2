"""lib.training.read_log and the resume that rewrites the logs from it: a kill -9 mid-write leaves a torn last
line, which must not block the rerun; damage anywhere else is an error naming the file and the line."""
import json

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from lib import checkpoints, data, models, training
from lib.config import DistillParams, make_params

RECORDS = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25}]


def _write(path, tail):
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + tail)


def test_a_torn_last_line_is_dropped_with_a_notice_naming_the_file(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    _write(path, '{"step": 3, "lo')  # the process died inside its write
    assert training.read_log(path) == RECORDS
    out = capsys.readouterr().out
    assert str(path) in out and "line 3" in out and "torn" in out
    _write(path, json.dumps({"step": 3, "loss": 2.0}))  # a whole last record without its newline is kept
    assert [r["step"] for r in training.read_log(path)] == [1, 2, 3]
    assert capsys.readouterr().out == ""


def test_a_damaged_line_before_the_last_is_an_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "heldout.jsonl"
    lines = [json.dumps(r) for r in RECORDS]
    path.write_text("\n".join([lines[0], lines[1][:9], json.dumps({"step": 3, "loss": 2.0})]) + "\n")
    with pytest.raises(ValueError) as err:
        training.read_log(path)
    assert str(path) in str(err.value) and "line 2" in str(err.value)


def _tiny():
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                                    + [f"w{i}" for i in range(60)])})
    torch.manual_seed(0)
    teacher = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)).eval()
    rng = np.random.default_rng(0)
    docs = [" ".join(f"w{n}" for n in rng.integers(0, 60, size=rng.integers(8, 30))) for _ in range(40)]
    return teacher, tokenizer, data.tokenize_corpus(docs, tokenizer, max_length=16, min_length=6)


def test_a_run_killed_mid_write_resumes(tmp_path, capsys):
    torch.set_num_threads(1)
    teacher, tokenizer, dataset = _tiny()
    params = make_params(DistillParams, dict(corpus=[{"id": "synthetic"}], max_length=16, min_length=6, batch_size=4,
                                             gradient_accumulation_steps=1, max_steps=6, checkpoint_every=2,
                                             log_every=1, eval_every=2, precision="fp32", seed=7))
    evaluate = lambda student: {"probe": 1.0}  # noqa: E731 (the held-out measures themselves do not matter here)

    def interrupt(record):
        if record["step"] == 5:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.distill(teacher, models.build_student(teacher), dataset, params, run, tokenizer, progress=False,
                         on_log=interrupt, evaluate=evaluate)
    assert checkpoints.load_state(checkpoints.find_checkpoint(run))["step"] == 5  # saved on the interrupt
    for name in ("log.jsonl", "heldout.jsonl"):  # kill -9 inside the next write of each
        with open(run / name, "a") as f:
            f.write('{"step": 6, "tok')
    summary = training.distill(teacher, models.build_student(teacher), dataset, params, run, tokenizer,
                               progress=False, evaluate=evaluate)
    assert summary["resumed_from"] == 5 and summary["steps"] == 6
    assert [r["step"] for r in training.read_log(run / "log.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in training.read_log(run / "heldout.jsonl")] == [0, 2, 4, 6]
    out = capsys.readouterr().out
    assert str(run / "log.jsonl") in out and str(run / "heldout.jsonl") in out
