"""The distillation loss as a registry of terms: alpha_ce * L_ce + alpha_mlm * L_mlm + alpha_cos * L_cos
(+ alpha_mse * L_mse), each term one ``LossTerm`` in ``TERMS``.

As in the authors' distiller.py: L_ce is KL(teacher/T || student/T) * T^2 averaged per token ("batchmean" over
the selected tokens: every non-padding token, CLS/SEP included, or the masked ones only), L_mlm the
cross-entropy on masked tokens, L_cos the cosine embedding loss (target +1) between last hidden states over
non-padding tokens, L_mse the squared error of the logits summed over the vocabulary and averaged per token.
A term whose weight is 0 is not computed (None in the result). Everything is computed in float32.

Everything that lists terms derives from ``TERMS``: the log fields (``log_fields``), which model outputs a step
computes (``needed_outputs``, ``logit_rows``), the plots' curves and the results' loss curve. Adding a term is one
function of a ``LossBatch`` and one ``register`` call; its weight is the DistillParams field alpha_<name> when
there is one (add it to lib/config.py to make the weight a stage parameter), else the term's default.

Speed (the same arithmetic, fewer passes over vocabulary-sized tensors): the logits may come for the rows that
logit_rows selects only, so that padding rows never reach the vocabulary projection, and the KL is one chunked
pass (kl_divergence) instead of autograd's chain of full-size softmaxes, differences and their gradients. In
float32 (lib.training.forward_losses) the logits do not even exist: the models' outputs carry VocabHeads (the
projection's input, weight and bias) and L_ce and L_mlm come with their gradients from one chunked pass
(fused_head_losses), the vocabulary projections included (issue 23).
Measured on 2 CPU cores at the cpu profile's shapes: see benchmarks/distill_throughput.py.
"""
import dataclasses
import typing
from functools import cached_property

import torch
import torch.nn.functional as F

from lib.config import ParameterError

KL_CHUNK_ROWS = 256  # 256 x 30,522 float32 logits = 31 MB per buffer: memory stays bounded, the chunks few
# what a term may read from the two forward passes; the passes compute only what the terms in use need
OUTPUTS = ("student logits", "teacher logits", "student hidden", "teacher hidden")


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


# ------------------------------------------------------------------------------------------------ the fused head

FUSED_CHUNK_ROWS = 256  # rows of logits per chunk of the fused head: 3 buffers of 256 x 30,522 float32 = 94 MB
FUSED_TERMS = frozenset({"ce", "mlm"})  # the terms that can read their logits from a VocabHead


class VocabHead(typing.NamedTuple):
    """A masked-LM head stopped before its vocabulary projection: the projection's input (the rows logit_rows
    selects, (n_rows, dim); or (batch, seq, dim)), weight (vocab, dim) and bias. Given as a model output's
    ``logits``, the loss computes the logits itself, chunk by chunk (fused_head_losses)."""
    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None


def _chunk_logits(hidden, weight, bias, out):
    """hidden @ weight.T + bias into ``out``: what the model's nn.Linear computes, for a chunk of rows."""
    if bias is None:
        return torch.mm(hidden, weight.t(), out=out)
    return torch.addmm(bias, hidden, weight.t(), out=out)


