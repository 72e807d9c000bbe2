"""lib.losses: each term against a hand-written float64 loop over tokens, padding included; the training step's
losses and gradients (lib.training.forward_losses: heads on the used rows only, chunked KL) against a plain
implementation of the released distiller's arithmetic (benchmarks/distill_throughput.py)."""
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from lib import REPO_ROOT, losses, models, training
from lib.losses import distillation_loss, kl_divergence, logit_rows

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from distill_throughput import released_forward_losses  # noqa: E402

B, L, V, D = 2, 5, 7, 6


def outputs(seed=0, n_hidden=3):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g) * 2
    student = SimpleNamespace(logits=make(B, L, V), hidden_states=tuple(make(B, L, D) for _ in range(n_hidden)))
    teacher = SimpleNamespace(logits=make(B, L, V), hidden_states=tuple(make(B, L, D) for _ in range(n_hidden + 2)))
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.full((B, L), -100)
    labels[0, 1], labels[0, 3], labels[1, 2] = 3, 6, 0
    return student, teacher, attention_mask, labels


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    return x - x.max() - math.log(np.exp(x - x.max()).sum())


def hand_terms(student, teacher, attention_mask, labels, T=2.0, only_masked=False, pairs=((-1, -1),)):
    """KL and MSE are means per selected token (not per sequence), cosine a mean per real token."""
    s, t = student.logits.double().numpy(), teacher.logits.double().numpy()
    positions = [(b, i) for b in range(B) for i in range(L)
                 if (labels[b, i] != -100 if only_masked else attention_mask[b, i] == 1)]
    kl = mse = 0.0
    for b, i in positions:
        log_p_s, log_p_t = log_softmax(s[b, i] / T), log_softmax(t[b, i] / T)
        kl += float((np.exp(log_p_t) * (log_p_t - log_p_s)).sum())
        mse += float(((s[b, i] - t[b, i]) ** 2).sum())
    targets = [(b, i) for b in range(B) for i in range(L) if labels[b, i] != -100]
    mlm = -np.mean([log_softmax(s[b, i])[labels[b, i]] for b, i in targets])
    real = [(b, i) for b in range(B) for i in range(L) if attention_mask[b, i] == 1]
    cos_per_pair = []
    for si, ti in pairs:
        hs, ht = student.hidden_states[si].double().numpy(), teacher.hidden_states[ti].double().numpy()
        cos = [hs[b, i] @ ht[b, i] / np.linalg.norm(hs[b, i]) / np.linalg.norm(ht[b, i]) for b, i in real]
        cos_per_pair.append(np.mean([1 - c for c in cos]))
    return dict(loss_ce=kl / len(positions) * T ** 2, loss_mlm=mlm, loss_cos=float(np.mean(cos_per_pair)),
                loss_mse=mse / len(positions))


def test_terms_match_hand_computation():
    student, teacher, attention_mask, labels = outputs()
    got = distillation_loss(student, teacher, attention_mask, labels, alpha_mse=0.5)
    want = hand_terms(student, teacher, attention_mask, labels)
    for name, value in want.items():
        assert got[name].item() == pytest.approx(value, rel=1e-5), name
    total = 5.0 * want["loss_ce"] + 2.0 * want["loss_mlm"] + 1.0 * want["loss_cos"] + 0.5 * want["loss_mse"]
    assert got["loss"].item() == pytest.approx(total, rel=1e-5)


def test_padding_is_ignored():
    student, teacher, attention_mask, labels = outputs()
    before = distillation_loss(student, teacher, attention_mask, labels, alpha_mse=1.0)
    pad = attention_mask == 0
    student.logits[pad] = 100.0
    teacher.logits[pad] = -50.0
    student.hidden_states[-1][pad] = 3.0
    after = distillation_loss(student, teacher, attention_mask, labels, alpha_mse=1.0)
    for name in ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_mse"):
        assert after[name].item() == pytest.approx(before[name].item(), rel=1e-6), name


def test_ce_restricted_to_masked_tokens():
    student, teacher, attention_mask, labels = outputs()
    got = distillation_loss(student, teacher, attention_mask, labels, restrict_ce_to_mask=True, temperature=3.0)
    want = hand_terms(student, teacher, attention_mask, labels, T=3.0, only_masked=True)
    assert got["loss_ce"].item() == pytest.approx(want["loss_ce"], rel=1e-5)


