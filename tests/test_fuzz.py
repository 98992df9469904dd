"""Hostile bytes at a device daemon and at the name server (loopback, bounded).

Random bytes, truncated and corrupted Pyro5 messages, huge length headers, unknown
serializer ids, and handshakes in marshal (the crash and freeze blobs), compressed,
oversized, deeply nested or wide; afterwards both servers answer correctly, their thread
count and memory are near where they were, and nothing above WARNING was logged.
"""

from __future__ import annotations

import random
import secrets
import socket
import struct
from pathlib import Path

import Pyro5.api
import pytest
from Pyro5 import protocol

import pyroinst
from tests import authwire
from tests.helpers import clean_env, start_fuzz_target, wait_until

ROOT = Path(__file__).resolve().parent.parent
CASES = 1500  # per server
HEADER = struct.Struct(protocol._header_format)


def message(
    msgtype: int,
    serializer: int,
    payload: bytes,
    flags: int = 0,
    data_size: int | None = None,
    ann_size: int = 0,
) -> bytes:
    size = len(payload) if data_size is None else data_size
    return (
        HEADER.pack(
            b"PYRO",
            protocol.PROTOCOL_VERSION,
            msgtype,
            serializer,
            flags,
            1,
            size,
            ann_size,
            b"\0" * 16,
            0,
            protocol._magic_number,
        )
        + payload
    )


def valid_connect(serializer_id: int = 4) -> bytes:
    from Pyro5 import serializers

    ser = serializers.serializers_by_id[serializer_id]
    return message(
        protocol.MSG_CONNECT, serializer_id, ser.dumps({"handshake": "hello", "object": "dev"})
    )


def challenge(nonce: str, extra: dict | None = None) -> bytes:
    """A CONNECT carrying the token protocol's challenge (msgpack)."""
    from Pyro5 import serializers

    ser = serializers.serializers_by_id[4]
    handshake = {"pyroinst_auth": 1, "nonce": nonce, **(extra or {})}
    return message(protocol.MSG_CONNECT, 4, ser.dumps({"handshake": handshake, "object": "dev"}))


def handshake_cases(rng: random.Random, count: int):
    """Malformed, truncated and replayed handshakes of the token protocol."""
    replayed = challenge("ab" * 32)
    for i in range(count):
        kind = i % 5
        nonce = secrets.token_hex(32)
        if kind == 0:  # a nonce of a random length and alphabet
            alphabet = rng.choice(["0123456789abcdef", "xyz\u00e9\0", "0"])
            yield challenge("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 130))))
        elif kind == 1:  # a valid challenge, truncated
            data = challenge(nonce)
            yield data[: rng.randrange(1, len(data))]
        elif kind == 2:  # the same challenge again and again (a replay)
            yield replayed
        elif kind == 3:  # a challenge, then a proof for a server nonce it never got
            proof = bytes(rng.randrange(256) for _ in range(32))
            ping = authwire.message(protocol.MSG_PING, b"", {"PIAU": proof}, serializer_id=4)
            yield challenge(nonce) + ping
        else:  # a challenge, then a call or garbage instead of the proof
            tail = rng.choice([b"\x94\xa3dev\xa4echo\x91\x01\x80", bytes(range(40))])
            yield challenge(nonce, rng.choice([None, {"x": 1}])) + message(
                protocol.MSG_INVOKE, 4, tail
            )


def cases(rng: random.Random, count: int = CASES):
    connect = valid_connect()
    invoke = message(protocol.MSG_INVOKE, 4, b"\x94\xa3dev\xa4echo\x91\x01\x80")
    for i in range(count):
        kind = i % 8
        if kind == 0:  # random bytes
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        elif kind == 1:  # a valid handshake, truncated
            yield connect[: rng.randrange(1, len(connect))]
        elif kind == 2:  # a valid handshake with bytes flipped
            data = bytearray(connect)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            yield bytes(data)
        elif kind == 3:  # a huge length header (more than MAX_MESSAGE_SIZE)
            yield message(protocol.MSG_CONNECT, 4, b"", data_size=2**32 - 1)
        elif kind == 4:  # a large, legal length, then nothing
            yield message(protocol.MSG_CONNECT, 4, b"x" * 10, data_size=200_000_000)
        elif kind == 5:  # unknown serializer ids
            yield message(protocol.MSG_CONNECT, rng.choice([0, 5, 77, 255]), b"\x80")
        elif kind == 6:  # an invoke without a handshake
            yield invoke
        else:  # a handshake, then garbage as the call
            yield connect + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120)))


BLOBS = Path(__file__).resolve().parent / "blobs"


