"""Weight decoding: weight.bin records and every constexpr_* variant of iOS 16-18.

The oracle is coremltools itself: its MIL blob writer for weight.bin, and the
``decompress`` reference of each constexpr op for the decoded weights, which
must match bit for bit (same dtype, same bits, FP16 rounding included).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.backends.coreml.emulator import Interpreter, load_package
from edgekit.backends.coreml.emulator.blob import BlobFile
from edgekit.errors import ArtifactError

sys.path.insert(0, str(Path(__file__).parent))
from coreml_testing import save_program  # noqa: E402

R = np.random.default_rng(7)


# ---------------------------------------------------------------- weight.bin

BLOB_CASES = {
    # MIL dtype: (writer method, values as coremltools hands them to the writer)
    "fp32": ("write_float_data", R.standard_normal(37).astype(np.float32)),
    "fp16": ("write_fp16_data", R.standard_normal(37).astype(np.float16)),
    "uint8": ("write_uint8_data", R.integers(0, 256, 37).astype(np.uint8)),
    "int8": ("write_int8_data", R.integers(-128, 128, 37).astype(np.int8)),
    "int16": ("write_int16_data", R.integers(-3000, 3000, 37).astype(np.int16)),
    "uint16": ("write_uint16_data", R.integers(0, 60000, 37).astype(np.uint16)),
    "int32": ("write_int32_data", R.integers(-(2**31), 2**31 - 1, 37).astype(np.int32)),
    "uint32": ("write_uint32_data", R.integers(0, 2**32 - 1, 37).astype(np.uint32)),
    "int4": ("write_int4_data", R.integers(-8, 8, 37).astype(np.int8)),
    "uint4": ("write_uint4_data", R.integers(0, 16, 37).astype(np.uint8)),
    "uint1": ("write_uint1_data", R.integers(0, 2, 37).astype(np.uint8)),
    "uint2": ("write_uint2_data", R.integers(0, 4, 37).astype(np.uint8)),
    "uint3": ("write_uint3_data", R.integers(0, 8, 37).astype(np.uint8)),
    "uint6": ("write_uint6_data", R.integers(0, 64, 37).astype(np.uint8)),
}


@pytest.fixture(scope="module")
def blob_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    from coremltools.libmilstoragepython import _BlobStorageWriter

    path = tmp_path_factory.mktemp("blob") / "weight.bin"
    writer = _BlobStorageWriter(str(path))
    offsets = {}
    for dtype, (method, values) in BLOB_CASES.items():
        data = values.view(np.uint16) if dtype == "fp16" else values
        offsets[dtype] = getattr(writer, method)(np.ascontiguousarray(data))
    del writer  # flushes the file
    return path, offsets


@pytest.mark.parametrize("dtype", sorted(BLOB_CASES))
def test_blob_reader_decodes_what_coremltools_wrote(blob_file, dtype: str) -> None:  # type: ignore[no-untyped-def]
    path, offsets = blob_file
    blobs = BlobFile(path)
    assert blobs.count == len(BLOB_CASES)
    values = BLOB_CASES[dtype][1]
    got = blobs.read(offsets[dtype], dtype, (37,))
    assert blobs.record(offsets[dtype])[0] == dtype
    np.testing.assert_array_equal(got, values)
    assert got.dtype == values.dtype


def test_blob_reader_refuses_wrong_dtype_and_bad_offsets(blob_file) -> None:  # type: ignore[no-untyped-def]
    path, offsets = blob_file
    blobs = BlobFile(path)
    with pytest.raises(ArtifactError, match="stored as fp32"):
        blobs.read(offsets["fp32"], "fp16", (37,))
    with pytest.raises(ArtifactError, match="no blob record"):
        blobs.read(offsets["fp32"] + 8, "fp32", (37,))
    with pytest.raises(ArtifactError, match="outside the file"):
        blobs.read(10**9, "fp32", (37,))


# ---------------------------------------------------------------- constexpr ops


def _sub_byte(values: np.ndarray, name: str) -> np.ndarray:
    from coremltools.converters.mil.mil import types

    if name == "uint8":
        return values.astype(np.uint8)
    return values.astype(getattr(types, f"np_{name}_dtype"))


def _packed(values: np.ndarray, nbits: int) -> np.ndarray:
    from coremltools.optimize import _utils

    return _utils.pack_elements_into_bits(values.astype(np.uint8), nbits)


def _mask(shape: tuple[int, ...], density: float = 0.4) -> np.ndarray:
    return (R.random(shape) < density).astype(np.uint8)


@dataclass
class ConstexprCase:
    """Builds one weight with constexpr ops and computes coremltools' reference decompression."""

    id: str
    target: str
    build: Callable[[Any], Any]  # mb -> the weight var (dense)
    reference: Callable[[], np.ndarray]


