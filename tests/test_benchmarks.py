"""benchmarks/op_shares.py: profiled operator times summed by kind of work, as the throughput benchmarks print them."""
import sys

import pytest

from lib import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import distill_throughput  # noqa: E402
import op_shares  # noqa: E402


@pytest.mark.parametrize("name, kind", [
    ("aten::mm", "matmul"), ("aten::addmm_", "matmul"), ("aten::_scaled_dot_product_flash_attention_for_cpu", "matmul"),
    ("aten::_log_softmax", "softmax"), ("aten::exp_", "softmax"), ("aten::_fused_adamw_", "optimizer"),
    ("aten::bernoulli_", "dropout rng"), ("aten::fill_", "zero fill"), ("aten::copy_", "copy"),
    ("aten::native_layer_norm", "other"), ("aten::matmul", "other"),  # matmul's own self time is dispatch only
    ("Optimizer.step#AdamW.step", "other"),
])
def test_each_operator_counts_as_its_kind_of_work(name, kind):
    assert op_shares.kind(name) == kind


def test_shares_sum_the_operators_of_each_kind():
    by_kind = op_shares.shares({"aten::mm": 4.0, "aten::addmm": 2.0, "aten::bernoulli_": 2.0, "aten::gelu": 2.0})
    assert list(by_kind) == [label for label, _ in op_shares.KINDS] + [op_shares.OTHER]
    assert by_kind["matmul"] == pytest.approx((6.0, 0.6))
    assert by_kind["dropout rng"] == pytest.approx((2.0, 0.2))
    assert by_kind[op_shares.OTHER] == pytest.approx((2.0, 0.2))
    assert by_kind["optimizer"] == (0.0, 0.0)


def test_the_distillation_benchmark_profiles_its_steps_on_request():
    result = distill_throughput.benchmark("tiny", seq_len=16, batch_size=2, steps=1, warmup=0, device="cpu",
                                          profile_steps=2)
    by_kind = result["current"]["op_shares"]
    assert sum(share for _, share in by_kind.values()) == pytest.approx(1.0)
    assert by_kind["matmul"][0] > 0 and by_kind["optimizer"][0] > 0 and by_kind["dropout rng"][0] > 0
    assert "op_shares" not in result["released"]
    assert "op_shares" not in distill_throughput.benchmark("tiny", seq_len=16, batch_size=2, steps=1, warmup=0,
                                                           device="cpu")["current"]
