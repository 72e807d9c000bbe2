"""lib.latency and lib.quantize mechanics: sizes, the timer protocol (warm-up first, repeats, interleaving,
tokenizer in or out), sweeps, quantization and the stage functions. No assertion depends on how fast this machine is: timing logic is
checked against a fake clock that only stub models advance."""
import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (AutoModel, AutoModelForSequenceClassification, BatchEncoding, BertConfig,
                          DistilBertConfig)

from lib import REPO_ROOT, latency, models, paper, quantize
from lib.models import count_parameters

MIRROR = Path(os.environ.get("DISTILBERT_MIRROR") or REPO_ROOT.parent / "shared" / "data" / "hub")


def needs_mirror(test):
    skip = pytest.mark.skipif(not (MIRROR / "google-bert" / "bert-base-uncased").is_dir(),
                              reason=f"offline mirror {MIRROR} absent")
    return pytest.mark.mirror(skip(test))


def tiny_bert(classifier=False):
    config = BertConfig(vocab_size=1200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return (AutoModelForSequenceClassification if classifier else AutoModel).from_config(config).eval()


def tiny_distilbert():
    config = DistilBertConfig(vocab_size=1200, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64)
    return AutoModel.from_config(config).eval()


class Clock:
    """Fake time: only the stubs below move it, so timings are exact and machine-independent."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    return clock


class StubModel(torch.nn.Module):
    """Records every call as (name, first input id) and advances the clock by ``cost`` (``costs`` for the first
    calls, if given)."""

    def __init__(self, name, clock, log, cost=1.0, costs=()):
        super().__init__()
        self.name, self.clock, self.log, self.cost, self.costs = name, clock, log, cost, list(costs)
        self.threads_seen = []
        self.config = types.SimpleNamespace(vocab_size=1200, max_position_embeddings=64)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.clock.t += self.costs[len(self.log_of_self())] if len(self.log_of_self()) < len(self.costs) else self.cost
        self.log.append((self.name, int(input_ids[0, 0]), tuple(input_ids.shape)))
        self.threads_seen.append(torch.get_num_threads())
        predicted = input_ids[:, 0] % 2
        return types.SimpleNamespace(logits=torch.stack([predicted == 0, predicted == 1], -1).float())

    def log_of_self(self):
        return [entry for entry in self.log if entry[0] == self.name]


class StubTokenizer:
    """Encodes a text (or pair) as a row starting with its index in TEXTS; costs ``cost`` on the clock."""

    def __init__(self, clock, cost=0.0):
        self.clock, self.cost, self.calls = clock, cost, 0

    def __call__(self, first, second=None, **kwargs):
        self.clock.t += self.cost
        self.calls += 1
        ids = torch.tensor([[TEXTS.index(t) if t in TEXTS else len(t), 7, 8] for t in first])
        return BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})


TEXTS = ["a", "bb", "ccc", "dddd", "eeeee"]


# ---------------------------------------------------------------------------------------------- counts and sizes

@needs_mirror
def test_parameter_counts_from_mirror_configs():
    teacher = latency.build_from_config("google-bert/bert-base-uncased", mirror=str(MIRROR))
    student = latency.build_from_config("distilbert/distilbert-base-uncased", mirror=str(MIRROR))
    assert 109e6 <= count_parameters(teacher) <= 110e6
    assert 66e6 <= count_parameters(student) <= 67e6
    assert not teacher.training


@needs_mirror
def test_load_for_timing_falls_back_to_random_weights_when_mirror_has_none():
    model, tokenizer, pretrained = latency.load_for_timing("distilbert/distilbert-base-uncased", str(MIRROR))
    assert pretrained is False
    assert type(model).__name__ == "DistilBertModel"
    assert tokenizer("hello world")["input_ids"][0] == tokenizer.cls_token_id


def test_build_from_config_rejects_unknown_task():
    with pytest.raises(ValueError, match="task"):
        latency.build_from_config("google-bert/bert-base-uncased", task="token-classification")


def test_has_weights(tmp_path):
    model = tiny_bert()
    model.config.save_pretrained(tmp_path)
    assert not models.has_weights(tmp_path)
    model.save_pretrained(tmp_path)
    assert models.has_weights(tmp_path)


def test_size_on_disk_model_and_directory(tmp_path):
    model = tiny_bert()
    fp32_mb = count_parameters(model) * 4 / 1e6
    size = latency.size_on_disk_mb(model)
    assert fp32_mb <= size <= fp32_mb * 1.05 + 0.05  # weights plus a small safetensors header
    model.save_pretrained(tmp_path)
    (tmp_path / "notes.txt").write_text("x" * 100_000)  # not a weight file: ignored
    assert latency.size_on_disk_mb(tmp_path) == pytest.approx(size, rel=1e-3)
    with pytest.raises(FileNotFoundError):
        latency.size_on_disk_mb(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no weight files"):
        latency.size_on_disk_mb(empty)


def test_torch_int8_keeps_parameter_count_and_shrinks_size():
    model = tiny_distilbert()
    quantized = quantize.quantize_dynamic_int8(model, backend="torch")
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
    assert any(type(m) is torch.nn.Linear for m in model.modules())  # the original is left untouched
    assert count_parameters(quantized) == count_parameters(model)
    assert latency.size_on_disk_mb(quantized) < latency.size_on_disk_mb(model)
    x = latency.synthetic_batch(model, 2, 10)
    with torch.inference_mode():
        a, b = model(**x).last_hidden_state, quantized(**x).last_hidden_state
    assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.99


def test_unknown_quantization_backend():
    with pytest.raises(ValueError, match="backend"):
        quantize.quantize_dynamic_int8(tiny_bert(), backend="tensorrt")


def test_torchao_int8():
    pytest.importorskip("torchao")
    model = tiny_distilbert()
    quantized = quantize.quantize_dynamic_int8(model, backend="torchao")
    assert quantize.dtype_name(quantized) == "int8 (torchao)"
    x = latency.synthetic_batch(model, 1, 12)
    with torch.inference_mode():
        a, b = model(**x).last_hidden_state, quantized(**x).last_hidden_state
    assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.99


def test_onnx_export_matches_torch_and_int8_is_smaller(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = tiny_bert(classifier=True)
    fp32 = quantize.to_onnx(model, tmp_path / "fp32" / "model.onnx")
    int8 = quantize.quantize_dynamic_int8(model, path=tmp_path / "int8" / "model.onnx")
    assert fp32.input_names == ["input_ids", "attention_mask", "token_type_ids"] and fp32.output_name == "logits"
    # dynamic batch and length, padding in the mask, segment ids: the export must not have specialised on them
    x = latency.synthetic_batch(model, 3, 17)
    x["attention_mask"][0, -5:] = 0
    x["token_type_ids"] = (torch.arange(17) >= 9).long().expand(3, 17)
    with torch.inference_mode():
        expected = model(**x).logits
    torch.testing.assert_close(fp32(**x).logits, expected, atol=1e-4, rtol=1e-4)
    one = {k: v[:1, :5] for k, v in x.items()}
    with torch.inference_mode():
        torch.testing.assert_close(fp32(**one).logits, model(**one).logits, atol=1e-4, rtol=1e-4)
    assert int8(**x).logits.shape == (3, 2)
    assert (tmp_path / "int8" / "model.onnx").is_file() and not (tmp_path / "int8" / "model-fp32.onnx").exists()
    assert latency.size_on_disk_mb(int8) < latency.size_on_disk_mb(fp32)
    assert count_parameters(int8) == count_parameters(model)


# ---------------------------------------------------------------------------------------------- timer protocol

def time_one(model, tokenizer, texts, **kwargs):
    """One model's timing summary, as compare_interleaved gives it."""
    return latency.compare_interleaved({"m": (model, tokenizer)}, texts, progress=False, **kwargs)["models"]["m"]


def test_warmup_calls_come_first_and_are_not_timed(clock):
    log = []
    model = StubModel("m", clock, log, cost=1.0, costs=[100.0] * 3)  # the 3 first (cold) calls are slow
    out = time_one(model, StubTokenizer(clock), TEXTS, warmup=3, repeats=2)
    assert len(log) == 3 + 2 * len(TEXTS)
    assert out["pass_s"] == [5.0, 5.0]  # only the 1-second calls were timed
    assert out["total_s"] == 5.0
    assert out["per_example_ms_median"] == pytest.approx(1000.0)
    assert out["n_examples"] == 5 and out["repeats"] == 2


def test_no_warmup_times_the_cold_calls(clock):
    model = StubModel("m", clock, [], cost=1.0, costs=[100.0] * 3)
    out = time_one(model, StubTokenizer(clock), TEXTS, warmup=0, repeats=2)
    assert out["pass_s"] == [302.0, 5.0]


def test_batches_and_per_example_figures(clock):
    log = []
    out = time_one(StubModel("m", clock, log, cost=2.0), StubTokenizer(clock), TEXTS, batch_size=2, warmup=0,
                   repeats=1)
    assert [entry[2][0] for entry in log] == [2, 2, 1]  # 5 texts in batches of 2
    assert out["n_batches"] == 3 and out["total_s"] == 6.0
    assert out["per_example_ms_mean"] == pytest.approx(6.0 / 5 * 1e3)
    assert out["per_example_ms_median"] == pytest.approx(2.0 / 2 * 1e3)


def test_interleaving_pass_by_pass_rotates_who_goes_first(clock):
    log, tok = [], StubTokenizer(clock)
    models = {"A": (StubModel("A", clock, log), tok), "B": (StubModel("B", clock, log), tok)}
    latency.compare_interleaved(models, TEXTS[:3], warmup=1, repeats=2, interleave="pass", progress=False)
    order = [(name, i) for name, i, _ in log]
    assert order == [("A", 0), ("B", 0),                          # warm-up, interleaved
                     ("A", 0), ("A", 1), ("A", 2), ("B", 0), ("B", 1), ("B", 2),
                     ("B", 0), ("B", 1), ("B", 2), ("A", 0), ("A", 1), ("A", 2)]


def test_interleaving_example_by_example(clock):
    log, tok = [], StubTokenizer(clock)
    models = {"A": (StubModel("A", clock, log), tok), "B": (StubModel("B", clock, log), tok)}
    latency.compare_interleaved(models, TEXTS[:2], warmup=0, repeats=2, interleave="example", progress=False)
    assert [(name, i) for name, i, _ in log] == [("A", 0), ("B", 0), ("A", 1), ("B", 1),
                                                 ("B", 0), ("A", 0), ("B", 1), ("A", 1)]


def test_ratio_and_tokenizer_inside_or_outside_the_timing(clock):
    log = []
    models = {"teacher": (StubModel("T", clock, log, cost=2.0), StubTokenizer(clock, cost=0.5)),
              "student": (StubModel("S", clock, log, cost=1.0), StubTokenizer(clock, cost=0.5))}
    excluded = latency.compare_interleaved(models, TEXTS, warmup=2, repeats=3, progress=False)
    assert excluded["models"]["teacher"]["total_s"] == 10.0
    assert excluded["ratio"] == {"teacher": 1.0, "student": 0.5}
    assert excluded["ratio_per_pass"]["student"] == [0.5, 0.5, 0.5]
    assert excluded["reference"] == "teacher" and excluded["paper_ratio"] == pytest.approx(0.614, abs=1e-3)
    included = latency.compare_interleaved(models, TEXTS, warmup=2, repeats=3, include_tokenizer=True,
                                           progress=False)
    assert included["models"]["teacher"]["total_s"] == pytest.approx(5 * 2.5)
    assert included["ratio"]["student"] == pytest.approx(1.5 / 2.5)
    assert included["include_tokenizer"] is True


def test_reference_label_chooses_the_denominator(clock):
    tok = StubTokenizer(clock)
    models = {"student": (StubModel("S", clock, [], cost=1.0), tok),
              "teacher": (StubModel("T", clock, [], cost=4.0), tok)}
    out = latency.compare_interleaved(models, TEXTS, warmup=0, repeats=1, reference="teacher", progress=False)
    assert out["ratio"]["student"] == 0.25
    with pytest.raises(ValueError, match="reference"):
        latency.compare_interleaved(models, TEXTS, reference="elmo", progress=False)


def test_threads_are_set_recorded_and_restored(clock):
    before = torch.get_num_threads()
    model = StubModel("m", clock, [])
    out = latency.compare_interleaved({"m": (model, StubTokenizer(clock))}, TEXTS, warmup=1, repeats=1,
                                      num_threads=1, progress=False)
    assert out["num_threads"] == 1 and set(model.threads_seen) == {1}
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("kwargs, name", [({"warmup": -1}, "warmup"), ({"repeats": 0}, "repeats"),
                                          ({"interleave": "random"}, "interleave"),
                                          ({"num_threads": -2}, "num_threads"), ({"batch_size": 0}, "batch_size")])
def test_bad_timing_parameters_are_named(clock, kwargs, name):
    with pytest.raises(ValueError, match=name):
        latency.compare_interleaved({"m": (StubModel("m", clock, []), StubTokenizer(clock))}, TEXTS,
                                    progress=False, **kwargs)


def test_extrapolation_uses_the_per_example_mean():
    assert latency.extrapolate_total_s({"per_example_ms_mean": 2.0}) == pytest.approx(3.0)
    assert latency.extrapolate_total_s({"per_example_ms_mean": 2.0}, n_total=10) == pytest.approx(0.02)


def test_measured_and_extrapolated_times_are_kept_apart():
    from lib import results
    # rows as stage 5 writes them: 150 of 1,500 pairs timed, a 9 s median pass; one older row without the factor
    row = {"model": "BERT-base", "n_examples": 150, "n_total": 1500, "extrapolation_factor": 10.0, "total_s": 9.0,
           "extrapolated_total_s": 90.0, "total_s_with_tokenizer": 10.0, "extrapolated_total_s_with_tokenizer": 100.0}
    older = {k: v for k, v in row.items() if k != "extrapolation_factor"} | {"model": "student", "total_s": 1.0,
                                                                               "extrapolated_total_s": 10.0}
    record = results.as_record({"name": "latency", "wall_time_s": 1.0, "provenance": {}, "table3": [row, older],
                                "sweep": [], "size_quality": []}, "latency")
    timed = record.timings()
    assert timed["BERT-base"] == {"measured_s": 9.0, "n_examples": 150, "n_total": 1500, "factor": 10.0,
                                  "extrapolated_s": 90.0, "measured_whole_set": False}
    assert timed["student"]["factor"] == 10.0 and timed["student"]["measured_s"] == 1.0
    assert record.timings("_with_tokenizer")["BERT-base"]["measured_s"] == 10.0
    record.table3 = [{**row, "n_examples": 1500, "extrapolation_factor": 1.0, "extrapolated_total_s": 9.0}]
    whole = record.timings()["BERT-base"]
    assert whole["factor"] == 1.0 and whole["extrapolated_s"] is None and whole["measured_whole_set"]
    with pytest.raises(ValueError, match="counts"):
        latency.extrapolation_factor(0, 1500)


def test_end_to_end_on_tiny_real_models():
    """End to end on two tiny real models (no timing asserted): summaries are complete and positive."""
    tok = StubTokenizer(Clock())
    models = {"teacher": (tiny_bert(), tok), "student": (tiny_distilbert(), tok)}
    out = latency.compare_interleaved(models, list(zip(TEXTS, TEXTS)), warmup=1, repeats=2, progress=False)
    assert set(out["models"]) == {"teacher", "student"}
    assert all(r["total_s"] > 0 and len(r["pass_s"]) == 2 for r in out["models"].values())
    assert out["machine"]["device"] == "cpu" and out["ratio"]["teacher"] == 1.0


# ---------------------------------------------------------------------------------------------- sweeps

def test_sweep_inputs_have_exact_shapes_and_table_is_tidy(clock):
    log = []
    models = {"A": StubModel("A", clock, log, cost=0.5), "B": (StubModel("B", clock, log, cost=0.25), None)}
    table = latency.sweep(models, [4, 16], [1, 3], warmup=1, repeats=2, max_batch_tokens=40, progress=False)
    assert {entry[2] for entry in log} == {(1, 4), (1, 16), (3, 4)}  # (3, 16) = 48 tokens skipped
    assert len(table) == 6
    assert set(table.columns) >= {"model", "seq_len", "batch_size", "latency_ms", "sequences_per_s", "tokens_per_s",
                                  "device", "num_threads"}
    row = table[(table.model == "A") & (table.batch_size == 3)].iloc[0]
    assert row.latency_ms == 500.0 and row.sequences_per_s == 6.0 and row.tokens_per_s == 24.0
    b = table[table.model == "B"].latency_ms.tolist()
    assert b == [250.0, 250.0, 250.0]


def test_sweep_real_tiny_models_and_length_limit():
    table = latency.sweep({"teacher": tiny_bert(), "student": tiny_distilbert()}, [8], [2], warmup=1, repeats=2,
                          progress=False)
    assert list(table.model) == ["teacher", "student"] and (table.latency_ms > 0).all()
    assert list(table.dtype) == ["float32", "float32"]
    with pytest.raises(ValueError, match="seq_lengths"):
        latency.sweep({"teacher": tiny_bert()}, [65], [1], progress=False)  # max_position_embeddings is 64


# ---------------------------------------------------------------------------------------------- devices

def test_precision_rules(monkeypatch):
    assert latency.resolve_precision("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="precision"):
        latency.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        latency.resolve_precision("int4", "cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # a T4
    assert latency.resolve_precision("auto", "cuda") == torch.float16
    with pytest.raises(ValueError, match="compute capability >= 8"):
        latency.resolve_precision("bf16", "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # an A100
    assert latency.resolve_precision("auto", "cuda") == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_requested_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="device 'cuda'"):
        latency.prepare(tiny_bert(), device="cuda")
    assert latency.resolve_device("auto").type == "cpu"


# ---------------------------------------------------------------------------------------------- figure data

def test_size_quality_table():
    measured = {"teacher": {"params": 110e6, "latency": 80.0, "glue_score": 79.0},
                "student": {"params": 66e6, "latency": 40.0, "glue_score": 76.5},
                "student-int8": {"params": 66e6, "latency": 12.0, "glue_score": None, "note": "SST-2 only"}}
    table = latency.size_quality_table(measured)
    theirs = table[table.source == "paper"].set_index("model")
    assert theirs.loc["DistilBERT", "relative_latency"] == pytest.approx(410 / 668)
    assert theirs.loc["BERT-base", "glue_score"] == 79.5 and theirs.loc["ELMo", "params_m"] == 180
    ours = table[table.source == "this run"].set_index("model")
    assert ours.loc["student", "relative_latency"] == 0.5 and ours.loc["teacher", "params_m"] == 110
    assert np.isnan(ours.loc["student-int8", "glue_score"])
    with pytest.raises(ValueError, match="reference"):
        latency.size_quality_table(measured, reference="bert")


# ---------------------------------------------------------------------------------------------- data

@needs_mirror
def test_stsb_dev_pairs_and_seeded_subsets():
    texts, labels = latency.dev_examples("stsb", mirror=str(MIRROR))
    assert len(texts) == latency.STSB_DEV_SIZE == len(labels)
    assert isinstance(texts[0], tuple) and len(texts[0]) == 2
    subset, _ = latency.dev_examples("stsb", mirror=str(MIRROR), max_examples=10, seed=1)
    assert len(subset) == 10 and set(subset) <= set(texts)
    assert subset == latency.dev_examples("stsb", mirror=str(MIRROR), max_examples=10, seed=1)[0]
    assert subset != latency.dev_examples("stsb", mirror=str(MIRROR), max_examples=10, seed=2)[0]
    with pytest.raises(ValueError, match="max_examples"):
        latency.dev_examples("stsb", mirror=str(MIRROR), max_examples=0)
    with pytest.raises(ValueError, match="task"):
        latency.dev_examples("squad", mirror=str(MIRROR))


# ---------------------------------------------------------------------------------------------- the stage functions

def test_stage_table3_and_sweep_on_the_smoke_hub():
    from lib import config
    params = config.load_params("latency", profile="smoke", max_examples=6, warmup=1, repeats=1, quantize=True,
                                seq_lengths=[8, 16], batch_sizes=[1, 2], sweep_max_tokens=16,
                                models={"teacher": "smoke/tiny-bert", "student": "smoke/tiny-bert",
                                        "DistilBERT": "smoke/tiny-bert", "absent": "{run_dir}/no-such-model"})
    models = latency.load_models(params)
    assert list(models) == ["teacher", "student", "DistilBERT", "student int8"]  # the absent one is skipped
    assert isinstance(models["student int8"][0], quantize.OrtModel) or "torch.ao" in models["student int8"][2]
    records = latency.table3(params, models, progress=False)
    import json
    json.dumps(records)  # goes into results/<profile>/latency.json
    by_label = {r["model"]: r for r in records}
    assert by_label["teacher"]["ratio"] == 1.0 and by_label["teacher"]["reference"] == "teacher"
    assert by_label["student"]["n_examples"] == 6 and by_label["student"]["n_total"] > 6
    assert by_label["student"]["extrapolated_total_s"] == pytest.approx(
        by_label["student"]["per_example_ms_mean"] * by_label["student"]["n_total"] / 1e3)
    assert by_label["student"]["extrapolation_factor"] == by_label["student"]["n_total"] / 6
    assert by_label["student"]["extrapolated_total_s"] == pytest.approx(
        by_label["student"]["total_s"] * by_label["student"]["extrapolation_factor"])
    assert by_label["student int8"]["parameters"] == by_label["student"]["parameters"]
    assert by_label["student int8"]["size_mb"] < by_label["student"]["size_mb"]
    assert by_label["DistilBERT"]["paper_seconds"] == paper.TABLE3["DistilBERT"]["seconds"]
    assert by_label["teacher"]["paper_seconds"] is None and by_label["student"]["paper_seconds"] is None
    table = latency.sweep_models(params, models, progress=False)
    assert len(table) == 4 * 3  # (1, 8), (1, 16), (2, 8); (2, 16) is above sweep_max_tokens
    assert set(table.precision) == {"fp32"}
    params.precisions = ["fp16"]
    with pytest.raises(ValueError, match="precision"):
        latency.sweep_models(params, models, progress=False)  # half precision is a GPU-only sweep
