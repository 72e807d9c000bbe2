"""lib.losses' registry: a term registered from here alone (no other module edited) is computed, weighted, logged,
kept in the results' loss curve and drawn; the forward passes compute only the outputs the terms in use read."""
import json
from types import SimpleNamespace

import pytest
import torch
from test_training import distill_params, one_thread, setup  # noqa: F401 (fixtures)

from lib import data, distill, losses, models, plots, training
from lib.config import DistillParams


def l2_hidden(batch):
    """A toy term: the mean squared activation of the student's last hidden states on real tokens."""
    return batch.student.hidden_states[-1][batch.tokens].float().square().mean()


@pytest.fixture
def toy_term(monkeypatch):
    monkeypatch.setattr(losses, "TERMS", dict(losses.TERMS))  # the registry as it was, back after the test
    # no DistillParams field alpha_l2: the weight is the term's default
    return losses.register(losses.LossTerm("l2", l2_hidden, 0.25, frozenset({"student hidden"}), label="L_l2"))


def test_the_registry_holds_the_released_terms_and_the_config_their_weights():
    assert losses.log_fields() == ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_mse")
    assert [t.weight for t in losses.TERMS.values()] == DistillParams.weight_names()
    assert {t.weight: t.default for t in losses.TERMS.values()} == {
        name: DistillParams.__dataclass_fields__[name].default for name in DistillParams.weight_names()}
    settings = losses.loss_settings(distill_params(alpha_cos=0.0, temperature=3.0))
    assert settings == dict(alpha_ce=5.0, temperature=3.0, restrict_ce_to_mask=False, alpha_mlm=2.0, alpha_cos=0.0,
                            alpha_mse=0.0)
    assert losses.needed_outputs(settings) == {"student logits", "teacher logits"}
    assert losses.needed_outputs(losses.loss_settings(alpha_ce=0.0, alpha_cos=0.0)) == {"student logits"}
    with pytest.raises(TypeError, match="alpha_cso"):
        losses.loss_settings(alpha_cso=1.0)
    with pytest.raises(ValueError, match="unknown outputs"):
        losses.register(losses.LossTerm("bad", l2_hidden, 1.0, frozenset({"student_attention"})))


def test_forward_passes_compute_only_what_the_terms_read(setup):
    teacher, tokenizer, dataset = setup
    student = models.build_student(teacher)
    batch = data.collate([dataset[i] for i in range(4)], pad_token_id=0)
    masking = training.masking_spec(distill_params(), tokenizer, torch.ones(teacher.config.vocab_size))
    input_ids, attention_mask, labels = training.prepare_batch(batch, masking, torch.Generator().manual_seed(0),
                                                               "cpu")
    rows = losses.logit_rows(attention_mask, labels)
    out = training.teacher_forward(teacher, input_ids, attention_mask, rows, {"teacher logits"})
    assert out.logits.shape == (int(rows.sum()), teacher.config.vocab_size) and out.hidden_states is None
    full = teacher(input_ids=input_ids, attention_mask=attention_mask).logits[rows]
    assert torch.allclose(out.logits, full, atol=1e-6)
    assert training.teacher_forward(teacher, input_ids, attention_mask, rows, {"student logits"}).logits is None
    hidden = training.teacher_forward(teacher, input_ids, attention_mask, rows, {"teacher hidden"})
    assert hidden.logits.shape[0] == 0 and len(hidden.hidden_states) == teacher.config.num_hidden_layers + 1
    out = training.student_forward(student, input_ids, attention_mask, rows, {"student logits"})
    assert out.logits.shape[0] == int(rows.sum()) and out.hidden_states is None


def test_a_term_registered_from_a_test_is_trained_logged_kept_and_drawn(setup, tmp_path, toy_term):
    teacher, tokenizer, dataset = setup
    params = distill_params(run_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"), max_steps=2)
    counts = data.token_counts(dataset, teacher.config.vocab_size, progress=False)
    summary = distill.run_distillation(params, teacher, dataset, tokenizer, counts)
    log = [json.loads(line) for line in (tmp_path / "runs" / "student" / "log.jsonl").read_text().splitlines()]
    for r in log:
        assert r["loss_l2"] > 0
        assert r["loss"] == pytest.approx(5 * r["loss_ce"] + 2 * r["loss_mlm"] + r["loss_cos"] + 0.25 * r["loss_l2"],
                                          rel=1e-5)
    record = json.loads((tmp_path / "results" / "distill-student.json").read_text())
    assert [r["loss_l2"] for r in record["loss_curve"]] == [r["loss_l2"] for r in log]
    assert summary["final"]["loss_l2"] == log[-1]["loss_l2"]
    traces = {t.name: list(t.y) for t in plots.loss_curves(record["loss_curve"]).data}
    assert traces["L_l2 (unweighted; \u00d7 alpha_l2 in the total)"] == [r["loss_l2"] for r in log]
    assert "L_mse (unweighted; \u00d7 alpha_mse in the total)" not in traces  # weight 0: not logged, not drawn


def test_a_term_with_weight_zero_is_neither_computed_nor_logged(toy_term, monkeypatch):
    monkeypatch.setattr(losses, "TERMS", {**losses.TERMS, "l2": toy_term.__class__(
        "l2", l2_hidden, 0.0, frozenset({"student hidden"}))})
    student = SimpleNamespace(logits=torch.randn(2, 3, 7), hidden_states=None)  # reading hidden states would fail
    got = losses.distillation_loss(student, student, torch.ones(2, 3), torch.full((2, 3), -100), alpha_cos=0.0)
    assert got["loss_l2"] is None and got["loss_mlm"].item() == 0
    assert "loss_l2" not in training.log_record(
        training.LogWindow(0.0, torch.ones(6), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0), 1),
        SimpleNamespace(num_processes=1), losses.loss_settings(), 1, 0.1, 1e-3, 0, 1.0, 1.0)[0]


def test_a_term_registered_from_a_test_runs_through_stage_2_on_the_smoke_profile(tmp_path, toy_term):
    from lib.config import load_params
    params = load_params("distill", profile="smoke", teacher="smoke/tiny-bert", run_dir=str(tmp_path / "runs"),
                         results_dir=str(tmp_path / "results"), max_steps=4, log_every=2, checkpoint_every=4,
                         ablations={}, heldout_sequences=0)
    distill.run(params, progress=False)
    record = json.loads((tmp_path / "results" / "distill-student.json").read_text())
    assert [r["step"] for r in record["loss_curve"]] == [2, 4]
    assert all(r["loss_l2"] > 0 for r in record["loss_curve"])
    assert record["final"]["loss_l2"] == record["loss_curve"][-1]["loss_l2"]
    assert "L_l2" in " ".join(t.name for t in plots.loss_curves(record["loss_curve"]).data)
