"""lib.finetune: data loading, tokenization, SQuAD windows and answers, distillation loss, tiny fine-tunes, sweeps."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from lib import finetune as T
from lib.config import GlueParams, ImdbSquadParams, ParameterError, make_params

WORDS = ["good", "bad", "film", "movie", "plot", "actor", "very", "quite", "is", "was", "where", "what", "answer"]
FILLER = [f"w{i}" for i in range(40)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "the", "a"] + WORDS + FILLER


# --- fixtures: a tiny tokenizer, tiny BERT / DistilBERT models, datasets laid out like the hub ---

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models on 2 shared cores: a second intra-op thread spins against other processes (10-30x slower)
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokenizer(root):
    from transformers import BertTokenizerFast
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    # transformers 5 ignores vocab_file=...: the vocabulary is passed as `vocab`
    return BertTokenizerFast(vocab=str(root / "vocab.txt"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel
    root = tmp_path_factory.mktemp("models")
    tokenizer = _tokenizer(root / "vocab")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))
    distil = DistilBertModel(DistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                              max_position_embeddings=64))
    paths = {}
    for name, model in (("bert", bert), ("distil", distil)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths


def write_hub_dataset(root, configs, label_names=None):
    """configs: {config name: {split: list of row dicts}} -> parquet files + README configs, like the mirror.
    label_names: {config name: class names}, stored as a ClassLabel feature as on the hub."""
    import datasets
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, rows in splits.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            dataset = datasets.Dataset.from_list(rows)
            if name in (label_names or {}):
                dataset = dataset.cast_column("label", datasets.ClassLabel(names=label_names[name]))
            dataset.to_parquet(str(root / name / f"{split}-00000-of-00001.parquet"))
            lines += [f"  - split: {split}", f"    path: {name}/{split}-00000-of-00001.parquet"]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]))
    return str(root)


def sentiment_rows(n, seed):
    """Learnable: label 1 iff the word 'good' occurs (else 'bad' occurs), among random filler words."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = list(rng.choice(FILLER, size=rng.integers(4, 9)))
        label = int(i % 2)
        words.insert(int(rng.integers(0, len(words) + 1)), "good" if label else "bad")
        rows.append({"sentence": " ".join(words), "label": label, "idx": i})
    return rows


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub") / "glue"
    pairs = [{"sentence1": r["sentence"], "sentence2": "the film", "label": r["label"], "idx": r["idx"]}
             for r in sentiment_rows(40, 3)]
    nli = [{"premise": p["sentence1"], "hypothesis": "a plot", "label": i % 3, "idx": i} for i, p in enumerate(pairs)]
    sts = [{**p, "label": float(i % 6)} for i, p in enumerate(pairs)]
    return write_hub_dataset(root, {
        "sst2": {"train": sentiment_rows(240, 1), "validation": sentiment_rows(60, 2)},
        "rte": {"train": pairs[:30], "validation": pairs[30:]},
        "mnli": {"train": nli[:24], "validation_matched": nli[24:32], "validation_mismatched": nli[32:]},
        "stsb": {"train": sts[:30], "validation": sts[30:]},
    }, label_names={"rte": ["entailment", "not_entailment"], "mnli": ["entailment", "neutral", "contradiction"]})