def _ios16_cases() -> list[ConstexprCase]:
    from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as c16

    cases = []
    q8, zp8, s32 = R.integers(-128, 128, (8, 6)).astype(np.int8), R.integers(-5, 5, 8).astype(np.int8), R.random(8).astype(np.float32)
    cases.append(ConstexprCase(
        "affine_int8_per_axis_fp32", "iOS16",
        lambda mb: mb.constexpr_affine_dequantize(quantized_data=q8, zero_point=zp8, scale=s32, axis=0),
        lambda: c16.constexpr_affine_dequantize.decompress(q8, zp8, s32, 0)))
    qu, zpu, s16 = R.integers(0, 256, (4, 40)).astype(np.uint8), np.uint8(131), np.float16(0.0123)
    cases.append(ConstexprCase(
        "affine_uint8_scalar_fp16", "iOS16",
        lambda mb: mb.constexpr_affine_dequantize(quantized_data=qu, zero_point=zpu, scale=s16, axis=1),
        lambda: c16.constexpr_affine_dequantize.decompress(qu, np.array(zpu), np.array(s16), 1)))
    zpf = R.random(40).astype(np.float32) * 3
    s16v = (R.random(40) * 0.05).astype(np.float16)
    cases.append(ConstexprCase(
        "affine_uint8_float_zero_point", "iOS16",
        lambda mb: mb.constexpr_affine_dequantize(quantized_data=qu, zero_point=zpf, scale=s16v, axis=1),
        lambda: c16.constexpr_affine_dequantize.decompress(qu, zpf, s16v, 1)))
    src = R.standard_normal((5, 30)).astype(np.float16)
    cases.append(ConstexprCase("cast_fp16_to_fp32", "iOS16",
                               lambda mb: mb.constexpr_cast(source_val=src, output_dtype="fp32"),
                               lambda: np.float32(src)))
    for nbits in (1, 2, 4, 6, 8):
        lut = R.standard_normal(2**nbits).astype(np.float16)
        indices = R.integers(0, 2**nbits, 35)
        shape = np.array([5, 7], dtype=np.uint32)
        packed = _packed(indices, nbits)
        cases.append(ConstexprCase(
            f"lut_to_dense_ios16_{nbits}bit", "iOS16",
            lambda mb, lut=lut, packed=packed, shape=shape: mb.constexpr_lut_to_dense(indices=packed, lut=lut, shape=shape),
            lambda lut=lut, packed=packed, shape=shape: c16.constexpr_lut_to_dense.decompress(lut, packed, shape)))
    mask = _mask((6, 9))
    nonzero = R.standard_normal(int(mask.sum())).astype(np.float32)
    packed_mask = np.packbits(mask.reshape(-1), bitorder="little")
    shape = np.array([6, 9], dtype=np.uint32)
    cases.append(ConstexprCase(
        "sparse_to_dense_ios16", "iOS16",
        lambda mb: mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=packed_mask, shape=shape),
        lambda: c16.constexpr_sparse_to_dense.decompress(nonzero, packed_mask, shape)))
    return cases


