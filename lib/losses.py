"""The triple distillation loss: alpha_ce * L_ce + alpha_mlm * L_mlm + alpha_cos * L_cos (+ alpha_mse * L_mse).

As in the authors' distiller.py: L_ce is KL(teacher/T || student/T) * T^2 averaged per token ("batchmean" over
the selected tokens: every non-padding token, CLS/SEP included, or the masked ones only), L_mlm the
cross-entropy on masked tokens, L_cos the cosine embedding loss (target +1) between last hidden states over
non-padding tokens, L_mse the squared error of the logits summed over the vocabulary and averaged per token.
A term whose alpha is 0 is not computed (None in the result). Everything is computed in float32.
"""
import torch
import torch.nn.functional as F


def distillation_loss(student_out, teacher_out, attention_mask, labels, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0,
                      alpha_mse=0.0, temperature=2.0, restrict_ce_to_mask=False, layer_map=None):
    """Weighted loss and its terms from two model outputs (``.logits``; ``.hidden_states`` when alpha_cos > 0).

    attention_mask: (batch, seq) 1 for real tokens; labels: (batch, seq) target ids at masked positions, -100
    elsewhere. layer_map: (student index, teacher index) pairs into ``hidden_states`` for the cosine term,
    averaged over pairs; None: the last hidden states only. Returns dict(loss, loss_ce, loss_mlm, loss_cos,
    loss_mse) of scalar tensors (None for terms with alpha 0).
    """
    tokens = attention_mask.bool()
    masked = labels != -100
    terms = dict(loss_ce=None, loss_mlm=None, loss_cos=None, loss_mse=None)

    if alpha_ce > 0 or alpha_mse > 0 or alpha_mlm > 0:
        s_logits_all = student_out.logits.float()  # one float32 copy, shared by the terms below
    if alpha_ce > 0 or alpha_mse > 0:
        select = masked if restrict_ce_to_mask else tokens
        s_logits = s_logits_all[select]  # (n_tokens, vocab)
        t_logits = teacher_out.logits[select].float()
        n = max(s_logits.size(0), 1)
        if alpha_ce > 0:
            kl = F.kl_div(F.log_softmax(s_logits / temperature, dim=-1), F.log_softmax(t_logits / temperature, dim=-1),
                          reduction="sum", log_target=True)
            terms["loss_ce"] = kl / n * temperature ** 2
        if alpha_mse > 0:
            terms["loss_mse"] = F.mse_loss(s_logits, t_logits, reduction="sum") / n

    if alpha_mlm > 0:
        if masked.any():  # the targets only: same mean as ignore_index=-100, without a full-size log_softmax
            terms["loss_mlm"] = F.cross_entropy(s_logits_all[masked], labels[masked])
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