def glue_params(tmp_path, glue_dir, **overrides):
    values = dict(glue_dataset=glue_dir, models={"teacher": "x"}, seeds=[1], learning_rate=2e-3, n_epoch=3.0,
                  batch_size=16, warmup_prop=0.1, max_length=32, precision="fp32",
                  run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    values.update(overrides)
    return make_params(GlueParams, values)


# --- specs, data, hyperparameters ---

def test_task_specs():
    from lib import tasks
    assert not hasattr(T, "TASKS")  # one registry: lib.tasks
    assert set(tasks.TASKS) >= {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "imdb", "squad"}
    assert T._spec("stsb").regression and T._spec("stsb").num_labels == 1
    assert T._spec("mnli").num_labels == 3
    assert T._spec("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert T._spec("qqp").text == ("question1", "question2") and T._spec("qnli").text == ("question", "sentence")
    assert T._spec("imdb").eval_splits == ("test",) and T._spec("imdb").max_length_param == "imdb_max_length"
    with pytest.raises(ParameterError, match="unknown task 'nope'"):
        T._spec("nope")


def test_load_task_keeps_a_fixed_subset_in_order(tmp_path, glue_dir):
    params = glue_params(tmp_path, glue_dir, max_train_samples=10, task_overrides={"sst2": {"max_eval_samples": 7}})
    first, again = T.load_task("sst2", params), T.load_task("sst2", params)
    assert len(first["train"]) == 10 and len(first["validation"]) == 7
    assert first["train"]["idx"] == again["train"]["idx"]            # same subset for every model and seed
    assert first["train"]["idx"] == sorted(first["train"]["idx"])     # original order kept
    assert first["train"]["idx"] != list(range(10))                   # a random draw, not the head
    other = T.load_task("sst2", glue_params(tmp_path, glue_dir, max_train_samples=10, seed=7))
    assert other["train"]["idx"] != first["train"]["idx"]
    assert len(T.load_task("rte", params)["validation"]) == 10        # the override was for sst2 only


def test_task_hparams_overrides_and_errors(tmp_path, glue_dir):
    params = glue_params(tmp_path, glue_dir, task_overrides={"rte": {"learning_rate": 1e-5, "n_epoch": 10}})
    assert T.task_hparams("rte", params)["learning_rate"] == 1e-5 and T.task_hparams("rte", params)["n_epoch"] == 10
    assert T.task_hparams("sst2", params)["learning_rate"] == 2e-3
    with pytest.raises(ParameterError, match="task_overrides.*unknown task 'rtee'"):
        T.task_hparams("rte", glue_params(tmp_path, glue_dir, task_overrides={"rtee": {}}))
    with pytest.raises(ParameterError, match="task_overrides"):
        T.task_hparams("rte", glue_params(tmp_path, glue_dir, task_overrides={"rte": {"lr": 1e-5}}))
    with pytest.raises(ParameterError, match="'squad_dataset'"):
        T.load_task("squad", glue_params(tmp_path, glue_dir))


def test_a_task_missing_from_the_data_names_the_task_the_id_and_the_path(tmp_path, glue_dir):
    with pytest.raises(ParameterError) as err:
        T.load_task("cola", glue_params(tmp_path, glue_dir))  # glue_dir holds sst2, rte, mnli, stsb
    assert str(err.value) == (
        f"parameter 'tasks': task 'cola' cannot be loaded from glue_dataset = {glue_dir!r}: dataset {glue_dir!r} has no "
        f"config 'cola': tried the copy at {glue_dir}, whose configs are: sst2, rte, mnli, stsb. Add 'cola' to that "
        "copy, or do not ask for it.")


def test_head_config_names_the_classes(tmp_path, glue_dir):
    params = glue_params(tmp_path, glue_dir)
    mnli = T.head_config("mnli", T.load_task("mnli", params)["train"])
    assert mnli == {"num_labels": 3, "problem_type": "single_label_classification",
                    "id2label": {0: "entailment", 1: "neutral", 2: "contradiction"},
                    "label2id": {"entailment": 0, "neutral": 1, "contradiction": 2}}
    stsb = T.head_config("stsb", T.load_task("stsb", params)["train"])
    assert stsb == {"num_labels": 1, "problem_type": "regression", "id2label": {0: "score"}, "label2id": {"score": 0}}
    assert "id2label" not in T.head_config("sst2", T.load_task("sst2", params)["train"])  # plain integer labels
    with pytest.raises(ValueError, match="task 'sst2' has 2 classes, but its dataset's label feature names 3"):
        T.head_config("sst2", T.load_task("mnli", params)["train"])


def test_prediction_summary_names_single_class_runs_and_the_majority_rate():
    summary = T._prediction_summary(np.array([1, 1, 1, 1, 1]), np.array([1, 0, 1, 1, 0]), regression=False)
    assert summary == {"n": 5, "predicted_label_counts": {"1": 5}, "single_class": True, "majority_label": 1,
                       "majority_rate": 60.0}
    mixed = T._prediction_summary(np.array([0, 1, 1, 0]), np.array([0, 0, 0, 1]), regression=False)
    assert mixed["single_class"] is False and mixed["majority_label"] == 0 and mixed["majority_rate"] == 75.0
    assert T._prediction_summary(np.array([2.5, 2.5]), np.array([1.0, 4.0]), regression=True)["single_class"] is True
    assert T._prediction_summary(np.array([2.5, 2.4]), np.array([1.0, 4.0]), regression=True)["single_class"] is False


def test_fine_tuning_never_uses_dataparallel(tmp_path, glue_dir, monkeypatch):
    import torch
    from transformers import TrainingArguments
    params = glue_params(tmp_path, glue_dir)
    hp = T.task_hparams("sst2", params)
    args = T._training_args(tmp_path / "w", 1, hp, params)
    assert args.n_gpu == 0 and args.train_batch_size == hp["batch_size"]  # this CPU machine
    # one process that sees 4 GPUs: transformers alone would wrap the model in DataParallel (4 x the batch)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    plain = TrainingArguments(output_dir=str(tmp_path / "w"), use_cpu=False, per_device_train_batch_size=16,
                              report_to=[])
    assert plain.n_gpu == 4 and plain.train_batch_size == 64
    monkeypatch.setattr(T, "precision_flags", lambda precision: ("fp32", {"fp16": False, "bf16": False, "use_cpu": False}))
    with pytest.warns(UserWarning, match="this process sees 4 GPUs: fine-tuning uses one"):
        args = T._training_args(tmp_path / "w", 1, hp, params)
    assert args.n_gpu == 1 and args.train_batch_size == hp["batch_size"]


def test_model_inputs_and_precision(models):
    from transformers import AutoModelForSequenceClassification
    bert = AutoModelForSequenceClassification.from_pretrained(models["bert"], num_labels=2)
    distil = AutoModelForSequenceClassification.from_pretrained(models["distil"], num_labels=2)
    assert T.model_inputs(bert) == ["input_ids", "attention_mask", "token_type_ids"]
    assert T.model_inputs(distil) == ["input_ids", "attention_mask"]
    import torch
    if not torch.cuda.is_available():
        assert T.precision_flags("auto") == ("fp32", {"fp16": False, "bf16": False, "use_cpu": True})
        with pytest.raises(ParameterError, match="precision"):
            T.precision_flags("fp16")


def test_head_tail_truncation_keeps_both_ends(tmp_path):
    tokenizer = _tokenizer(tmp_path)
    text = " ".join(FILLER[:30])
    # budget 20 - 2 specials = 18 tokens: head 18 * 128 // 510 = 4, tail 14
    cut = T._head_tail(tokenizer, text, 20)
    assert cut.split() == FILLER[:4] + FILLER[16:30]
    assert T._head_tail(tokenizer, "w1 w2", 20) == "w1 w2"
    import datasets
    data = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": [text], "label": [1]})})
    head = T.encode_classification(data, "imdb", tokenizer, 20, "head")["test"][0]
    both = T.encode_classification(data, "imdb", tokenizer, 20, "head+tail")["test"][0]
    assert len(head["input_ids"]) == len(both["input_ids"]) == 20
    assert tokenizer.decode(both["input_ids"][1:-1]).split() == FILLER[:4] + FILLER[16:30]
    assert tokenizer.decode(head["input_ids"][1:-1]).split() == FILLER[:18]


def test_soft_loss_hand_computed():
    import torch
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    # T=1: KL([.75,.25] || [.5,.5]) = .75 ln 1.5 + .25 ln .5
    assert T.soft_loss(student, teacher, 1.0).item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-5)
    # T=2: teacher softens to [r, 1-r], r = sqrt(3) / (sqrt(3) + 1); times T^2 = 4
    r = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * (r * math.log(2 * r) + (1 - r) * math.log(2 * (1 - r)))
    assert T.soft_loss(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-5)
    assert T.soft_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert T.soft_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [2.0]]), 2.0, regression=True).item() == 1.0


