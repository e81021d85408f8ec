"""Byte-level mutations shared by the fuzz tests: flips, cuts, splices, random bytes."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of ``seeds`` (valid encodings) changed a little, or bytes from nowhere."""
    kind = draw(st.sampled_from(["flip", "cut", "insert", "replace", "splice", "random", "same"]))
    if kind == "random":
        return draw(st.binary(max_size=256))
    data = bytearray(draw(st.sampled_from(seeds)))
    if kind == "same" or (not data and kind != "insert"):
        return bytes(data)
    position = draw(st.integers(0, max(0, len(data) - 1)))
    if kind == "flip":
        data[position] ^= 1 << draw(st.integers(0, 7))
    elif kind == "cut":
        data = data[:position] if draw(st.booleans()) else data[position:]
    elif kind == "insert":
        data[position:position] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "replace":
        data[position : position + 1] = bytes([draw(st.integers(0, 255))])
    else:
        other = draw(st.sampled_from(seeds))
        data = data[:position] + other[draw(st.integers(0, max(0, len(other) - 1))) :]
    return bytes(data)