def preproof_cases(rng: random.Random, count: int):
    """What a stranger sends before any proof: marshal (the crash and freeze blobs, random
    marshal), compressed, oversized and deeply nested or wide handshakes."""
    import zlib

    import msgpack
    from Pyro5 import serializers

    marshal_id = serializers.MarshalSerializer.serializer_id
    json_id = serializers.JsonSerializer.serializer_id
    serpent_id = serializers.SerpentSerializer.serializer_id
    blobs = [(BLOBS / name).read_bytes() for name in ("marshal_crash.bin", "marshal_freeze.bin")]
    zeros = zlib.compress(bytes(4 << 20), 9)  # 4 MiB of zeros in about 4 KB
    for i in range(count):
        kind = i % 8
        depth = rng.randrange(20, 5000)
        if kind == 0:
            yield message(protocol.MSG_CONNECT, marshal_id, blobs[i % 2])
        elif kind == 1:  # random marshal bytes
            yield message(
                protocol.MSG_CONNECT,
                marshal_id,
                bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))),
            )
        elif kind == 2:  # compressed: a bomb, or random bytes flagged compressed
            body = zeros if rng.random() < 0.5 else rng.randbytes(rng.randrange(1, 2000))
            yield message(protocol.MSG_CONNECT, rng.choice([1, 3, 4]), body, flags=1)
        elif kind == 3:  # oversized, within CONNECT_MAX
            body = msgpack.packb(
                {"handshake": "x" * rng.randrange(17_000, 60_000), "object": "dev"}
            )
            yield message(protocol.MSG_CONNECT, 4, body)
        elif kind == 4:  # deeply nested msgpack
            yield message(protocol.MSG_CONNECT, 4, b"\x91" * depth + b"\xc0")
        elif kind == 5:  # deeply nested json or serpent
            text = "[" * depth + "]" * depth
            yield message(protocol.MSG_CONNECT, rng.choice([json_id, serpent_id]), text.encode())
        elif kind == 6:  # wide: thousands of elements in a few KB
            text = (
                "["
                + ",".join("0" * rng.randrange(1, 3) for _ in range(rng.randrange(500, 4000)))
                + "]"
            )
            yield message(protocol.MSG_CONNECT, rng.choice([json_id, serpent_id]), text.encode())
        else:  # class markers in a valid-looking handshake
            body = msgpack.packb(
                {
                    "handshake": {"__class__": "Pyro5.core.URI", "state": ["PYRO", "x"]},
                    "object": "dev",
                }
            )
            yield message(protocol.MSG_CONNECT, 4, body)


def blast(port: int, payloads) -> None:
    for n, payload in enumerate(payloads):
        # Each case from its own loopback address: the slow-down for failed
        # authentications (per address) does not pile up across the cases.
        source = f"127.2.{n // 250}.{n % 250 + 1}"
        with socket.create_connection(
            ("127.0.0.1", port), timeout=2, source_address=(source, 0)
        ) as sock:
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(0.5)
                while sock.recv(65536):
                    pass
            except OSError:
                pass  # the server may reset: that is a refusal too


def status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


@pytest.mark.parametrize("token", [None, "fuzz-lab-token-5d1e"], ids=["open", "token"])
def test_hostile_bytes(token):
    env = clean_env() if token is None else clean_env(PYROINST_TOKEN=token)
    before = pyroinst.current_token()
    pyroinst.set_token(token)
    proc, (ns_port, dev_uri) = start_fuzz_target(env)
    try:
        dev_port = int(dev_uri.rsplit(":", 1)[1])
        dev = Pyro5.api.Proxy(dev_uri)
        assert dev.echo(1) == 1
        dev._pyroRelease()
        threads_before = status(proc.pid, "Threads")
        rss_before = status(proc.pid, "VmRSS")
        rng = random.Random(20261124)
        count = CASES if token is None else CASES // 2
        for port in (dev_port, int(ns_port)):
            blast(port, cases(rng, count))
            blast(port, preproof_cases(rng, count // 4))
            if token is not None:
                blast(port, handshake_cases(rng, count))

        dev = Pyro5.api.Proxy(dev_uri)
        assert dev.echo("still here") == "still here"
        assert dev.big(10).result(10).shape == (10,)
        dev._pyroRelease()
        with pyroinst.locate_ns("127.0.0.1", int(ns_port)) as ns:
            assert "dev" in ns.list()
        wait_until(lambda: status(proc.pid, "Threads") <= threads_before + 2, timeout=20)
        assert status(proc.pid, "VmRSS") - rss_before < 50_000  # kB
    finally:
        pyroinst.set_token(before)
        proc.stdin.close()
        proc.wait(30)
        log = Path(proc.log).read_text()
        Path(proc.log).unlink()
    noisy = [
        line
        for line in log.splitlines()
        if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line
    ]
    assert noisy == [], "\n".join(noisy[:20])