# --- SQuAD windows and answers ---

SQUAD_CONTEXT = " ".join(FILLER[:30]) + " the answer is good film . " + " ".join(FILLER[30:40])


def squad_example(qid="q1", context=SQUAD_CONTEXT, answer="good film"):
    start = context.index(answer)
    return {"id": qid, "title": "t", "context": context, "question": "what is the answer ?",
            "answers": {"text": [answer], "answer_start": [start]}}


def _batch(rows):
    return {key: [r[key] for r in rows] for key in rows[0]}


def test_squad_training_windows_point_at_the_answer(tmp_path):
    tokenizer = _tokenizer(tmp_path)
    batch = _batch([squad_example()])
    features = T.squad_features(batch, tokenizer, max_length=24, doc_stride=8, training=True)
    assert len(features["input_ids"]) > 3  # the context needs several overlapping windows
    inside = 0
    for ids, start, end in zip(features["input_ids"], features["start_positions"], features["end_positions"]):
        assert len(ids) == 24
        if start == 0:
            assert end == 0
            continue
        inside += 1
        assert tokenizer.decode(ids[start:end + 1]) == "good film"
    assert inside >= 1


def test_squad_postprocess_maps_a_logit_peak_back_across_windows(tmp_path):
    tokenizer = _tokenizer(tmp_path)
    examples = _batch([squad_example("q1"), squad_example("q2", answer="w3")])
    features = T.squad_features(examples, tokenizer, max_length=24, doc_stride=8, training=False)
    windows = [i for i, e in enumerate(features["example_id"]) if e == "q1"]
    n = len(features["input_ids"])
    start, end = np.zeros((n, 24)), np.zeros((n, 24))
    # put the peak in the LAST window of q1 that holds "good film": that window's offsets must be used
    target = None
    for i in windows:
        tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][i])
        if "good" in tokens and "film" in tokens and tokens.index("film") == tokens.index("good") + 1:
            target = (i, tokens.index("good"), tokens.index("film"))
    assert target is not None and target[0] != windows[0]
    i, s, e = target
    start[i, s], end[i, e] = 10.0, 10.0
    # a stronger peak on question tokens (outside the context) must be ignored
    start[windows[0], 1], end[windows[0], 2] = 50.0, 50.0
    # q2: a peak on w3 in its first window
    j = features["example_id"].index("q2")
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][j])
    start[j, tokens.index("w3")], end[j, tokens.index("w3")] = 5.0, 5.0
    answers = T.squad_postprocess(examples, features, start, end, n_best=5, max_answer_length=30)
    assert answers == {"q1": "good film", "q2": "w3"}
    # with max_answer_length 1 the two-token span is not allowed any more (n_best = all: every 1-token span)
    short = T.squad_postprocess(examples, features, start, end, n_best=24, max_answer_length=1)
    assert short["q1"] in ("good", "film")


# --- tiny end-to-end fine-tunes ---

def test_finetune_classification_learns_a_token_rule(tmp_path, glue_dir, models):
    params = glue_params(tmp_path, glue_dir)
    result = T.finetune_classification(models["bert"], "sst2", 1, params, tmp_path / "work")
    assert result["metrics"]["accuracy"] >= 85.0, result["metrics"]  # chance is 50
    assert result["score"] == result["metrics"]["accuracy"]
    assert result["predictions"]["validation"]["n"] == 60
    assert result["train"]["features"] == 240 and result["train"]["steps"] == 3 * 15
    assert result["hparams"]["precision"] == "fp32"
    # the dev split alternates labels: a constant answer would score 50; this model did not answer one class
    assert result["majority_rate"] == 50.0 and result["single_class"] is False
    assert result["predictions"]["validation"]["majority_rate"] == 50.0
    json.dumps(result)  # serialisable as is


def test_length_grouped_batches_still_score_each_prediction_against_its_own_label(tmp_path, glue_dir, models):
    # transformers 5 groups the evaluation batches by length too: without in_dataset_order the predictions came back
    # shuffled against the labels, and a model that had learned the rule scored chance (issue 23's first cpu run)
    params = glue_params(tmp_path, glue_dir, group_by_length=True)
    result = T.finetune_classification(models["bert"], "sst2", 1, params, tmp_path / "work")
    assert result["hparams"]["group_by_length"] is True
    assert result["metrics"]["accuracy"] >= 85.0, result["metrics"]  # chance is 50


def test_task_distillation_bert_teacher_to_distilbert_student_on_pairs(tmp_path, glue_dir, models):
    # the BERT teacher needs token_type_ids, the DistilBERT student takes none: both are fed what they expect
    params = glue_params(tmp_path, glue_dir, task_distill=True, n_epoch=1.0)
    teacher_dir = tmp_path / "teacher-rte"
    teacher = T.finetune_classification(models["bert"], "rte", 1, params, tmp_path / "w1", save_dir=teacher_dir)
    assert (teacher_dir / "config.json").exists() and teacher["teacher_path"] is None
    from transformers import AutoModelForSequenceClassification
    saved = AutoModelForSequenceClassification.from_pretrained(teacher_dir)  # says which class is which
    assert saved.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert saved.config.label2id == {"entailment": 0, "not_entailment": 1}
    student = T.finetune_classification(models["distil"], "rte", 1, params, tmp_path / "w2",
                                        teacher_path=str(teacher_dir))
    assert student["teacher_path"] == str(teacher_dir)
    assert math.isfinite(student["train"]["loss"]) and student["train"]["steps"] == 2
    assert set(student["metrics"]) == {"accuracy", "score"}
    # both barely trained, so they agree (KL ~ 0): with task_alpha 0.5 the loss is about half the CE alone
    assert student["train"]["loss"] < 0.75 * teacher["train"]["loss"]