def test_zero_alpha_terms_not_computed():
    student, teacher, attention_mask, labels = outputs()
    student.hidden_states = teacher.hidden_states = None  # would fail if the cosine term were computed
    got = distillation_loss(student, teacher, attention_mask, labels, alpha_ce=0.0, alpha_cos=0.0)
    assert got["loss_ce"] is None and got["loss_cos"] is None and got["loss_mse"] is None
    want = hand_terms(*outputs()[:2], attention_mask, labels)
    assert got["loss"].item() == pytest.approx(2.0 * want["loss_mlm"], rel=1e-5)
    with pytest.raises(ValueError, match="all 0"):
        distillation_loss(student, teacher, attention_mask, labels, alpha_ce=0, alpha_mlm=0, alpha_cos=0)


def test_cosine_on_mapped_layers():
    student, teacher, attention_mask, labels = outputs()
    pairs = [(1, 1), (2, 4)]
    got = distillation_loss(student, teacher, attention_mask, labels, alpha_ce=0, alpha_mlm=0, layer_map=pairs)
    want = hand_terms(student, teacher, attention_mask, labels, pairs=pairs)["loss_cos"]
    assert got["loss_cos"].item() == pytest.approx(want, rel=1e-5)
    assert got["loss"].item() == pytest.approx(got["loss_cos"].item())


def test_gradients_flow_with_inference_mode_teacher():
    student, teacher, attention_mask, labels = outputs()
    with torch.inference_mode():  # the teacher's outputs in training are inference tensors
        teacher = SimpleNamespace(logits=teacher.logits.clone(), hidden_states=tuple(h.clone() for h in teacher.hidden_states))
    logits = student.logits.clone().requires_grad_(True)
    hidden = student.hidden_states[-1].clone().requires_grad_(True)
    student = SimpleNamespace(logits=logits, hidden_states=(hidden,))
    distillation_loss(student, teacher, attention_mask, labels)["loss"].backward()
    assert logits.grad.abs().sum() > 0 and hidden.grad.abs().sum() > 0
    assert logits.grad[attention_mask == 0].abs().sum() == 0  # padding gets no gradient


def test_identical_outputs_give_zero_distillation_terms():
    student, _, attention_mask, labels = outputs()
    got = distillation_loss(student, student, attention_mask, labels, alpha_mse=1.0)
    assert abs(got["loss_ce"].item()) < 1e-6 and abs(got["loss_cos"].item()) < 1e-6 and got["loss_mse"].item() == 0


def test_chunked_kl_matches_autograd(monkeypatch):
    monkeypatch.setattr(losses, "KL_CHUNK_ROWS", 4)  # 11 rows: chunks of 4, 4 and 3
    g = torch.Generator().manual_seed(1)
    s_logits = (torch.randn(11, 9, generator=g) * 3).requires_grad_(True)
    t_logits = torch.randn(11, 9, generator=g) * 3
    weight = torch.randn((), generator=g)  # a grad_output other than 1
    (kl_divergence(s_logits, t_logits, 2.0) * weight).backward()
    s_plain = s_logits.detach().double().requires_grad_(True)
    plain = F.kl_div(F.log_softmax(s_plain / 2.0, dim=-1), F.log_softmax(t_logits.double() / 2.0, dim=-1),
                     reduction="sum", log_target=True)
    (plain * weight.double()).backward()
    assert kl_divergence(s_logits.detach(), t_logits, 2.0).item() == pytest.approx(plain.item(), rel=1e-6)
    assert torch.allclose(s_logits.grad.double(), s_plain.grad, rtol=1e-5, atol=1e-7)
    kl = kl_divergence(s_logits, t_logits, 2.0)
    kl.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):  # the gradient was scaled in place
        kl.backward()