class _FusedVocabLosses(torch.autograd.Function):
    """w_ce * sum of KL(softmax(t/T) || softmax(s/T)) over the kl_rows + w_mlm * sum of the cross-entropy of s on
    the targets (-100: none), with s = s_hidden @ s_weight.T + s_bias and t the teacher's alike, and the
    gradients w.r.t. s_hidden, s_weight and s_bias; all in one pass over chunks of rows, in three reused
    (chunk, vocab) buffers: neither model's full logits, nor their softmaxes, nor their gradient are ever
    materialised (issue 23). The weights are known before the backward pass (alpha_ce, alpha_mlm, the row counts),
    so the forward pass computes the gradients, and the backward pass only scales them. Also returns the two sums,
    unweighted and not differentiable, for the log."""

    @staticmethod
    def forward(ctx, s_hidden, s_weight, s_bias, t_hidden, t_weight, t_bias, targets, kl_rows, temperature, w_ce,
                w_mlm):
        n, vocab = s_hidden.size(0), s_weight.size(0)
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        chunk = max(1, min(FUSED_CHUNK_ROWS, n))
        logits, log_p_s, scratch = (s_hidden.new_empty(chunk, vocab) for _ in range(3))
        grad_hidden = torch.empty_like(s_hidden) if need_hidden else None
        grad_weight = torch.zeros_like(s_weight) if need_weight else None
        grad_bias = torch.zeros_like(s_bias) if need_bias else None
        kl_sum, ce_sum = s_hidden.new_zeros(()), s_hidden.new_zeros(())
        # per row: the KL's gradient scale (0 off the kl_rows)
        kl_scale = kl_rows.to(s_hidden.dtype) * (w_ce / temperature)
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            m = rows.stop - start
            s, grad = logits[:m], log_p_s[:m]  # the gradient of the chunk ends in log_p_s's buffer
            _chunk_logits(s_hidden[rows], s_weight, s_bias, s)
            mlm_rows, mlm_grad = None, None
            if w_mlm:
                ce_part, mlm_rows, mlm_grad = _cross_entropy_part(s, targets[rows], w_mlm)
                ce_sum += ce_part
            if w_ce:
                kl_sum += _kl_part(s, t_hidden[rows], t_weight, t_bias, temperature, kl_rows[rows],
                                   kl_scale[rows], grad, scratch[:m])
            else:
                grad.zero_()
            if mlm_rows is not None:  # row by row: index_add_ on CPU took 100x as long (a serial scatter)
                for row, row_grad in zip(mlm_rows.tolist(), mlm_grad):
                    grad[row].add_(row_grad)
            if need_hidden:
                torch.mm(grad, s_weight, out=grad_hidden[rows])
            if need_weight:
                grad_weight.addmm_(grad.t(), s_hidden[rows])
            if need_bias:
                grad_bias += grad.sum(0)
        ctx.grads = (grad_hidden, grad_weight, grad_bias)  # not save_for_backward: backward scales them in place
        ctx.mark_non_differentiable(kl_sum, ce_sum)
        return kl_sum * w_ce + ce_sum * w_mlm, kl_sum, ce_sum

    @staticmethod
    def backward(ctx, grad_output, _kl_grad, _ce_grad):
        if ctx.grads is None:
            raise RuntimeError("the fused head supports one backward pass only (its gradients are scaled in place)")
        grads, ctx.grads = ctx.grads, None
        if not torch.equal(grad_output, torch.ones_like(grad_output)):  # 1 in fp32 training: skip a pass
            grads = tuple(None if g is None else g.mul_(grad_output) for g in grads)
        return (*grads, None, None, None, None, None, None, None, None)


def _cross_entropy_part(s, targets, w_mlm):
    """The chunk's summed cross-entropy on its target rows, those rows' indices in the chunk, and their gradient
    w_mlm * (softmax(s) - onehot)."""
    rows = (targets != -100).nonzero().squeeze(1)
    if rows.numel() == 0:
        return 0.0, None, None
    labels = targets[rows]
    log_p = torch.log_softmax(s[rows], dim=-1)
    ce = -log_p.gather(1, labels.unsqueeze(1)).sum()
    grad = log_p.exp_()
    grad[torch.arange(rows.numel(), device=s.device), labels] -= 1
    return ce, rows, grad.mul_(w_mlm)


def _kl_part(s, t_hidden, t_weight, t_bias, temperature, kl_rows, kl_scale, grad, scratch):
    """The chunk's KL(teacher/T || student/T) summed over its kl_rows, as kl_divergence computes it; its gradient
    (softmax(s/T) - softmax(t/T)) * w_ce / T into ``grad``. ``s`` (the student's logits) is overwritten."""
    log_p_s = grad
    torch.log_softmax(s.div_(temperature), dim=-1, out=log_p_s)
    t = _chunk_logits(t_hidden, t_weight, t_bias, s)  # the student's logits are no longer needed
    log_p_t = torch.log_softmax(t.div_(temperature), dim=-1, out=scratch)
    p_t = torch.exp(log_p_t, out=s)
    per_row = log_p_t.sub_(log_p_s).mul_(p_t).sum(-1)  # p_t * (log p_t - log p_s)
    kl = per_row.sum() if kl_rows.all() else per_row[kl_rows].sum()
    log_p_s.exp_().sub_(p_t).mul_(kl_scale.unsqueeze(1))
    return kl