def test_mnli_reports_both_dev_sets_and_stsb_has_a_regression_head(tmp_path, glue_dir, models):
    params = glue_params(tmp_path, glue_dir, n_epoch=1.0)
    mnli = T.finetune_classification(models["distil"], "mnli", 1, params, tmp_path / "w1")
    assert set(mnli["metrics"]) == {"accuracy", "score", "accuracy_mismatched"}
    assert mnli["score"] == mnli["metrics_by_split"]["validation_matched"]["accuracy"]
    assert mnli["metrics"]["accuracy_mismatched"] == mnli["metrics_by_split"]["validation_mismatched"]["accuracy"]
    assert mnli["predictions"]["validation_mismatched"]["n"] == 8
    assert sum(mnli["predictions"]["validation_matched"]["predicted_label_counts"].values()) == 8
    stsb = T.finetune_classification(models["bert"], "stsb", 1, params, tmp_path / "w2", save_dir=tmp_path / "stsb")
    from transformers import AutoModelForSequenceClassification
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "stsb")
    assert saved.config.problem_type == "regression" and saved.config.id2label == {0: "score"}
    assert stsb["majority_rate"] is None and isinstance(stsb["single_class"], bool)
    assert set(stsb["metrics"]) == {"pearson", "spearman", "score"}
    assert stsb["score"] == pytest.approx((stsb["metrics"]["pearson"] + stsb["metrics"]["spearman"]) / 2)
    assert set(stsb["predictions"]["validation"]) == {"n", "mean", "std", "min", "max", "single_class"}


def test_finetune_squad_end_to_end_with_distillation(tmp_path, models):
    rng = np.random.default_rng(0)

    def rows(n, prefix):
        out = []
        for i in range(n):
            words = list(rng.choice(FILLER, size=12))
            words.insert(int(rng.integers(0, 13)), "good")
            out.append(squad_example(f"{prefix}{i}", " ".join(words), "good"))
        return out

    squad = write_hub_dataset(tmp_path / "squad", {"plain_text": {"train": rows(96, "t"), "validation": rows(20, "v")}})
    params = make_params(ImdbSquadParams, dict(
        squad_dataset=squad, models={"student": "x"}, seeds=[1], learning_rate=3e-3, n_epoch=4.0, batch_size=16,
        squad_max_length=32, doc_stride=8, max_answer_length=5, n_best=5, precision="fp32", squad_distill=True,
        run_dir=str(tmp_path / "runs")))
    result = T.finetune_squad(models["distil"], 1, params, tmp_path / "work", teacher_path=models["bert"])
    assert result["task"] == "squad" and result["teacher_path"] == models["bert"]
    assert result["predictions"]["validation"]["n"] == 20
    # the answer is always the word "good": a model that found it beats picking a random span by far
    assert result["metrics"]["exact_match"] >= 50.0, result["metrics"]
    assert result["score"] == result["metrics"]["f1"] >= result["metrics"]["exact_match"]


