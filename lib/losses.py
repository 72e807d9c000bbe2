"""The triple distillation loss: alpha_ce * L_ce + alpha_mlm * L_mlm + alpha_cos * L_cos (+ alpha_mse * L_mse).

As in the authors' distiller.py: L_ce is KL(teacher/T || student/T) * T^2 averaged per token ("batchmean" over
the selected tokens: every non-padding token, CLS/SEP included, or the masked ones only), L_mlm the
cross-entropy on masked tokens, L_cos the cosine embedding loss (target +1) between last hidden states over
non-padding tokens, L_mse the squared error of the logits summed over the vocabulary and averaged per token.
A term whose alpha is 0 is not computed (None in the result). Everything is computed in float32.

Speed (the same arithmetic, fewer passes over vocabulary-sized tensors): the logits may come for the rows that
logit_rows selects only, so that padding rows never reach the vocabulary projection, and the KL is one chunked
pass (kl_divergence) instead of autograd's chain of full-size softmaxes, differences and their gradients.
Measured on 2 CPU cores at the cpu profile's shapes: see benchmarks/distill_throughput.py.
"""
import torch
import torch.nn.functional as F

KL_CHUNK_ROWS = 256  # 256 x 30,522 float32 logits = 31 MB per buffer: memory stays bounded, the chunks few


class _KLDivergence(torch.autograd.Function):
    """sum over rows of KL(softmax(t/T) || softmax(s/T)) and its gradient (softmax(s/T) - softmax(t/T)) / T,
    both from one pass over row chunks, in three reused buffers. Autograd would allocate and keep every full-size
    intermediate (log_softmax, exp, difference, product, their gradients); fresh allocations of hundreds of MB
    cost page faults on CPU, of the order of the arithmetic itself. This keeps the gradient only."""

    @staticmethod
    def forward(ctx, s_logits, t_logits, temperature):
        n, vocab = s_logits.shape
        grad = torch.empty((n, vocab), dtype=torch.float32, device=s_logits.device)
        chunk = max(1, min(KL_CHUNK_ROWS, n))
        log_p_s, log_p_t, scratch = (grad.new_empty(chunk, vocab) for _ in range(3))
        total = grad.new_zeros(())
        for start in range(0, n, chunk):
            rows, m = slice(start, start + chunk), min(chunk, n - start)
            a, b, p_t = log_p_s[:m], log_p_t[:m], scratch[:m]
            torch.log_softmax(torch.div(s_logits[rows].float(), temperature, out=p_t), dim=-1, out=a)
            torch.log_softmax(torch.div(t_logits[rows].float(), temperature, out=p_t), dim=-1, out=b)
            torch.exp(b, out=p_t)
            total += b.sub_(a).mul_(p_t).sum()  # p_t * (log p_t - log p_s)
            torch.exp(a, out=grad[rows]).sub_(p_t).div_(temperature)
        ctx.grad = grad  # not save_for_backward: backward scales it in place, once
        return total

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.grad is None:
            raise RuntimeError("kl_divergence supports one backward pass only (its gradient is scaled in place)")
        grad, ctx.grad = ctx.grad, None
        return grad.mul_(grad_output), None, None


def kl_divergence(s_logits, t_logits, temperature):
    """sum over rows of KL(softmax(t_logits / T) || softmax(s_logits / T)), differentiable in s_logits only
    (the teacher's logits are constants, inference tensors included)."""
    return _KLDivergence.apply(s_logits, t_logits, temperature)


def logit_rows(attention_mask, labels, alpha_ce=5.0, alpha_mse=0.0, restrict_ce_to_mask=False, **_):
    """(batch, seq) bool: the positions whose logits some term needs. L_ce and L_mse need every real token (or the
    masked ones only), L_mlm the masked ones; padding never (extra keywords, the other weights, are ignored)."""
    masked = labels != -100
    if (alpha_ce > 0 or alpha_mse > 0) and not restrict_ce_to_mask:
        return attention_mask.bool() | masked
    return masked


