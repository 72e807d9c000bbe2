"""lib.teacher: loading (MLM head present or not), masked-LM evaluation, MLM-head adaptation, the adapt decision
and stage 1 (run, write_teacher_logits) on the smoke world. Tiny models, CPU, one thread."""
import json
import math

import numpy as np
import pytest
import torch
from transformers import BertModel

from lib import config, data, hub, models, results, training
from lib import teacher as teacher_module
from lib.config import ParameterError
from lib.teacher import (evaluate_mlm, load_teacher, needs_adaptation, run, train_mlm_head,
                         write_teacher_logits)
from test_models import tiny_teacher
from test_training import one_thread, setup, state, tiny_setup  # noqa: F401  (fixtures: one thread, tiny world)


def test_load_teacher_detects_missing_mlm_head(tmp_path):
    teacher = tiny_teacher()
    teacher.save_pretrained(tmp_path / "mlm")
    loaded, has_head = load_teacher(str(tmp_path / "mlm"))
    assert has_head
    assert torch.equal(loaded.cls.predictions.transform.dense.weight, teacher.cls.predictions.transform.dense.weight)
    encoder = BertModel(teacher.config)
    encoder.save_pretrained(tmp_path / "encoder")
    loaded, has_head = load_teacher(str(tmp_path / "encoder"))
    assert not has_head
    assert torch.equal(loaded.bert.encoder.layer[1].output.dense.weight, encoder.encoder.layer[1].output.dense.weight)



def test_evaluate_mlm_same_masks_for_teacher_and_copy(setup):
    teacher, tokenizer, dataset = setup
    full_copy = models.build_student(teacher, layers=[0, 1, 2, 3])
    a = evaluate_mlm(teacher, dataset, tokenizer, batch_size=16, progress=False)
    b = evaluate_mlm(full_copy, dataset, tokenizer, batch_size=16, progress=False)
    assert a["n_tokens"] == b["n_tokens"] and a["mlm_accuracy"] == pytest.approx(b["mlm_accuracy"])
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-4)
    assert a["perplexity"] == pytest.approx(math.exp(a["loss"]))
    lengths = data.sequence_lengths(dataset)
    order = np.argsort(-lengths, kind="stable")
    assert a["n_tokens"] == sum(math.ceil(0.15 * lengths[order[i:i + 16]].sum()) for i in range(0, len(order), 16))
    # a random teacher over 125 tokens is near chance
    assert 0.3 * 120 < a["perplexity"] < 3 * 120