def _ios18_cases() -> list[ConstexprCase]:
    from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as c18

    cases = []
    data4 = R.integers(-8, 8, (8, 32))
    off4 = R.integers(-8, 8, (8, 2))
    scale16 = (R.random((8, 2)) * 0.1 + 0.01).astype(np.float16)
    cases.append(ConstexprCase(
        "blockwise_int4_offset_fp16", "iOS18",
        lambda mb: mb.constexpr_blockwise_shift_scale(data=_sub_byte(data4, "int4"), scale=scale16, offset=_sub_byte(off4, "int4")),
        lambda: c18.constexpr_blockwise_shift_scale.decompress(data4.astype(np.int8), scale16, off4.astype(np.int8))))
    datau8 = R.integers(0, 256, (8, 32)).astype(np.uint8)
    scale32 = R.random((8, 1)).astype(np.float32)
    cases.append(ConstexprCase(
        "blockwise_uint8_per_channel_fp32", "iOS18",
        lambda mb: mb.constexpr_blockwise_shift_scale(data=datau8, scale=scale32),
        lambda: c18.constexpr_blockwise_shift_scale.decompress(datau8, scale32, None)))
    datau4 = R.integers(0, 16, (8, 32))
    offf16 = (R.random((4, 8)) * 8).astype(np.float16)
    scale2d = (R.random((4, 8)) * 0.1).astype(np.float16)
    cases.append(ConstexprCase(
        "blockwise_uint4_2d_blocks_float_offset", "iOS18",
        lambda mb: mb.constexpr_blockwise_shift_scale(data=_sub_byte(datau4, "uint4"), scale=scale2d, offset=offf16),
        lambda: c18.constexpr_blockwise_shift_scale.decompress(datau4.astype(np.uint8), scale2d, offf16)))
    data8 = R.integers(-128, 128, (16, 24)).astype(np.int8)
    off8 = R.integers(-3, 3, (16, 3)).astype(np.int8)
    scale8 = (R.random((16, 3)) * 0.02).astype(np.float16)
    cases.append(ConstexprCase(
        "blockwise_int8_offset", "iOS18",
        lambda mb: mb.constexpr_blockwise_shift_scale(data=data8, scale=scale8, offset=off8),
        lambda: c18.constexpr_blockwise_shift_scale.decompress(data8, scale8, off8)))
    for bits in (1, 2, 3, 4, 6, 8):
        indices = R.integers(0, 2**bits, (8, 12))
        lut = R.standard_normal((2, 1, 2**bits, 1)).astype(np.float16)
        name = f"uint{bits}"
        cases.append(ConstexprCase(
            f"lut_to_dense_ios18_grouped_{bits}bit", "iOS18",
            lambda mb, i=indices, lut=lut, n=name: mb.constexpr_lut_to_dense(indices=_sub_byte(i, n), lut=lut),
            lambda i=indices, lut=lut: c18.constexpr_lut_to_dense.decompress(i.astype(np.uint8), lut, None)))
    vindices = R.integers(0, 4, (4, 6))
    vlut = R.standard_normal((1, 2, 4, 3)).astype(np.float32)
    cases.append(ConstexprCase(
        "lut_to_dense_ios18_vector", "iOS18",
        lambda mb: mb.constexpr_lut_to_dense(indices=_sub_byte(vindices, "uint2"), lut=vlut, vector_axis=0),
        lambda: c18.constexpr_lut_to_dense.decompress(vindices.astype(np.uint8), vlut, np.int32(0))))
    mask = _mask((6, 10))
    nonzero = R.standard_normal(int(mask.sum())).astype(np.float16)
    cases.append(ConstexprCase(
        "sparse_to_dense_ios18", "iOS18",
        lambda mb: mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=_sub_byte(mask, "uint1")),
        lambda: c18.constexpr_sparse_to_dense.decompress(nonzero, mask)))
    lmask = _mask((8, 8), 0.6)
    lnz = R.integers(0, 4, int(lmask.sum()))
    llut = R.standard_normal((1, 1, 4, 1)).astype(np.float16)

    def lut_sparse(mb):  # type: ignore[no-untyped-def]
        out_mask, out_data = mb.constexpr_lut_to_sparse(indices_mask=_sub_byte(lmask, "uint1"),
                                                        indices_nonzero_data=_sub_byte(lnz, "uint2"), lut=llut)
        return mb.constexpr_sparse_to_dense(nonzero_data=out_data, mask=out_mask)

    def lut_sparse_ref() -> np.ndarray:
        m, d = c18.constexpr_lut_to_sparse.decompress(lmask, lnz.astype(np.uint8), llut, None)
        return c18.constexpr_sparse_to_dense.decompress(d, m)

    cases.append(ConstexprCase("lut_to_sparse_then_dense", "iOS18", lut_sparse, lut_sparse_ref))
    smask = _mask((8, 16), 0.5)
    snz = R.integers(-8, 8, int(smask.sum()))
    sscale = (R.random((8, 1)) * 0.1).astype(np.float16)
    soff = R.integers(-2, 2, (8, 1))

    def sparse_shift(mb):  # type: ignore[no-untyped-def]
        out_mask, out_data = mb.constexpr_sparse_blockwise_shift_scale(
            data_mask=_sub_byte(smask, "uint1"), nonzero_data=_sub_byte(snz, "int4"), scale=sscale,
            offset=_sub_byte(soff, "int4"))
        return mb.constexpr_sparse_to_dense(nonzero_data=out_data, mask=out_mask)

    def sparse_shift_ref() -> np.ndarray:
        m, d = c18.constexpr_sparse_blockwise_shift_scale.decompress(smask, snz.astype(np.int8), sscale, soff.astype(np.int8))
        return c18.constexpr_sparse_to_dense.decompress(d, m)

    cases.append(ConstexprCase("sparse_blockwise_shift_scale_then_dense", "iOS18", sparse_shift, sparse_shift_ref))
    # Vector palettization on sparse data: the mask is repeated along vector_axis before selecting.
    vmask = _mask((3, 5), 0.6)
    vnz = R.integers(0, 4, int(vmask.sum()))
    vslut = R.standard_normal((1, 1, 4, 2)).astype(np.float16)

    def lut_sparse_vector(mb):  # type: ignore[no-untyped-def]
        out_mask, out_data = mb.constexpr_lut_to_sparse(indices_mask=_sub_byte(vmask, "uint1"),
                                                        indices_nonzero_data=_sub_byte(vnz, "uint2"), lut=vslut,
                                                        vector_axis=0)
        return mb.constexpr_sparse_to_dense(nonzero_data=out_data, mask=out_mask)

    def lut_sparse_vector_ref() -> np.ndarray:
        m, d = c18.constexpr_lut_to_sparse.decompress(vmask, vnz.astype(np.uint8), vslut, np.int32(0))
        return c18.constexpr_sparse_to_dense.decompress(d, m)

    cases.append(ConstexprCase("lut_to_sparse_vector_then_dense", "iOS18", lut_sparse_vector, lut_sparse_vector_ref))

    # The chains coremltools' joint compression and per-channel-scale palettization write:
    # an int8 table dequantized by shift-scale, then looked up ...
    qlut = R.integers(-128, 128, (2, 1, 16, 1)).astype(np.int8)
    qlut_scale = (R.random((2, 1, 1, 1)) * 0.02).astype(np.float16)
    qindices = R.integers(0, 16, (8, 10))

    def quantized_lut(mb):  # type: ignore[no-untyped-def]
        table = mb.constexpr_blockwise_shift_scale(data=qlut, scale=qlut_scale)
        return mb.constexpr_lut_to_dense(indices=_sub_byte(qindices, "uint4"), lut=table)

    cases.append(ConstexprCase(
        "lut_int8_table_shift_scaled_then_dense", "iOS18", quantized_lut,
        lambda: c18.constexpr_lut_to_dense.decompress(
            qindices.astype(np.uint8), c18.constexpr_blockwise_shift_scale.decompress(qlut, qlut_scale, None), None)))
    # ... a float table looked up, then scaled per output channel (enable_per_channel_scale) ...
    plut = R.standard_normal((1, 1, 4, 1)).astype(np.float16)
    pindices = R.integers(0, 4, (6, 8))
    pscale = (R.random((6, 1)) * 2).astype(np.float16)

    def per_channel_scaled_lut(mb):  # type: ignore[no-untyped-def]
        dense = mb.constexpr_lut_to_dense(indices=_sub_byte(pindices, "uint2"), lut=plut)
        return mb.constexpr_blockwise_shift_scale(data=dense, scale=pscale)

    cases.append(ConstexprCase(
        "lut_then_per_channel_scale", "iOS18", per_channel_scaled_lut,
        lambda: c18.constexpr_blockwise_shift_scale.decompress(
            c18.constexpr_lut_to_dense.decompress(pindices.astype(np.uint8), plut, None), pscale, None)))
    # ... and int8 quantized values that were palettized: an int8 table, then shift-scale of the int8 dense data.
    ilut = R.integers(-128, 128, (1, 1, 4, 1)).astype(np.int8)
    iindices = R.integers(0, 4, (4, 16))
    iscale = (R.random((4, 2)) * 0.05).astype(np.float16)
    ioffset = R.integers(-4, 4, (4, 2)).astype(np.int8)

    def palettized_quantized(mb):  # type: ignore[no-untyped-def]
        data = mb.constexpr_lut_to_dense(indices=_sub_byte(iindices, "uint2"), lut=ilut)
        return mb.constexpr_blockwise_shift_scale(data=data, scale=iscale, offset=ioffset)

    cases.append(ConstexprCase(
        "int8_lut_then_blockwise_shift_scale", "iOS18", palettized_quantized,
        lambda: c18.constexpr_blockwise_shift_scale.decompress(
            c18.constexpr_lut_to_dense.decompress(iindices.astype(np.uint8), ilut, None), iscale, ioffset)))
    src = R.standard_normal((3, 40)).astype(np.float16)
    cases.append(ConstexprCase("cast_ios18", "iOS18", lambda mb: mb.constexpr_cast(source_val=src, output_dtype="fp32"),
                               lambda: np.float32(src)))
    return cases