def test_logits_of_used_rows_only_give_the_same_terms():
    student, teacher, attention_mask, labels = outputs()
    for options in (dict(alpha_mse=0.5), dict(restrict_ce_to_mask=True), dict(alpha_ce=0.0, alpha_cos=0.0)):
        rows = logit_rows(attention_mask, labels, **options)
        full = distillation_loss(student, teacher, attention_mask, labels, **options)
        used = distillation_loss(SimpleNamespace(logits=student.logits[rows], hidden_states=student.hidden_states),
                                 SimpleNamespace(logits=teacher.logits[rows], hidden_states=teacher.hidden_states),
                                 attention_mask, labels, **options)
        for name, value in full.items():
            assert (value is None) == (used[name] is None), (name, options)
            if value is not None:
                assert used[name].item() == pytest.approx(value.item(), rel=1e-6), (name, options)
    assert logit_rows(attention_mask, labels).tolist() == attention_mask.bool().tolist()  # padding never
    assert logit_rows(attention_mask, labels, alpha_ce=0.0).tolist() == (labels != -100).tolist()


def tiny_models(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=97, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, initializer_range=0.5)
    teacher = BertForMaskedLM(config).eval()
    # large weights (logits of std ~2) and a random student: near-uniform or equal distributions would leave a
    # KL of ~1e-4, float32 rounding between the two implementations
    return teacher, models.build_student(teacher, n_layers=2, random_init=True).train()


def tiny_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 97, (3, 12), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:], attention_mask[2, 5:] = 0, 0  # padding
    input_ids[attention_mask == 0] = 0
    labels = torch.full_like(input_ids, -100)
    targets = (torch.rand(input_ids.shape, generator=g) < 0.3) & attention_mask.bool()
    labels[targets] = input_ids[targets]
    input_ids[targets] = 4  # [MASK]
    return input_ids, attention_mask, labels


RECIPE = dict(alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0, alpha_mse=0.0, temperature=2.0, restrict_ce_to_mask=False)


@pytest.mark.parametrize("options, cos_layers", [
    (dict(), "last"),
    (dict(restrict_ce_to_mask=True, temperature=3.0), "last"),
    (dict(alpha_mse=0.5), "all"),
    (dict(alpha_ce=0.0, alpha_cos=0.0), "last"),  # MLM only: no teacher
    (dict(alpha_mlm=0.0, alpha_mse=1.0, restrict_ce_to_mask=True), "all"),
], ids=["recipe", "restrict-ce", "mse-cos-all", "mlm-only", "no-mlm-restrict"])
def test_training_step_matches_released_arithmetic(monkeypatch, options, cos_layers):
    """Same loss terms and the same gradient for every student parameter, padding included."""
    monkeypatch.setattr(losses, "KL_CHUNK_ROWS", 5)  # several chunks on a tiny batch
    teacher, student = tiny_models()
    weights = dict(RECIPE, **options)
    layer_map = models.layer_map(student, cos_layers)
    batch = tiny_batch()
    got, grads = {}, {}
    for name, forward in (("released", released_forward_losses), ("current", training.forward_losses)):
        student.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same dropout masks
        got[name] = forward(teacher, student, *batch, weights, layer_map)
        got[name]["loss"].backward()
        grads[name] = {k: p.grad.clone() for k, p in student.named_parameters() if p.grad is not None}
    for term, value in got["released"].items():
        assert (value is None) == (got["current"][term] is None), term
        if value is not None:
            assert got["current"][term].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7), term
    assert grads["current"].keys() == grads["released"].keys()
    # float32 rounding, relative to the largest gradient (some, like attention key biases, are zero up to rounding)
    scale = max(grad.abs().max() for grad in grads["released"].values())
    for k, grad in grads["released"].items():
        assert torch.allclose(grads["current"][k], grad, rtol=1e-5, atol=1e-6 * scale), k


def plain_step(monkeypatch, teacher, student, batch, weights, layer_map=None, scale=1.0):
    """forward_losses without the fused head (the logits materialised, the registry's ce and mlm): its terms and
    every student gradient; and the same with the fused head."""
    got = {}
    for fused in (False, True):
        monkeypatch.setattr(training, "fused_head", lambda *args, _fused=fused: _fused)
        student.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same dropout masks
        terms = training.forward_losses(teacher, student, *batch, weights, layer_map)
        (terms["loss"] * scale).backward()
        got[fused] = terms, {k: p.grad.clone() for k, p in student.named_parameters() if p.grad is not None}
    return got[False], got[True]


