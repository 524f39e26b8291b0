"""Label Studio brush RLE: the bit layout of its definition, round trips, long runs, literal chunks."""
from __future__ import annotations

import numpy as np
import pytest

from icmformer.deploy.rle import decode_mask, decode_rle, encode_mask, encode_values


def bits_of(rle) -> str:
    return "".join(format(b, "08b") for b in rle)


def test_header_and_one_repeat_chunk_by_hand():
    # 5 values of 7: header n=5 (32 bits), word size 8 -> 7 (5 bits), run widths 3,4,8,16 -> 2,3,7,15
    # (4 bits each); one repeat chunk: 1, width id 0 (3 bits), length-1 = 4, value 7
    rle = encode_values(np.full(5, 7, np.uint8))
    expected = format(5, "032b") + "00111" + "0010" + "0011" + "0111" + "1111" + "1" + "00" + "100" + "00000111"
    expected += "0" * (-len(expected) % 8)
    assert bits_of(rle) == expected


def test_run_width_grows_with_the_run_length():
    # 9 values need the 4-bit width (id 1), 300 the 16-bit width (id 3)
    b9 = bits_of(encode_values(np.zeros(9, np.uint8)))[32 + 5 + 16 :]
    assert b9.startswith("1" + "01" + format(8, "04b") + "00000000")
    b300 = bits_of(encode_values(np.zeros(300, np.uint8)))[32 + 5 + 16 :]
    assert b300.startswith("1" + "11" + format(299, "016b") + "00000000")


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 48), (3, 200)])
def test_mask_round_trip(shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > 0.6
    rle = encode_mask(mask)
    assert all(isinstance(v, int) and 0 <= v <= 255 for v in rle)
    values = decode_rle(rle)
    assert values.size == 4 * mask.size
    # every pixel is four equal values (RGBA), 255 on the object
    assert np.array_equal(values.reshape(*shape, 4), np.repeat((mask * 255).astype(np.uint8)[..., None], 4, axis=2))
    assert np.array_equal(decode_mask(rle, *shape), mask)


def test_runs_longer_than_the_widest_field_are_split():
    mask = np.ones((300, 300), bool)  # 360000 equal values > 65536
    mask[150, 150] = False
    assert np.array_equal(decode_mask(encode_mask(mask), 300, 300), mask)


def test_decoder_reads_literal_chunks():
    # a literal chunk (flag 0) of three values 1, 2, 3, then a repeat chunk of two 9s
    bits = format(5, "032b") + "00111" + "0010" + "0011" + "0111" + "1111"
    bits += "0" + "00" + "010" + "00000001" + "00000010" + "00000011"
    bits += "1" + "00" + "001" + "00001001"
    bits += "0" * (-len(bits) % 8)
    rle = list(int(bits, 2).to_bytes(len(bits) // 8, "big"))
    assert decode_rle(rle).tolist() == [1, 2, 3, 9, 9]


def test_bad_input():
    with pytest.raises(ValueError, match="H x W"):
        encode_mask(np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="ends early"):
        decode_rle([0, 0, 0, 9])
    with pytest.raises(ValueError, match="expected 4 x"):
        decode_mask(encode_mask(np.zeros((2, 3), bool)), 3, 3)