def distillation_loss(student_out, teacher_out, attention_mask, labels, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0,
                      alpha_mse=0.0, temperature=2.0, restrict_ce_to_mask=False, layer_map=None):
    """Weighted loss and its terms from two model outputs (``.logits``; ``.hidden_states`` when alpha_cos > 0).

    logits: (batch, seq, vocab), or (n_rows, vocab) for the rows ``logit_rows`` selects only, in order (the
    student's may be None when alpha_ce = alpha_mse = alpha_mlm = 0, the teacher's when alpha_ce = alpha_mse = 0).
    attention_mask: (batch, seq) 1 for real tokens; labels: (batch, seq) target ids at masked positions, -100
    elsewhere. layer_map: (student index, teacher index) pairs into ``hidden_states`` for the cosine term,
    averaged over pairs; None: the last hidden states only. Returns dict(loss, loss_ce, loss_mlm, loss_cos,
    loss_mse) of scalar tensors (None for terms with alpha 0).
    """
    tokens = attention_mask.bool()
    rows = logit_rows(attention_mask, labels, alpha_ce, alpha_mse, restrict_ce_to_mask)
    terms = dict(loss_ce=None, loss_mlm=None, loss_cos=None, loss_mse=None)

    def row_logits(logits):  # one float32 copy of the rows, shared by the terms below
        return (logits[rows] if logits.dim() == 3 else logits).float()

    if alpha_ce > 0 or alpha_mse > 0 or alpha_mlm > 0:
        s_logits_all = row_logits(student_out.logits)  # (n_rows, vocab)
        row_labels = labels[rows]
    if alpha_ce > 0 or alpha_mse > 0:
        select = (row_labels != -100) if restrict_ce_to_mask else tokens[rows]
        s_logits, t_logits = s_logits_all, row_logits(teacher_out.logits)
        if not select.all():  # only when labels sit on padding: every row is a selected token otherwise
            s_logits, t_logits = s_logits[select], t_logits[select]
        n = max(s_logits.size(0), 1)
        if alpha_ce > 0:
            terms["loss_ce"] = kl_divergence(s_logits, t_logits, temperature) / n * temperature ** 2
        if alpha_mse > 0:
            # not F.mse_loss: it would save the teacher's logits (an inference tensor) for the backward pass
            terms["loss_mse"] = (s_logits - t_logits).square().sum() / n

    if alpha_mlm > 0:
        targets = row_labels != -100
        if targets.any():  # the targets only: same mean as ignore_index=-100, without a full-size log_softmax
            logits = s_logits_all if targets.all() else s_logits_all[targets]
            terms["loss_mlm"] = F.cross_entropy(logits, row_labels[targets])
        else:  # no target in this batch: a zero that still belongs to the graph
            terms["loss_mlm"] = s_logits_all.sum() * 0.0

    if alpha_cos > 0:
        pairs = layer_map or [(-1, -1)]
        losses = []
        for s_index, t_index in pairs:
            s_hidden = student_out.hidden_states[s_index][tokens].float()  # (n_tokens, dim)
            t_hidden = teacher_out.hidden_states[t_index][tokens].float()
            if s_hidden.shape != t_hidden.shape:
                raise ValueError(f"alpha_cos > 0 needs equal hidden sizes: student {s_hidden.size(-1)}, "
                                 f"teacher {t_hidden.size(-1)}")
            target = s_hidden.new_ones(s_hidden.size(0))
            losses.append(F.cosine_embedding_loss(s_hidden, t_hidden, target, reduction="mean"))
        terms["loss_cos"] = torch.stack(losses).mean()

    alphas = dict(loss_ce=alpha_ce, loss_mlm=alpha_mlm, loss_cos=alpha_cos, loss_mse=alpha_mse)
    parts = [alphas[name] * value for name, value in terms.items() if value is not None]
    if not parts:
        raise ValueError("alpha_ce, alpha_mlm, alpha_cos and alpha_mse are all 0: no loss to compute")
    return dict(loss=torch.stack(parts).sum(), **terms)