def squad_params(tmp_path):
    rng = np.random.default_rng(0)

    def rows(n, prefix):
        words = [list(rng.choice(FILLER, size=12)) for _ in range(n)]
        return [squad_example(f"{prefix}{i}", " ".join(w[:5] + ["good"] + w[5:]), "good") for i, w in enumerate(words)]

    squad = write_hub_dataset(tmp_path / "squad", {"plain_text": {"train": rows(48, "t"), "validation": rows(12, "v")}})
    return make_params(ImdbSquadParams, dict(
        squad_dataset=squad, models={"student": "x"}, seeds=[1], learning_rate=3e-3, n_epoch=2.0, batch_size=16,
        squad_max_length=32, doc_stride=8, max_answer_length=5, n_best=5, precision="fp32", run_imdb=False,
        run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results")))


def test_a_squad_run_saves_its_predictions_and_they_rescore_to_the_reported_values(tmp_path, models, capsys):
    from lib import REPO_ROOT, metrics, results as results_io
    params = squad_params(tmp_path)
    results_dir = tmp_path / "results" / "imdb_squad"
    T.run_sweep({"student": models["distil"]}, ["squad"], [1], params, results_dir, provenance={})
    record = results_io.read(T.result_path(results_dir, "student", "squad", 1))
    assert record.predictions_file == str(results_dir / "student" / "predictions" / "squad-seed1.json")
    answers = json.loads((REPO_ROOT / record.predictions_file).read_text())  # {question id: answer text}
    dev = T.load_task("squad", params)["validation"]
    assert sorted(answers) == sorted(dev["id"]) and all(isinstance(a, str) for a in answers.values())
    # the official scoring (evaluate's squad module) where the mirror holds it, else lib.metrics' own
    mirror = REPO_ROOT.parent / "shared" / "data" / "hub"
    mirror = str(mirror) if (mirror / "evaluate-metric" / "squad").is_dir() else None
    rescored = metrics.qa_metrics("squad", answers, {q: a["text"] for q, a in zip(dev["id"], dev["answers"])}, mirror)
    assert rescored["exact_match"] == pytest.approx(record.metrics["exact_match"], abs=1e-9)
    assert rescored["f1"] == pytest.approx(record.metrics["f1"], abs=1e-9)
    assert [r.task for r in results_io.read_runs(results_dir)] == ["squad"]  # the predictions folder is no run
    (REPO_ROOT / record.predictions_file).unlink()  # a result without its predictions is done again
    capsys.readouterr()
    T.run_sweep({"student": models["distil"]}, ["squad"], [1], params, results_dir, provenance={})
    assert "predictions file is missing" in capsys.readouterr().out
    assert (REPO_ROOT / record.predictions_file).is_file()


def _committed_squad_runs():
    from lib import REPO_ROOT, results as results_io
    return [path for path in results_io.results_files(REPO_ROOT / "results")
            if results_io.kind_of(path) == "finetune_run" and path.stem.startswith("squad-")
            and path.relative_to(REPO_ROOT / "results").parts[0] != "smoke"]  # smoke data is built by the tests


@pytest.mark.parametrize("path", _committed_squad_runs(), ids=lambda p: "/".join(p.parts[-4:]))
def test_a_committed_squad_run_rescores_to_its_em_and_f1_by_the_official_module(path, shared_hub):
    """Issue 23: EM/F1 recomputed from a committed run's predictions_file by evaluate's squad module (the
    official v1.1 scoring, from the mirror) equal the reported values, on the dev questions the run was scored on
    (its recorded parameters pick them)."""
    from lib import REPO_ROOT, hub, results as results_io
    record = results_io.read(path)
    params = make_params(ImdbSquadParams, {**record.provenance["params"], "mirror": str(shared_hub)})
    dev = T.load_task("squad", params)["validation"]
    answers = json.loads((REPO_ROOT / record.predictions_file).read_text())
    assert sorted(answers) == sorted(dev["id"])
    official = hub.load_metric("evaluate-metric/squad", mirror=str(shared_hub))
    scores = official.compute(predictions=[{"id": q, "prediction_text": answers[q]} for q in dev["id"]],
                              references=[{"id": q, "answers": a} for q, a in zip(dev["id"], dev["answers"])])
    assert scores["exact_match"] == pytest.approx(record.metrics["exact_match"], abs=1e-9)
    assert scores["f1"] == pytest.approx(record.metrics["f1"], abs=1e-9)


def test_tokenized_once_per_task_and_tokenizer_with_identical_results(tmp_path, glue_dir, models, monkeypatch):
    calls = []
    encode = T.encode_classification
    monkeypatch.setattr(T, "encode_classification", lambda *a, **k: calls.append(a[1]) or encode(*a, **k))
    T._ENCODED.clear()
    params = glue_params(tmp_path, glue_dir, n_epoch=1.0)
    first = T.finetune_classification(models["bert"], "sst2", 1, params, tmp_path / "a")
    again = T.finetune_classification(models["bert"], "sst2", 1, params, tmp_path / "b")
    other_seed = T.finetune_classification(models["bert"], "sst2", 2, params, tmp_path / "c")
    other_model = T.finetune_classification(models["distil"], "sst2", 1, params, tmp_path / "d")  # same tokenizer
    assert calls == ["sst2"]
    T._ENCODED.clear()
    fresh = T.finetune_classification(models["bert"], "sst2", 1, params, tmp_path / "e")
    assert calls == ["sst2", "sst2"]
    for result in (again, fresh):  # the cached tokenization trains to the very same numbers
        assert result["metrics"] == first["metrics"] and result["train"]["loss"] == first["train"]["loss"]
    assert other_seed["train"]["loss"] != first["train"]["loss"] and other_model["model_path"] == models["distil"]
    T.finetune_classification(models["bert"], "sst2", 1, glue_params(tmp_path, glue_dir, max_length=16), tmp_path / "f")
    assert calls == ["sst2"] * 3  # another max_length is another tokenization


def test_tokenizer_fingerprint_follows_what_tokenizes(tmp_path, models):
    from transformers import BertTokenizerFast
    bert, distil = (T.load_tokenizer(models[name]) for name in ("bert", "distil"))
    assert T.tokenizer_fingerprint(bert) == T.tokenizer_fingerprint(distil)  # two folders, one tokenizer
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB[:-1]) + "\n")
    smaller = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    assert T.tokenizer_fingerprint(smaller) != T.tokenizer_fingerprint(bert)


def test_young_heap_collects_a_runs_cycles_and_thaws_the_heap():
    import gc
    import weakref

    class Node:
        pass
    with T.young_heap():
        assert gc.get_freeze_count() > 0
        with T.young_heap():  # nested: the outer one owns the freeze
            node = Node()
            node.me = node  # a cycle, like a Trainer's
            alive = weakref.ref(node)
            del node
        assert gc.get_freeze_count() > 0
    assert alive() is None and gc.get_freeze_count() == 0


def test_group_by_length_is_opt_in_and_keyed(tmp_path, glue_dir):
    params = glue_params(tmp_path, glue_dir)
    assert not T.group_by_length(params)
    key = T.run_key("fp", "sst2", 1, params, data="d")
    params.group_by_length = True  # as a stage parameter of that name would set it
    assert T.group_by_length(params) and T.run_key("fp", "sst2", 1, params, data="d") != key


# --- sweeps and summaries ---

def fake_result(task, model_path, seed, teacher_path, score):
    """A fine-tuning result with every field of lib.results.FinetuneRun but model, run_key and provenance."""
    return {"task": task, "model_path": model_path, "seed": seed, "teacher_path": teacher_path,
            "metrics": {"accuracy": score, "score": score}, "score": score, "metrics_by_split": {}, "predictions": {},
            "train": {}, "hparams": {}, "single_class": False, "majority_rate": None}


def test_a_finished_stage_run_again_keeps_its_wall_time(tmp_path, glue_dir, monkeypatch):
    from lib import results as results_io
    monkeypatch.setattr(T, "_finetune", lambda task, model_path, seed, *a, **k: fake_result(task, model_path, seed,
                                                                                           None, 80.0))
    params = glue_params(tmp_path, glue_dir, tasks=["sst2"])
    T.run(params)
    path = tmp_path / "results" / "glue.json"
    first = json.loads(path.read_text())
    first["wall_time_s"] = 4321.0  # as if the sweep had taken an hour
    path.write_text(json.dumps(first))
    T.run(params)  # every run read back: the stage's time is the one recorded when they ran
    assert results_io.read(path).wall_time_s == 4321.0
    T.run(glue_params(tmp_path, glue_dir, tasks=["sst2"], seeds=[1, 2]))  # one run more: this call's own time
    assert results_io.read(path).wall_time_s < 60


