"""Bits of an H.264 stream: fixed-length and Exp-Golomb codes (9.1), RBSP trailing bits and NAL units with
emulation prevention (7.3.1, 7.4.1)."""

from __future__ import annotations


class BitWriter:
    """Accumulates bits most significant first; `bytes()` closes the RBSP with rbsp_trailing_bits."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n = 0

    def bits(self, code: str) -> None:
        self.parts.append(code)
        self.n += len(code)

    def u(self, width: int, value: int) -> None:
        if width:
            self.bits(format(value, f"0{width}b"))

    def flag(self, value: bool | int) -> None:
        self.bits("1" if value else "0")

    def ue(self, value: int) -> None:
        code = bin(value + 1)[2:]
        self.bits("0" * (len(code) - 1) + code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = "".join(self.parts) + "1"
        bits += "0" * (-len(bits) % 8)
        return int(bits, 2).to_bytes(len(bits) // 8, "big")


def ue_bits(value: int) -> int:
    """The length of ue(v) for a value."""
    return 2 * (value + 1).bit_length() - 1


def se_bits(value: int) -> int:
    return ue_bits(2 * value - 1 if value > 0 else -2 * value)


def nal_unit(nal_type: int, rbsp: bytes, ref_idc: int = 3) -> bytes:
    """An Annex-B NAL unit: a 4-byte start code, the header, and the RBSP with emulation prevention bytes
    (0x03 after two zero bytes whenever the next byte is 0..3)."""
    out = bytearray(b"\x00\x00\x00\x01")
    out.append(ref_idc << 5 | nal_type)
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)