# ------------------------------------------------------------------------------------------------ the registry

@dataclasses.dataclass(frozen=True)
class LossTerm:
    """One term of the loss: ``weight * fn(batch)`` joins the total when its weight is > 0.

    name "ce" is logged as loss_ce and weighted by alpha_ce. fn: a function of a LossBatch returning a scalar
    tensor. needs: the OUTPUTS that fn reads. rows: for a term reading logits, the (batch, seq) positions it
    reads, a function of (attention_mask, labels, settings). options: the other settings fn reads (DistillParams
    fields) with their defaults. label: its symbol in the plots. check: called with (student, teacher) before a
    run; raises a ParameterError for models the term cannot compare."""
    name: str
    fn: typing.Callable
    default: float
    needs: frozenset
    rows: typing.Callable | None = None
    options: dict = dataclasses.field(default_factory=dict)
    label: str = ""
    check: typing.Callable | None = None

    @property
    def weight(self):
        return f"alpha_{self.name}"

    @property
    def field(self):
        return f"loss_{self.name}"


TERMS = {}  # name -> LossTerm, in the order of the log fields and of the weighted sum


def register(term):
    """Add (or replace) a term of the loss; returns it."""
    unknown = set(term.needs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"loss term {term.name!r} needs unknown outputs {sorted(unknown)}; known: {OUTPUTS}")
    TERMS[term.name] = term
    return term


def log_fields():
    """What a distillation log record may hold: the weighted total, then each term unweighted."""
    return ("loss", *(term.field for term in TERMS.values()))


def weight_name(field):
    """The weight of a log field: loss_ce -> alpha_ce."""
    return "alpha_" + field.removeprefix("loss_")


def loss_settings(params=None, **given):
    """Every term's weight (alpha_<name>) and options (e.g. temperature): ``given``, else the field of ``params``
    (a DistillParams) of that name, else the term's default."""
    settings = {}
    for term in TERMS.values():
        settings[term.weight] = getattr(params, term.weight, term.default)
        settings.update({k: getattr(params, k, default) for k, default in term.options.items()})
    unknown = set(given) - set(settings)
    if unknown:
        raise TypeError(f"unknown loss settings {sorted(unknown)}; known: {sorted(settings)}")
    return {**settings, **given}


def active_terms(settings):
    """The terms with a weight > 0 (a settings dict from loss_settings)."""
    return [term for term in TERMS.values() if settings[term.weight] > 0]


def needed_outputs(settings):
    """The OUTPUTS the terms in use read: a forward pass computes nothing else."""
    return set().union(*(term.needs for term in active_terms(settings)))


def check_models(settings, student, teacher):
    """Refuse, before a run, models that a term in use cannot compare (e.g. L_cos on unequal widths)."""
    for term in active_terms(settings):
        if term.check is not None:
            term.check(student, teacher)


def logit_rows(attention_mask, labels, **given):
    """(batch, seq) bool: the positions whose logits some term needs. L_ce and L_mse need every real token (or the
    masked ones only), L_mlm the masked ones; padding never."""
    settings = loss_settings(**given)
    rows = labels != -100  # always the masked ones: the rows of a batch whose terms read no logits
    for term in active_terms(settings):
        if term.rows is not None:
            rows = rows | term.rows(attention_mask, labels, settings)
    return rows


