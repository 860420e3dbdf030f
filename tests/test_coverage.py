"""Quantization coverage: the share of weights really stored in the requested precision."""

from edgekit.coverage import COVERAGE_FLOOR, Coverage, FloatOp, summary


def test_int8_counts_int8_and_narrower_but_not_float() -> None:
    cov = Coverage("int8", {"int8": 900, "int4": 50, "fp32": 50})
    assert cov.weights_share == 0.95 and not cov.partial


def test_a_gru_left_in_float_is_partial_and_says_why() -> None:
    cov = Coverage("int8", {"int8": 40, "fp32": 960},
                   float_ops=(FloatOp("gru0", "GRU", 960, "the quantizer does not support GRU"),))
    record = cov.as_dict()
    assert cov.weights_share == 0.04 < COVERAGE_FLOOR and record["partial"]
    assert record["float_ops"][0]["reason"] == "the quantizer does not support GRU"
    assert "(partial)" in summary(record)


def test_int4_does_not_count_int8() -> None:
    assert Coverage("int4", {"int4": 600, "int8": 400}).weights_share == 0.6


def test_fp16_counts_fp16_and_int8_storage() -> None:
    assert Coverage("fp16", {"fp16": 90, "int8": 10}).weights_share == 1.0


def test_fast_share_only_when_measured() -> None:
    assert Coverage("int8", {"int8": 1}).fast_share is None
    measured = Coverage("int8", {"int8": 1}, compute_ops=10, fast_ops=9, fast_path="integer kernels")
    assert measured.fast_share == 0.9 and measured.as_dict()["fast_share"] == 0.9