def test_a_cut_stage_run_again_counts_the_runs_its_earlier_segment_finished(tmp_path, glue_dir, monkeypatch):
    from lib import results as results_io
    monkeypatch.setattr(T, "_finetune", lambda task, model_path, seed, *a, **k: fake_result(task, model_path, seed,
                                                                                           None, 80.0))
    params = glue_params(tmp_path, glue_dir, tasks=["sst2"], seeds=[1, 2])
    T.run(params)
    results_dir = tmp_path / "results"
    first, second = (T.result_path(results_dir / "glue", "teacher", "sst2", seed) for seed in (1, 2))
    assert results_io.read(first).wall_time_s is not None  # each run keeps its own seconds
    # as if the session had ended after seed 1's run, which took 1,000 s: no seed-2 run, no stage record
    record = json.loads(first.read_text())
    first.write_text(json.dumps({**record, "wall_time_s": 1000.0}))
    second.unlink()
    (results_dir / "glue.json").unlink()
    T.run(params)
    assert 1000.0 <= results_io.read(results_dir / "glue.json").wall_time_s < 1060.0  # both segments' runs


def test_run_sweep_resumes_and_adds_distilled_runs(tmp_path, glue_dir, monkeypatch):
    calls = []

    def fake_finetune(task, model_path, seed, params, work_dir, teacher_path=None, save_dir=None):
        calls.append((model_path, task, seed, teacher_path, save_dir))
        if save_dir is not None:
            Path(save_dir).mkdir(parents=True)
            (Path(save_dir) / "config.json").write_text("{}")
        score = {"teacher": 80.0, "student": 70.0}[model_path] + seed + (5 if teacher_path else 0)
        return fake_result(task, model_path, seed, teacher_path, score)

    monkeypatch.setattr(T, "_finetune", fake_finetune)
    params = glue_params(tmp_path, glue_dir, task_distill=True)
    models = {"student": "student", "teacher": "teacher"}
    results = T.run_sweep(models, ["sst2"], [1, 2], params, tmp_path / "results", provenance={"commit": "abc"})
    teacher_dir = str(params.path("run_dir") / "finetuned" / "teacher" / "sst2-seed1")
    # teacher first (its seed-1 copy is kept), then the student, then the student distilled from that copy
    assert [(c[0], c[2], c[3]) for c in calls] == [("teacher", 1, None), ("teacher", 2, None), ("student", 1, None),
                                                   ("student", 2, None), ("student", 1, teacher_dir),
                                                   ("student", 2, teacher_dir)]
    assert str(calls[0][4]) == teacher_dir and calls[1][4] is None
    assert [r["model"] for r in results] == ["teacher"] * 2 + ["student"] * 2 + ["student (D)"] * 2
    saved = json.loads((tmp_path / "results" / "student-D" / "sst2-seed2.json").read_text())
    assert saved["metrics"]["score"] == 70.0 + 2 + 5 and saved["teacher_path"] == teacher_dir
    assert saved["provenance"] == {"commit": "abc"}

    calls.clear()
    again = T.run_sweep(models, ["sst2"], [1, 2], params, tmp_path / "results", provenance={})
    assert calls == [] and again == results  # finished results are read back, not recomputed
    # a changed hyperparameter or a retrained model is fine-tuned again, never answered from a stale file
    changed = glue_params(tmp_path, glue_dir, learning_rate=params.learning_rate * 2)
    T.run_sweep({"teacher": "teacher"}, ["sst2"], [1], changed, tmp_path / "results", provenance={})
    assert calls == [("teacher", "sst2", 1, None, None)]
    retrained = tmp_path / "student"
    retrained.mkdir()
    (retrained / "config.json").write_text("{}")
    (retrained / "vocab.txt").write_text("[UNK]\n")  # a model folder without tokenizer files is refused
    monkeypatch.chdir(tmp_path)
    key = T.run_key(T.model_fingerprint("student"), "sst2", 1, params)
    assert key["model"] != "student" and key["learning_rate"] == params.learning_rate and key["seed"] == 1
    (retrained / "model.safetensors").write_bytes(b"new weights")
    assert T.model_fingerprint("student") != key["model"]
    calls.clear()
    T.run_sweep({"student": "student"}, ["rte"], [1], glue_params(tmp_path, glue_dir, recompute=True),
                tmp_path / "results2", provenance={})
    assert calls == [("student", "rte", 1, None, None)]
    with pytest.raises(ParameterError, match="distill_teacher"):
        T.run_sweep({"student": "student"}, ["rte"], [1], params, tmp_path / "results3", provenance={})


def test_changing_one_used_row_under_the_same_dataset_id_reruns(tmp_path, monkeypatch):
    calls = []

    def fake_finetune(task, model_path, seed, params, work_dir, teacher_path=None, save_dir=None):
        calls.append(task)
        return fake_result(task, model_path, seed, None, 1.0)

    monkeypatch.setattr(T, "_finetune", fake_finetune)
    rows = sentiment_rows(20, 1)
    hub_dir = tmp_path / "glue"
    write_hub_dataset(hub_dir, {"sst2": {"train": rows, "validation": rows[:6]}})
    params = glue_params(tmp_path, str(hub_dir), max_train_samples=10)
    T.run_sweep({"m": "m"}, ["sst2"], [1], params, tmp_path / "results", provenance={})
    T.run_sweep({"m": "m"}, ["sst2"], [1], params, tmp_path / "results", provenance={})
    assert calls == ["sst2"]  # the second sweep read the result back
    key = T.run_key("m", "sst2", 1, params)
    assert len(key["data"]) == 16 and (key["device"], key["world_size"], key["precision_run"]) == ("cpu", 1, "fp32")
    used = set(T.load_task("sst2", params)["train"]["idx"])
    unused = next(i for i in range(20) if i not in used)
    # a row outside the 10-row subset changes nothing the run saw: same key, no re-run
    write_hub_dataset(hub_dir, {"sst2": {"train": [dict(r, sentence=r["sentence"] + " very") if r["idx"] == unused
                                                   else r for r in rows], "validation": rows[:6]}})
    assert T.run_key("m", "sst2", 1, params) == key
    T.run_sweep({"m": "m"}, ["sst2"], [1], params, tmp_path / "results", provenance={})
    assert calls == ["sst2"]
    # one changed row that the run uses, under the same dataset id: another key, and the sweep fine-tunes again
    changed = min(used)
    write_hub_dataset(hub_dir, {"sst2": {"train": [dict(r, sentence=r["sentence"] + " very") if r["idx"] == changed
                                                   else r for r in rows], "validation": rows[:6]}})
    assert T.run_key("m", "sst2", 1, params)["data"] != key["data"]
    T.run_sweep({"m": "m"}, ["sst2"], [1], params, tmp_path / "results", provenance={})
    assert calls == ["sst2", "sst2"]
    # how it runs is part of the key too: two processes are another run
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert T.run_key("m", "sst2", 1, params)["world_size"] == 2


