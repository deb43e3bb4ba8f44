#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: the RFC 2865 section 7.1 Access-Request and
requests signed with otpgate::radius::fuzzing::FUZZ_SECRET (PIN, State + OTP, Proxy-State,
Status-Server, no Message-Authenticator, a long password)."""
import hashlib
import hmac
import os
import struct

SECRET = b"fuzzing-shared-secret"
HERE = os.path.dirname(os.path.abspath(__file__))


def attr(kind, value):
    return bytes([kind, len(value) + 2]) + value


def hide(password, authenticator):
    padded = password + b"\0" * (-len(password) % 16) if password else b"\0" * 16
    hidden, previous = b"", authenticator
    for i in range(0, len(padded), 16):
        pad = hashlib.md5(SECRET + previous).digest()
        block = bytes(x ^ y for x, y in zip(padded[i : i + 16], pad))
        hidden, previous = hidden + block, block
    return hidden


def packet(code, identifier, authenticator, attributes, message_authenticator=True):
    body = (attr(80, b"\0" * 16) if message_authenticator else b"") + b"".join(attributes)
    data = bytearray(struct.pack("!BBH", code, identifier, 20 + len(body)) + authenticator + body)
    if message_authenticator:
        data[22:38] = hmac.new(SECRET, bytes(data), hashlib.md5).digest()
    return bytes(data)


auth = bytes(range(16))
seeds = {
    "rfc2865-7.1": bytes.fromhex(
        "010000380f403f9473978057bd83d5cb98f4227a01066e656d6f02120dbe708d93d413ce3196e43f782a0aee"
        "0406c0a80110050600000003"
    ),
    "pin": packet(1, 1, auth, [attr(1, b"alice"), attr(2, hide(b"4711", auth)), attr(4, bytes([192, 0, 2, 7])), attr(31, b"203.0.113.9")]),
    "state-otp": packet(1, 2, auth, [attr(1, b"alice"), attr(2, hide(b"123456", auth)), attr(24, b"0123456789abcdef0123456789abcdef")]),
    "proxy-state": packet(1, 3, auth, [attr(1, b"bob"), attr(2, hide(b"4711123456", auth)), attr(33, b"\x01\x02"), attr(33, b"proxy")]),
    "status-server": packet(12, 4, auth, []),
    "no-message-authenticator": packet(1, 5, auth, [attr(1, b"alice"), attr(2, hide(b"4711", auth))], message_authenticator=False),
    "long-password": packet(1, 6, auth, [attr(1, b"carol"), attr(2, hide(b"x" * 120, auth)), attr(32, b"vpn-gw-1")]),
}
for target in ("receive", "packet_round_trip"):
    os.makedirs(os.path.join(HERE, "corpus", target), exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(HERE, "corpus", target, name), "wb") as out:
            out.write(data)
