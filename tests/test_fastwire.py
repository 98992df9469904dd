"""Large arrays between pyroinst peers travel as message annotations, both ways."""

from __future__ import annotations

import numpy as np
import pytest
from Pyro5.callcontext import current_context

import pyroinst
from pyroinst import fastwire

SERIALIZERS = ["serpent", "msgpack", "marshal", "json"]
N = 100_000  # 800 kB of float64: well above fastwire.INLINE_MAX


def big_values():
    rng = np.random.default_rng(1)
    base = rng.random((600, 400))
    return {
        "f64": rng.random(N),
        "f32-2d": rng.random((300, 200)).astype(np.float32),
        "c128": rng.random(N // 4) + 1j * rng.random(N // 4),
        "bool": rng.random(N) > 0.5,
        "noncontig": base[:, ::2],  # not contiguous: travels inline
        "small": np.arange(5),
    }


def assert_same(expected, got):
    assert isinstance(got, np.ndarray)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert got.flags.writeable


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_big_arrays_round_trip(echo, serializer):
    echo._pyroSerializer = serializer
    values = big_values()
    for value in values.values():
        assert_same(value, echo.echo(value))
    nested = echo.echo({"list": [values["f64"], (values["c128"], values["small"])], "d": values})
    assert_same(values["f64"], nested["list"][0])
    assert_same(values["c128"], nested["list"][1][0])
    for name, value in values.items():
        assert_same(value, nested["d"][name])


def test_download_uses_annotations(echo):
    assert echo.echo(1) == 1  # the connection's first call is small
    a = np.arange(N, dtype=np.float64)
    got = echo.job_result(echo.big(N).id, 10)
    keys = [k for k in current_context.response_annotations if k.startswith("~")]
    assert keys, "the array did not travel as an annotation"
    assert_same(a, got)
    assert got.flags.aligned


def test_upload_uses_annotations_and_cleans_up(echo):
    a = np.arange(N, dtype=np.float64)
    info = echo.upload_info(a)
    assert any(k.startswith("~") for k in info["keys"])
    assert info["writeable"] and info["aligned"] and info["shape"] == [N]
    assert info["sum"] == float(a.sum())
    leftovers = [k for k in current_context.annotations if k[0] in "~^" or k == fastwire.FLAG]
    assert leftovers == []
    small = echo.upload_info(np.arange(10.0))  # small arrays stay inline
    assert not any(k.startswith("~") for k in small["keys"])


def test_many_arrays_in_one_message(echo):
    arrays = [np.full(20_000, i, dtype=np.int64) for i in range(40)]
    back = echo.echo(arrays)
    for a, b in zip(arrays, back, strict=True):
        assert_same(a, b)


def test_sockets_with_timeouts(echo):
    echo._pyroTimeout = 30  # sending then loops on partial sends
    a = np.random.default_rng(2).random(4_000_000)  # 32 MB
    assert_same(a, echo.echo(a))


def test_job_results_use_annotations(echo):
    job = echo.big(N)
    got = job.result(timeout=10)
    assert_same(np.arange(N, dtype=np.float64), got)
    assert_same(np.arange(N, dtype=np.float64), job.result())  # again: results are kept


def test_gather_message_bytes_match_pyro5():
    from Pyro5 import protocol

    payload = b"x" * 100
    annotations = {"~000": memoryview(np.arange(20_000, dtype=np.float64)).cast("B")}
    ours = fastwire.SendingMessage(protocol.MSG_RESULT, 0, 7, 4, payload, annotations)
    theirs = protocol.SendingMessage.__mro__[1](
        protocol.MSG_RESULT, 0, 7, 4, payload, {"~000": bytes(annotations["~000"])}
    )
    assert isinstance(ours.data, fastwire.Gather)
    assert bytes(ours.data) == theirs.data


def test_pyroinst_installs_fast_path():
    from Pyro5 import protocol, socketutil

    assert protocol.SendingMessage is fastwire.SendingMessage
    assert socketutil.send_data is fastwire.send_data
    assert protocol.recv_stub is fastwire.recv_stub
    assert pyroinst  # imported: installed


def test_too_large_response_does_not_poison_the_connection(echo, monkeypatch):
    from Pyro5 import config

    job = echo.big(N)  # 800 kB result
    assert job.wait(10)
    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", 200_000)
    with pytest.raises(pyroinst.MessageTooLarge, match="MAX_MESSAGE_SIZE"):
        echo.job_result(job.id)
    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", 1024**3)
    assert echo.echo(1) == 1  # the same connection (and server thread) works again
    assert_same(np.arange(N, dtype=np.float64), echo.job_result(job.id))