def test_kl_to_teacher_is_zero_for_the_teacher_and_the_hand_computed_value_for_a_student(setup):
    teacher, tokenizer, dataset = setup
    rows = dataset.select(range(6))
    student = models.build_student(teacher, layers=[0, 3]).train()  # in train mode: evaluated without dropout
    with torch.no_grad():  # the random tiny teacher is near uniform: move the student's outputs away from it
        student.vocab_projector.bias.copy_(torch.randn(student.vocab_projector.bias.shape, generator=torch.Generator().manual_seed(0)))
    itself = evaluate_mlm(teacher, rows, tokenizer, batch_size=8, seed=3, progress=False, teacher=teacher)
    assert itself["kl_to_teacher"] == pytest.approx(0.0, abs=1e-6)
    result = evaluate_mlm(student, rows, tokenizer, batch_size=8, seed=3, progress=False, teacher=teacher)
    assert student.training and result["n_tokens"] == itself["n_tokens"]  # mode restored; same masks
    assert "kl_to_teacher" not in evaluate_mlm(student, rows, tokenizer, batch_size=8, seed=3, progress=False)

    # by hand: the same masks (one batch of 6, the generator of seed 3), full logits, sum p_t (log p_t - log p_s)
    masking = training.MaskingSpec(teacher_module._uniform_probs(teacher, tokenizer), tokenizer.mask_token_id,
                                   data.special_token_ids(tokenizer))
    order = teacher_module._mlm_batches(data.sequence_lengths(rows), 8)[0]
    batch = data.collate([rows[i] for i in order], pad_token_id=tokenizer.pad_token_id)
    input_ids, labels = masking.apply(batch, torch.Generator().manual_seed(3))
    targets = labels != -100
    student.eval()
    with torch.no_grad():
        log_p_s = student(input_ids=input_ids, attention_mask=batch["attention_mask"]).logits[targets].log_softmax(-1)
        log_p_t = teacher(input_ids=input_ids, attention_mask=batch["attention_mask"]).logits[targets].log_softmax(-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()
    assert result["n_tokens"] == int(targets.sum()) and result["kl_to_teacher"] == pytest.approx(float(kl), rel=1e-4)
    assert result["kl_to_teacher"] > 0.1
    assert result["mlm_accuracy"] == pytest.approx(float((log_p_s.argmax(-1) == labels[targets]).float().mean()))


def test_train_mlm_head_only_touches_head_and_top_layers(setup):
    _, tokenizer, dataset = setup
    teacher = tiny_setup(seed=1)[0]
    before = state(teacher)
    eval_before = evaluate_mlm(teacher, dataset, tokenizer, progress=False)
    result = train_mlm_head(teacher, dataset, tokenizer, steps=40, top_layers=1, learning_rate=3e-3,
                            batch_size=16, progress=False, log_every=10)
    eval_after = evaluate_mlm(teacher, dataset, tokenizer, progress=False)
    assert [r["step"] for r in result["log"]] == [10, 20, 30, 40]
    assert eval_after["loss"] < eval_before["loss"] - 0.3  # the Zipf corpus is learnable from unigrams alone
    after = teacher.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert "cls.predictions.transform.dense.weight" in changed and "cls.predictions.bias" in changed
    assert "bert.encoder.layer.3.output.dense.weight" in changed
    assert not any(k.startswith(("bert.embeddings", "bert.encoder.layer.0.", "bert.encoder.layer.2.")) for k in changed)
    assert "cls.predictions.decoder.weight" not in changed  # tied to the word embeddings
    assert all(p.requires_grad for p in teacher.parameters()) and not teacher.training




def test_the_adaptation_curve_keeps_the_weights_of_its_best_point(setup):
    _, tokenizer, dataset = setup
    teacher = tiny_setup(seed=1)[0]
    head = teacher.cls.predictions.transform.dense.weight
    seen, accuracies = [], iter([0.10, 0.30, 0.50, 0.20, 0.40])  # steps 0, 5, 10, 15, 20: the best is step 10

    def evaluate(model):
        seen.append(head.detach().clone())
        return {"mlm_accuracy": next(accuracies), "perplexity": 1.0, "loss": 0.0, "n_tokens": 1}

    result = train_mlm_head(teacher, dataset, tokenizer, steps=20, top_layers=1, learning_rate=3e-3, batch_size=16,
                            progress=False, evaluate=evaluate, eval_every=5)
    assert [p["step"] for p in result["curve"]] == [0, 5, 10, 15, 20] and result["best_step"] == 10
    assert set(result["curve"][0]) == {"step", "mlm_accuracy", "perplexity", "loss"}
    assert torch.equal(head, seen[2]) and not torch.equal(head, seen[4])  # step 10's weights, not the last
    # the evaluations do not move the training: without them, step 10 reaches the same weights
    again = tiny_setup(seed=1)[0]
    train_mlm_head(again, dataset, tokenizer, steps=20, top_layers=1, learning_rate=3e-3, batch_size=16,
                   progress=False, evaluate=lambda m: {"mlm_accuracy": 1.0 if len(seen) > 99 else 0.0}, eval_every=0)
    reference = tiny_setup(seed=1)[0]
    train_mlm_head(reference, dataset, tokenizer, steps=20, top_layers=1, learning_rate=3e-3, batch_size=16,
                   progress=False)
    assert torch.equal(again.cls.predictions.transform.dense.weight, reference.cls.predictions.transform.dense.weight)


def test_training_the_head_on_masked_rows_only_gives_the_full_logits_loss(setup):
    _, tokenizer, dataset = setup
    teacher = tiny_setup(seed=1)[0]
    batch = data.collate([dataset[i] for i in range(8)], pad_token_id=tokenizer.pad_token_id)
    masking = training.MaskingSpec(teacher_module._uniform_probs(teacher, tokenizer), tokenizer.mask_token_id,
                                   data.special_token_ids(tokenizer))
    input_ids, labels = masking.apply(batch, torch.Generator().manual_seed(0))
    targets = labels != -100
    rows = teacher_module._masked_logits(teacher.eval(), input_ids, batch["attention_mask"], targets)
    full = teacher(input_ids=input_ids, attention_mask=batch["attention_mask"]).logits[targets]
    torch.testing.assert_close(rows, full)


def test_stage_1_tries_each_number_of_top_layers_and_keeps_the_best_on_the_selection_sequences(tmp_path):
    params = smoke_params(tmp_path, adapt_mlm="always", adapt_steps=6, adapt_top_layers=[0, 2], adapt_eval_every=3,
                          adapt_learning_rate=3e-3)
    prepared = run(params, progress=False)
    record = results.load(params.results_dir, config.TEACHER)
    runs = record.adaptation["runs"]
    assert [r["top_layers"] for r in runs] == [0, 2] and [[p["step"] for p in r["curve"]] for r in runs] == [[0, 3, 6]] * 2
    assert runs[0]["curve"][0] == runs[1]["curve"][0]  # both start from the same weights
    best = max(runs, key=lambda r: r["best_accuracy"])
    assert record.adaptation["chosen"]["top_layers"] == best["top_layers"]
    assert record.adaptation["chosen"]["step"] == best["best_step"]
    assert record.adaptation["selection_sequences"] == 8  # as many as the reported held-out, and other ones
    assert runs[0]["trainable_parameters"] < runs[1]["trainable_parameters"]
    assert record.mlm_after == prepared.mlm_after


@pytest.mark.parametrize("adapt_mlm, has_head, expected", [
    ("auto", True, False), ("auto", False, True), ("always", True, True), ("always", False, True),
    ("never", True, False), ("never", False, False)])
def test_the_adapt_decision(adapt_mlm, has_head, expected):
    assert needs_adaptation(adapt_mlm, has_head) is expected


def test_an_unknown_adapt_mode_is_named():
    with pytest.raises(ParameterError, match="adapt_mlm.*'sometimes'"):
        needs_adaptation("sometimes", True)


def smoke_params(tmp_path, **overrides):
    return config.load_params(config.TEACHER, profile="smoke", run_dir=str(tmp_path / "runs"),
                              results_dir=str(tmp_path / "results"), eval_sequences=8, batch_size=8, **overrides)


def test_prepare_teacher_adapts_saves_and_writes_its_result(tmp_path):
    params = smoke_params(tmp_path, adapt_mlm="always", adapt_steps=3)
    prepared = run(params, progress=False)
    assert prepared.adapted and [r["step"] for r in prepared.loss_log] == [3]  # the adaptation's loss log
    assert prepared.mlm_after != prepared.mlm_before and len(prepared.heldout) == 8
    record = results.load(params.results_dir, config.TEACHER)
    assert isinstance(record, results.TeacherResult) and record.adapted and record.had_mlm_head
    assert record.mlm_before == prepared.mlm_before and record.mlm_after == prepared.mlm_after
    assert record.parameters == models.count_parameters(prepared.teacher) and record.heldout_sequences == 8
    saved, _ = load_teacher(str(prepared.saved_to))  # stage 2's teacher: the adapted weights
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in prepared.teacher.state_dict().items())

    logits = write_teacher_logits(params, prepared.teacher, prepared.tokenizer, prepared.heldout)
    stored = json.loads((tmp_path / "results" / "teacher_logits.json").read_text())
    assert stored["tokens"] == logits.tokens and len(stored["logits"]) == 10
    assert stored["logits"] == sorted(stored["logits"], reverse=True)
    assert "[MASK]" in stored["text"] and stored["text"].count("[MASK]") == 1
    # the first held-out row whose correct token is among the top 10: the answer is the marked candidate
    assert stored["answer_rank"] is not None and stored["tokens"][stored["answer_rank"]] == stored["answer"]
    rows = [list(prepared.heldout[i]["input_ids"][:32]) for i in range(len(prepared.heldout))]
    chosen = next(ids for ids in rows if prepared.tokenizer.decode(
        ids[1:len(ids) // 2] + [prepared.tokenizer.mask_token_id] + ids[len(ids) // 2 + 1:]) == stored["text"])
    assert stored["position"] == len(chosen) // 2
    assert prepared.tokenizer.convert_ids_to_tokens(chosen[stored["position"]]) == stored["answer"]
    # logsumexp is the full-vocabulary normaliser: the top-10 share at each T is below 1 and falls as T rises
    shares = [torch.tensor(stored["logits"]).div(t).sub(lse).exp().sum().item()
              for t, lse in zip(stored["temperatures"], stored["logsumexp"])]
    assert all(0 < s < 1 for s in shares) and shares == sorted(shares, reverse=True)
    assert stored["logsumexp"][1] >= max(stored["logits"])  # T = 1: logsumexp over the vocabulary >= its max


def test_prepare_teacher_never_adapts_with_never(tmp_path):
    params = smoke_params(tmp_path, adapt_mlm="never")
    prepared = run(params, progress=False)
    original, _ = load_teacher(hub.resolve(params.teacher, params.mirror))
    assert not prepared.adapted and prepared.loss_log == [] and prepared.mlm_after == prepared.mlm_before
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in prepared.teacher.state_dict().items())


def test_a_rerun_reuses_the_saved_teacher_unless_its_parameters_or_weights_changed(tmp_path, monkeypatch, capsys):
    params = smoke_params(tmp_path, adapt_mlm="always", adapt_steps=3)
    first = run(params, progress=False)
    record = results.load(params.results_dir, config.TEACHER)
    assert record.weights == training.weights_digest(first.teacher) and record.loss_log == first.loss_log

    def trains(*args, **kwargs):
        raise AssertionError("the finished teacher was prepared again")
    monkeypatch.setattr(teacher_module, "train_mlm_head", trains)
    again = run(params, progress=False)  # reused: no adaptation, the same weights, record and held-out rows
    assert "reusing the teacher" in capsys.readouterr().out
    assert all(torch.equal(v, again.teacher.state_dict()[k]) for k, v in first.teacher.state_dict().items())
    assert again.record == record and again.loss_log == first.loss_log and again.mlm_after == first.mlm_after
    assert again.heldout["input_ids"] == first.heldout["input_ids"] and again.adapted

    for changed in (dict(adapt_steps=4), dict(recompute=True)):  # other parameters, or asked to: prepared again
        with pytest.raises(AssertionError, match="prepared again"):
            run(smoke_params(tmp_path, **{"adapt_mlm": "always", "adapt_steps": 3, **changed}), progress=False)
    saved, _ = load_teacher(str(first.saved_to))
    with torch.no_grad():
        saved.cls.predictions.bias.add_(1.0)
    saved.save_pretrained(first.saved_to)  # weights that are not the recorded ones: prepared again
    with pytest.raises(AssertionError, match="prepared again"):
        run(params, progress=False)
    assert "its weights are not the ones" in capsys.readouterr().out


def test_the_adaptation_probe_benchmark_runs_on_the_smoke_profile(monkeypatch, capsys):
    import sys

    from lib import REPO_ROOT
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    import adaptation_probe
    monkeypatch.setattr(sys, "argv", ["adaptation_probe.py", "--profile", "smoke", "--layers", "2",
                                      "--probes", "sst2:100", "--json"])
    adaptation_probe.main()
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("["):])
    assert [r["teacher"] for r in rows] == ["not adapted", "top 2 layers"]
    assert rows[0]["mlm_accuracy"] is None and 0 <= rows[1]["mlm_accuracy"] <= 1
    assert set(rows[1]["sst2-100"]) == {"heldout", "floor", "dev"}


def test_the_finetune_probe_benchmark_sets_the_rung_learning_rate_and_epochs(monkeypatch, capsys):
    import sys

    from lib import REPO_ROOT, config, finetune
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    import finetune_probe
    seen = []
    real = finetune.finetune_classification

    def recording(model_path, task, seed, params, work):
        seen.append((seed, finetune.task_hparams(task, params)))
        return real(model_path, task, seed, params, work)

    monkeypatch.setattr(finetune, "finetune_classification", recording)
    model = config.load_params(config.TEACHER, profile="smoke").teacher
    monkeypatch.setattr(sys, "argv", ["finetune_probe.py", model, "sst2:100:3e-4:2", "--profile", "smoke",
                                      "--seeds", "1", "2"])
    finetune_probe.main()
    assert [s for s, _ in seen] == [1, 2]
    assert all((hp["max_train_samples"], hp["learning_rate"], hp["n_epoch"]) == (100, 3e-4, 2) for _, hp in seen)
    lines = [line for line in capsys.readouterr().out.splitlines() if "held-out" in line]
    assert [line.split()[1:3] for line in lines] == [["seed", "1"], ["seed", "2"]]
    assert all("dev" in line for line in lines)