def _all_cases() -> list[ConstexprCase]:
    return _ios16_cases() + _ios18_cases()


CASE_IDS = [c.id for c in _all_cases()]


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, np.ndarray, set[str]]]:
    """Per case: (emulator-decoded weight, coremltools reference, constexpr op types in the saved program).

    One program per iOS generation holds every case of that generation.
    """
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program

    results = {}
    folder = tmp_path_factory.mktemp("constexpr")
    for target in ("iOS16", "iOS18"):
        cases = [c for c in _all_cases() if c.target == target]
        with Function({"x": mb.placeholder(shape=(1,))}, opset_version=getattr(ct.target, target)) as function:
            weights, outputs = {}, []
            for c in cases:
                weight = c.build(mb)
                weights[c.id] = weight.name
                # Consume each weight so it stays in the program; reduce to a scalar added to x.
                total = mb.reduce_sum(x=mb.cast(x=weight, dtype="fp32") if weight.dtype != ct.converters.mil.mil.types.fp32 else weight)
                outputs.append(mb.add(x=function.inputs["x"], y=total, name=f"{c.id}__out"))
            function.set_outputs(outputs)
        program = Program()
        program.add_function("main", function)
        package = load_package(save_program(program, folder / f"{target}.mlpackage", target=target))
        interpreter = Interpreter(package)
        interpreter.run({"x": np.zeros(1, np.float32)})  # the whole program also runs
        kinds = {op.type for op in package.main.operations if op.type.startswith("constexpr_")}
        for c in cases:
            results[c.id] = (interpreter.constants[weights[c.id]], np.asarray(c.reference()), kinds)
    return results


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_constexpr_decodes_bit_for_bit_like_coremltools(decoded, case_id: str) -> None:  # type: ignore[no-untyped-def]
    got, want, _ = decoded[case_id]
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_every_constexpr_op_is_exercised(decoded) -> None:  # type: ignore[no-untyped-def]
    from edgekit.backends.coreml.emulator.ops import supported_ops

    seen = set().union(*(kinds for _, _, kinds in decoded.values()))
    assert {op for op in supported_ops() if op.startswith("constexpr_")} <= seen