class LossBatch:
    """What the terms read from one batch: both models' outputs (``.logits``: (batch, seq, vocab), or (n_rows,
    vocab) for the rows logit_rows selects only, in order; ``.hidden_states``), the masks and the settings. A
    derived tensor is computed once, on first use, and shared: one float32 copy of the logit rows for all terms."""

    def __init__(self, student_out, teacher_out, attention_mask, labels, settings, layer_map=None):
        self.student, self.teacher, self.labels = student_out, teacher_out, labels
        self.attention_mask, self.tokens = attention_mask, attention_mask.bool()
        self.settings, self.layer_map = settings, layer_map
        self.rows = logit_rows(attention_mask, labels, **settings)

    def row_logits(self, logits):
        return (logits[self.rows] if logits.dim() == 3 else logits).float()

    @cached_property
    def student_logits(self):  # (n_rows, vocab), float32
        return self.row_logits(self.student.logits)

    @cached_property
    def row_labels(self):
        return self.labels[self.rows]

    @cached_property
    def distill_pair(self):
        """(student, teacher) float32 logits of L_ce's and L_mse's tokens, row for row."""
        select = distill_rows(self.attention_mask, self.labels, self.settings)[self.rows]
        s_logits, t_logits = self.student_logits, self.row_logits(self.teacher.logits)
        if not select.all():  # only when labels sit on padding: every row is a selected token otherwise
            s_logits, t_logits = s_logits[select], t_logits[select]
        return s_logits, t_logits


# ------------------------------------------------------------------------------------------------ the terms

def masked_rows(attention_mask, labels, settings):
    return labels != -100


def distill_rows(attention_mask, labels, settings):
    """L_ce's and L_mse's tokens: every real one (the release), or the masked ones only."""
    return labels != -100 if settings["restrict_ce_to_mask"] else attention_mask.bool()


def ce(batch):
    """L_ce: T^2 * KL(teacher/T || student/T), averaged per selected token."""
    s_logits, t_logits = batch.distill_pair
    temperature = batch.settings["temperature"]
    return kl_divergence(s_logits, t_logits, temperature) / max(s_logits.size(0), 1) * temperature ** 2


def mlm(batch):
    """L_mlm: cross-entropy of the student on the masked tokens."""
    logits, targets = batch.student_logits, batch.row_labels != -100
    if not targets.any():  # no target in this batch: a zero that still belongs to the graph
        return logits.sum() * 0.0
    # the targets only: same mean as ignore_index=-100, without a full-size log_softmax
    return F.cross_entropy(logits if targets.all() else logits[targets], batch.row_labels[targets])


def cos(batch):
    """L_cos: cosine embedding loss (target +1) of student and teacher hidden states on real tokens, averaged
    over the layer_map's (student, teacher) pairs (None: the last hidden states only)."""
    losses = []
    for s_index, t_index in batch.layer_map or [(-1, -1)]:
        s_hidden = batch.student.hidden_states[s_index][batch.tokens].float()  # (n_tokens, dim)
        t_hidden = batch.teacher.hidden_states[t_index][batch.tokens].float()
        if s_hidden.shape != t_hidden.shape:
            raise ValueError(f"alpha_cos > 0 needs equal hidden sizes: student {s_hidden.size(-1)}, "
                             f"teacher {t_hidden.size(-1)}")
        target = s_hidden.new_ones(s_hidden.size(0))
        losses.append(F.cosine_embedding_loss(s_hidden, t_hidden, target, reduction="mean"))
    return torch.stack(losses).mean()


def same_width(student, teacher):
    s_width, t_width = student.config.hidden_size, teacher.config.hidden_size  # DistilBERT's dim, by its alias
    if s_width != t_width:
        raise ParameterError("alpha_cos", f"the cosine loss needs equal widths: student {s_width}, teacher {t_width}")


def mse(batch):
    """L_mse (extension): squared error of the logits, summed over the vocabulary, averaged per selected token."""
    s_logits, t_logits = batch.distill_pair
    # not F.mse_loss: it would save the teacher's logits (an inference tensor) for the backward pass
    return (s_logits - t_logits).square().sum() / max(s_logits.size(0), 1)


LOGITS, HIDDEN = frozenset({"student logits", "teacher logits"}), frozenset({"student hidden", "teacher hidden"})
register(LossTerm("ce", ce, 5.0, LOGITS, rows=distill_rows, label="L_ce = T\u00b2\u00b7KL",
                  options=dict(temperature=2.0, restrict_ce_to_mask=False)))
