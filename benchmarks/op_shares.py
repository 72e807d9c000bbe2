"""Where a training step's time goes: torch.profiler's per-operator self time over some steps, summed into a few
kinds of work, each as a share of the total. Used by distill_throughput.py and finetune_throughput.py (--profile)
to say what stands between a step and the matmul peak.

The kinds, first match wins (by the ATen operator's name):
- matmul: mm, addmm, bmm, baddbmm and the fused attention kernels;
- softmax: (log-)softmax forward and backward, exp (the vocabulary passes of the distillation head);
- optimizer: the fused AdamW kernel and the foreach/plain AdamW ops, gradient clipping's norms;
- dropout rng: bernoulli_ (the dropout masks; CPU draws them one number at a time);
- zero fill: fill_ / zero_ (new gradient buffers: the word-embedding gradient is vocab x hidden);
- copy: copy_ (dtype casts, contiguous copies);
- other: everything else (element-wise ops, layer norm, GELU, indexing, Python-side overhead).
"""
import contextlib

KINDS = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product",
                "aten::_flash_attention")),
    ("softmax", ("aten::_log_softmax", "aten::_softmax", "aten::_log_softmax_backward_data",
                 "aten::_softmax_backward_data", "aten::exp")),
    ("optimizer", ("aten::_fused_adamw", "aten::_foreach_", "aten::linalg_vector_norm", "aten::norm")),
    ("dropout rng", ("aten::bernoulli",)),
    ("zero fill", ("aten::fill_", "aten::zero_")),
    ("copy", ("aten::copy_",)),
)
OTHER = "other"


def kind(op_name):
    """The kind of work of an ATen operator's name (see the module's list); OTHER when none matches."""
    for label, prefixes in KINDS:
        if op_name.startswith(prefixes):
            return label
    return OTHER


def shares(self_ms_by_op):
    """{kind: (milliseconds, share of the total)} from {operator name: self milliseconds}, every kind listed (0
    when absent), in the module's order with OTHER last."""
    totals = {label: 0.0 for label, _ in KINDS} | {OTHER: 0.0}
    for name, ms in self_ms_by_op.items():
        totals[kind(name)] += ms
    whole = sum(totals.values()) or 1.0
    return {label: (ms, ms / whole) for label, ms in totals.items()}


@contextlib.contextmanager
def profiled():
    """Profile the CPU work of the block; yields a dict that, on exit, holds {operator name: self ms}."""
    from torch.profiler import ProfilerActivity, profile
    found = {}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        yield found
    found.update({event.key: event.self_cpu_time_total / 1000 for event in prof.key_averages()})


def print_shares(title, by_kind, steps):
    """One line per kind: milliseconds per step and share of the profiled self time."""
    print(f"  {title}: self time per step over {steps} profiled steps, by kind of work")
    for label, (ms, share) in by_kind.items():
        print(f"    {label:<12} {ms / steps:8.1f} ms  {share:6.1%}")