@pytest.mark.parametrize("options", [dict(), dict(restrict_ce_to_mask=True, temperature=3.0),
                                     dict(alpha_ce=0.0, alpha_cos=0.0), dict(alpha_mlm=0.0)],
                         ids=["recipe", "restrict-ce", "mlm-only", "no-mlm"])
def test_fused_head_gives_the_plain_losses_and_gradients(monkeypatch, options):
    """The fused head (logits, L_ce, L_mlm and their gradients in chunks) against the same step with the logits
    materialised: every term and every student gradient (the tied decoder weight and its bias included), with a
    grad_output other than 1 (as GradScaler or gradient accumulation give it)."""
    monkeypatch.setattr(losses, "FUSED_CHUNK_ROWS", 5)  # several chunks, the last one short
    teacher, student = tiny_models()
    (plain, plain_grads), (fused, fused_grads) = plain_step(monkeypatch, teacher, student, tiny_batch(),
                                                            dict(RECIPE, **options), scale=0.37)
    for term, value in plain.items():
        assert (value is None) == (fused[term] is None), term
        if value is not None:
            torch.testing.assert_close(fused[term], value.detach(), rtol=1e-5, atol=1e-6, msg=term)
    assert fused_grads.keys() == plain_grads.keys()
    assert "vocab_projector.bias" in fused_grads
    scale = max(grad.abs().max() for grad in plain_grads.values())
    for k, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[k], grad, rtol=1e-5, atol=1e-6 * scale, msg=k)


def test_fused_head_runs_in_float32_and_for_the_terms_it_serves_only():
    teacher, student = tiny_models()
    settings = losses.loss_settings(**RECIPE)
    assert training.fused_head(teacher, student, settings, torch.float32)
    assert not training.fused_head(teacher, student, settings, torch.bfloat16)  # autocast's logits: the plain path
    assert not training.fused_head(teacher, student, losses.loss_settings(alpha_mse=0.5), torch.float32)
    assert not training.fused_head(teacher, student, losses.loss_settings(alpha_ce=0, alpha_mlm=0), torch.float32)


def test_fused_vocab_losses_match_float64_autograd(monkeypatch):
    """The fused function itself: KL rows that leave some rows out, a chunk without a target, a bias; its sums and
    gradients against autograd in float64; one backward pass only."""
    monkeypatch.setattr(losses, "FUSED_CHUNK_ROWS", 4)  # 10 rows: chunks of 4, 4 and 2
    g = torch.Generator().manual_seed(2)
    n, d, vocab, T = 10, 6, 11, 2.5
    s_hidden, s_weight, s_bias = (torch.randn(*shape, generator=g) for shape in ((n, d), (vocab, d), (vocab,)))
    t_hidden, t_weight, t_bias = (torch.randn(*shape, generator=g) for shape in ((n, d), (vocab, d), (vocab,)))
    targets = torch.tensor([3, -100, -100, 7, -100, -100, -100, -100, 0, 10])  # none in rows 4..7
    kl_rows = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    w_ce, w_mlm = 0.7, 0.3
    leaves = [t.clone().requires_grad_(True) for t in (s_hidden, s_weight, s_bias)]
    weighted, kl_sum, ce_sum = losses._FusedVocabLosses.apply(*leaves, t_hidden, t_weight, t_bias, targets, kl_rows,
                                                              T, w_ce, w_mlm)
    (weighted * 1.5).backward()
    ref = [t.double().requires_grad_(True) for t in (s_hidden, s_weight, s_bias)]
    s = ref[0] @ ref[1].T + ref[2]
    t = t_hidden.double() @ t_weight.double().T + t_bias.double()
    kl = F.kl_div(F.log_softmax(s[kl_rows] / T, -1), F.log_softmax(t[kl_rows] / T, -1), reduction="sum",
                  log_target=True)
    ce = F.cross_entropy(s, targets, reduction="sum", ignore_index=-100)
    ((w_ce * kl + w_mlm * ce) * 1.5).backward()
    torch.testing.assert_close(kl_sum.double(), kl.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ce_sum.double(), ce.detach(), rtol=1e-5, atol=1e-6)
    assert not kl_sum.requires_grad and not ce_sum.requires_grad
    for got, want in zip(leaves, ref):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="one backward pass"):
        weighted.backward()