register(LossTerm("mlm", mlm, 2.0, frozenset({"student logits"}), rows=masked_rows, label="L_mlm"))
register(LossTerm("cos", cos, 1.0, HIDDEN, label="L_cos", check=same_width))
register(LossTerm("mse", mse, 0.0, LOGITS, rows=distill_rows, label="L_mse", options=dict(restrict_ce_to_mask=False)))


def fusable(settings):
    """Whether every term in use that reads logits can read them from VocabHeads (fused_head_losses)."""
    return all(term.name in FUSED_TERMS for term in active_terms(settings) if term.needs & LOGITS)


def fused_head_losses(batch, terms):
    """{} unless the student's logits come as a VocabHead (then the teacher's too, when L_ce is on). Else L_ce and
    L_mlm from one chunked pass over the vocabulary (_FusedVocabLosses): {"weighted": alpha_ce * L_ce + alpha_mlm *
    L_mlm, differentiable, and loss_ce, loss_mlm: the same values as ce() and mlm(), for the log only}."""
    if not isinstance(batch.student.logits, VocabHead):
        return {}
    names = {term.name for term in terms if term.needs & LOGITS}
    if not names <= FUSED_TERMS:
        raise ValueError(f"logits given as a VocabHead serve {sorted(FUSED_TERMS)} only, not "
                         f"{sorted(names - FUSED_TERMS)}")
    settings, temperature = batch.settings, batch.settings["temperature"]
    student, teacher = batch.student.logits, batch.teacher.logits if "ce" in names else None
    kl_rows = distill_rows(batch.attention_mask, batch.labels, settings)[batch.rows]
    targets = batch.row_labels if "mlm" in names else torch.full_like(batch.row_labels, -100)
    n_kl, n_targets = int(kl_rows.sum()), int((targets != -100).sum())
    w_ce = settings["alpha_ce"] * temperature ** 2 / max(n_kl, 1) if "ce" in names else 0.0
    w_mlm = settings["alpha_mlm"] / n_targets if n_targets else 0.0
    rows_of = lambda head: head.hidden[batch.rows] if head.hidden.dim() == 3 else head.hidden  # noqa: E731
    t_args = (rows_of(teacher), teacher.weight, teacher.bias) if teacher is not None else (None, None, None)
    weighted, kl_sum, ce_sum = _FusedVocabLosses.apply(rows_of(student), student.weight, student.bias, *t_args,
                                                       targets, kl_rows, temperature, w_ce, w_mlm)
    values = dict(weighted=weighted)
    if "ce" in names:
        values["loss_ce"] = kl_sum / max(n_kl, 1) * temperature ** 2
    if "mlm" in names:
        values["loss_mlm"] = ce_sum / max(n_targets, 1)  # 0 without a target, as mlm()
    return values


def distillation_loss(student_out, teacher_out, attention_mask, labels, layer_map=None, **given):
    """Weighted loss and its terms from two model outputs (see LossBatch); ``given``: weights and options
    (loss_settings: alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0, alpha_mse=0.0, temperature=2.0,
    restrict_ce_to_mask=False unless given). attention_mask: (batch, seq) 1 for real tokens; labels: (batch, seq)
    target ids at masked positions, -100 elsewhere. layer_map: L_cos's (student, teacher) hidden-state pairs.
    Returns dict(loss, loss_<name> for each term) of scalar tensors (None for terms with weight 0)."""
    settings = loss_settings(**given)
    terms = active_terms(settings)
    if not terms:
        raise ValueError(f"{', '.join(t.weight for t in TERMS.values())} are all 0: no loss to compute")
    batch = LossBatch(student_out, teacher_out, attention_mask, labels, settings, layer_map)
    fused = fused_head_losses(batch, terms)  # L_ce and L_mlm, when the logits come as VocabHeads
    values = {term.field: fused[term.field] if term.field in fused else term.fn(batch) for term in terms}
    weighted = [settings[term.weight] * values[term.field] for term in terms if term.field not in fused]
    total = torch.stack(weighted + ([fused["weighted"]] if fused else [])).sum()
    return dict(loss=total, **{term.field: values.get(term.field) for term in TERMS.values()})