def _bare_copy(model_dir, dest):
    """A model folder holding only the config and the weights: "the model" copied without its tokenizer."""
    dest.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(model_dir) / name, dest / name)
    return str(dest)


def test_a_model_folder_without_tokenizer_files_is_refused(tmp_path, glue_dir, models, monkeypatch):
    # transformers 5 builds a tokenizer with an empty vocabulary for such a folder: every word became [UNK]
    bare = _bare_copy(models["bert"], tmp_path / "bare")
    params = glue_params(tmp_path, glue_dir, n_epoch=1.0)
    with pytest.raises(FileNotFoundError) as err:
        T.finetune_classification(bare, "sst2", 1, params, tmp_path / "work")
    assert bare in str(err.value) and "tokenizer.json" in str(err.value) and "vocab.txt" in str(err.value)
    # a sweep refuses it before fine-tuning anything, the good models included
    calls = []
    monkeypatch.setattr(T, "_finetune", lambda *args, **kwargs: calls.append(args))
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        T.run_sweep({"teacher": models["bert"], "bare": bare}, ["sst2"], [1], params, tmp_path / "results",
                    provenance={})
    assert calls == []


def test_model_fingerprint_covers_the_tokenizer_files(tmp_path, glue_dir, models, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(models["bert"], model)
    before = T.model_fingerprint(str(model))
    tokenizer_json = (model / "tokenizer.json").read_text()
    assert '"good"' in tokenizer_json
    (model / "tokenizer.json").write_text(tokenizer_json.replace('"good"', '"goood"'))  # same weights, other tokens
    assert T.model_fingerprint(str(model)) != before
    (model / "tokenizer.json").write_text(tokenizer_json)
    assert T.model_fingerprint(str(model)) == before  # restored: the same key again
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": not config["do_lower_case"]}))
    assert T.model_fingerprint(str(model)) != before
    (model / "vocab.txt").write_text("\n".join(VOCAB) + "\n")  # any tokenizer file that exists counts
    assert T.model_fingerprint(str(model)) not in (before, T.model_fingerprint(models["bert"]))
    # a sweep fine-tunes again when only the tokenizer changed
    calls = []
    monkeypatch.setattr(T, "_finetune", lambda task, model_path, seed, *a, **k: calls.append(task) or
                        fake_result(task, model_path, seed, None, 1.0))
    params = glue_params(tmp_path, glue_dir)
    T.run_sweep({"teacher": str(model)}, ["rte"], [1], params, tmp_path / "results", provenance={})
    T.run_sweep({"teacher": str(model)}, ["rte"], [1], params, tmp_path / "results", provenance={})
    (model / "vocab.txt").unlink()
    T.run_sweep({"teacher": str(model)}, ["rte"], [1], params, tmp_path / "results", provenance={})
    assert calls == ["rte", "rte"]


def test_a_retrained_teacher_reruns_the_runs_it_taught(tmp_path, glue_dir, monkeypatch):
    calls = []

    def fake_finetune(task, model_path, seed, params, work_dir, teacher_path=None, save_dir=None):
        calls.append((Path(model_path).name, teacher_path is not None))
        if save_dir is not None:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
            (Path(save_dir) / "config.json").write_text("{}")
        return fake_result(task, model_path, seed, teacher_path, 1.0)

    monkeypatch.setattr(T, "_finetune", fake_finetune)
    folders = {}
    for name in ("teacher", "student"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for file, text in (("config.json", "{}"), ("vocab.txt", "[UNK]\n"), ("model.safetensors", name)):
            (folders[name] / file).write_text(text)
    models = {name: str(folder) for name, folder in folders.items()}
    params = glue_params(tmp_path, glue_dir, task_distill=True)
    T.run_sweep(models, ["rte"], [1], params, tmp_path / "results", provenance={})
    assert calls == [("teacher", False), ("student", False), ("student", True)]
    (folders["teacher"] / "model.safetensors").write_text("teacher, retrained")
    calls.clear()
    T.run_sweep(models, ["rte"], [1], params, tmp_path / "results", provenance={})
    assert calls == [("teacher", False), ("student", True)]  # the student alone is unchanged


def imdb_params(tmp_path):
    rows = [{"text": r["sentence"], "label": r["label"]} for r in sentiment_rows(30, 5)]
    imdb = write_hub_dataset(tmp_path / "imdb", {"plain_text": {"train": rows[:20], "test": rows[20:]}})
    return make_params(ImdbSquadParams, dict(imdb_dataset=imdb, models={"teacher": "x"}, seeds=[1], run_squad=False,
                                             precision="fp32", run_dir=str(tmp_path / "runs")))


@pytest.mark.parametrize("task", ["sst2", "imdb"])
def test_a_truncated_run_result_is_named_and_fine_tuned_again(tmp_path, glue_dir, monkeypatch, capsys, task):
    calls = []
    monkeypatch.setattr(T, "_finetune", lambda task, model_path, seed, *a, **k: calls.append(task) or
                        fake_result(task, model_path, seed, None, 1.0 + len(calls)))
    params = imdb_params(tmp_path) if task == "imdb" else glue_params(tmp_path, glue_dir)
    results_dir = tmp_path / "results"
    T.run_sweep({"teacher": "teacher"}, [task], [1], params, results_dir, provenance={})
    path = T.result_path(results_dir, "teacher", task, 1)
    text = path.read_text()
    path.write_text(text[:len(text) // 2])  # a copy cut short
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())
    capsys.readouterr()
    again = T.run_sweep({"teacher": "teacher"}, [task], [1], params, results_dir, provenance={})
    out = capsys.readouterr().out
    assert calls == [task, task] and again[0]["metrics"]["score"] == 3.0  # re-done, not trusted
    assert f"teacher/{task}-seed1.json" in out and "not valid JSON" in out and "fine-tuning again" in out
    assert json.loads(path.read_text())["metrics"]["score"] == 3.0  # rewritten whole
    path.write_text("")  # an empty file is no dead end either
    T.run_sweep({"teacher": "teacher"}, [task], [1], params, results_dir, provenance={})
    assert calls == [task] * 3


def test_summarize_medians_glue_score_and_retention():
    def result(model, task, seed, score):
        return {"model": model, "task": task, "seed": seed, "metrics": {"score": score}}

    results = [result("teacher", "cola", s, v) for s, v in ((1, 50), (2, 60), (3, 58))]
    results += [result("teacher", "sst2", s, v) for s, v in ((1, 90), (2, 92), (3, 91))]
    results += [result("student", "cola", s, v) for s, v in ((1, 40), (2, 45), (3, 47))]
    results += [result("student", "sst2", s, v) for s, v in ((1, 89), (2, 91), (3, 90))]
    results += [result("student", "imdb", 1, 88.0)]
    table = T.summarize(results)

    def row(model, task):
        return table[(table.model == model) & (table.task == task) & (table.metric == "score")].iloc[0]

    assert row("teacher", "cola")["median"] == 58 and row("teacher", "cola")["min"] == 50 and row("teacher", "cola")["n"] == 3
    assert row("teacher", "glue")["median"] == pytest.approx((58 + 91) / 2)
    # per-seed GLUE scores of the student: 64.5, 68, 68.5
    assert row("student", "glue")["median"] == pytest.approx((45 + 90) / 2)
    assert (row("student", "glue")["min"], row("student", "glue")["max"]) == (64.5, 68.5)
    assert row("student", "cola")["retention"] == pytest.approx(100 * 45 / 58)
    assert row("student", "glue")["retention"] == pytest.approx(100 * 67.5 / 74.5)
    assert math.isnan(row("teacher", "cola")["retention"]) and math.isnan(row("student", "imdb")["retention"])
    wide = T.score_table(table)
    assert list(wide.columns) == ["glue", "cola", "sst2", "imdb"]
    assert wide.loc["student", "sst2"] == 90
    ratio = T.retention_fraction(table)
    assert list(ratio.index) == ["cola", "sst2"]  # imdb: no teacher result; glue: not a task
    assert ratio["cola"] == pytest.approx(45 / 58)


def test_summarize_names_single_class_runs_in_the_task_and_glue_rows():
    def result(model, task, seed, score, **extra):
        return {"model": model, "task": task, "seed": seed, "metrics": {"score": score}, **extra}

    results = [result("student", "wnli", s, 56.3, single_class=True, majority_rate=56.3) for s in (1, 2, 3)]
    results += [result("student", "rte", s, v, single_class=s == 2, majority_rate=52.7)
                for s, v in ((1, 60), (2, 52.7), (3, 61))]
    # a result written before single_class existed: its predicted_label_counts tell
    results += [result("student", "cola", s, 0.0, predictions={"validation": {"predicted_label_counts": counts}})
                for s, counts in ((1, {"1": 500}), (2, {"0": 3, "1": 497}))]
    results += [result("student", "sst2", 1, 90.0, single_class=False, majority_rate=50.9),
                result("student", "squad", 1, 80.0)]
    table = T.summarize(results)

    def row(task):
        return table[(table.model == "student") & (table.task == task) & (table.metric == "score")].iloc[0]

    assert (row("wnli")["single_class_seeds"], row("wnli")["majority_rate"]) == (3, 56.3)
    assert (row("rte")["single_class_seeds"], row("rte")["n"]) == (1, 3)
    assert row("cola")["single_class_seeds"] == 1 and row("sst2")["single_class_seeds"] == 0
    assert math.isnan(row("squad")["single_class_seeds"]) and math.isnan(row("cola")["majority_rate"])
    assert row("glue")["single_class_tasks"] == "cola, rte, wnli"  # averaged into the GLUE score: named
    assert T.summarize([results[-2]]).query("task == 'glue'")["single_class_tasks"].item() == ""


# --- the real mirror (skipped when absent) ---

@pytest.mark.mirror
def test_mirror_glue_and_imdb_load_and_tokenize(shared_hub):
    from lib import hub
    from transformers import AutoTokenizer
    params = make_params(GlueParams, dict(mirror=str(shared_hub), models={"m": "x"}, max_train_samples=50,
                                          max_eval_samples=20))
    cola = T.load_task("cola", params)
    assert list(cola) == ["train", "validation"] and len(cola["train"]) == 50 and len(cola["validation"]) == 20
    rte = T.load_task("rte", params)
    assert set(rte["train"].column_names) >= {"sentence1", "sentence2", "label"}
    tokenizer = hub.from_pretrained(AutoTokenizer, "distilbert/distilbert-base-uncased", mirror=str(shared_hub))
    encoded = T.encode_classification(rte, "rte", tokenizer, 128)
    assert max(len(ids) for ids in encoded["train"]["input_ids"]) <= 128
    imdb_params = make_params(ImdbSquadParams, dict(mirror=str(shared_hub), models={"m": "x"}, max_train_samples=30,
                                                    max_eval_samples=30))
    imdb = T.load_task("imdb", imdb_params)
    assert list(imdb) == ["train", "test"] and 0 < sum(imdb["train"]["label"]) < 30  # both classes drawn
    both = T.encode_classification(imdb, "imdb", tokenizer, 512, "head+tail")
    assert max(len(ids) for ids in both["test"]["input_ids"]) <= 512
