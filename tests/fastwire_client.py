"""A client in its own process, for the fast-path tests.

``python -m tests.fastwire_client NS_HOST NS_PORT`` runs array round trips (download,
upload, a job's result) against ``echo`` and prints one JSON line: whether the fast path
is in this process, whether the server's replies and this client's uploads used
annotations, and whether every value came back intact.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import pyroinst


def main() -> None:
    ns_host, ns_port = sys.argv[1], int(sys.argv[2])
    echo = pyroinst.connect("echo", ns_host=ns_host, ns_port=ns_port)
    a = np.arange(200_000, dtype=np.float64)
    back = echo.echo(a)
    reply_keys = pyroinst.fastwire.received_array_keys()
    info = echo.upload_info(a)
    nested = echo.echo({"x": [a, (a[:10],)], "n": np.int32(3)})
    job = echo.big(300_000)
    result = job.result(timeout=30)
    report = {
        "fastwire": pyroinst.fastwire.enabled(),
        "reply_annotated": any(k.startswith("~") for k in reply_keys),
        "upload_annotated": any(k.startswith("~") for k in info["keys"]),
        "echo_ok": bool(np.array_equal(back, a)) and back.dtype == a.dtype,
        "upload_ok": info["sum"] == float(a.sum()) and info["shape"] == [200_000],
        "nested_ok": bool(np.array_equal(nested["x"][0], a))
        and bool(np.array_equal(nested["x"][1][0], a[:10]))
        and nested["n"] == 3,
        "job_ok": bool(np.array_equal(result, np.arange(300_000, dtype=np.float64))),
    }
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
