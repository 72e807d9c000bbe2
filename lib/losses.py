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
pass (kl_divergence) instead of autograd's chain of full-size softmaxes, differences and their gradients.
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
    values = {term.field: term.fn(batch) for term in terms}
    total = torch.stack([settings[term.weight] * values[term.field] for term in terms]).sum()
    return dict(loss=total, **{term.field: values.get(term.field) for term in TERMS.values()})
