"""Whether an idle connection was closed by its server (a proxy looks before a call).

A server closes connections it no longer wants (a restart, a client idle too long, a
full server). A proxy about to send a request on such a connection would only learn it
from the failed call; looking first lets it connect again instead (``pyroinst.proxy``).
"""

from __future__ import annotations

import select
import socket
import ssl
from typing import Any

__all__ = ["FRESH", "connection_closed"]

#: A connection that ended a call less than this long ago (seconds) is not looked at for a
#: close by the server before the next call: a call back to back (a loop reading as fast as
#: it can) saves the system call. Looking only narrows a race anyway (the server may
#: close right after it): a close in between is the call's ConnectionLost, as during one.
FRESH = 0.001


def connection_closed(conn: Any) -> bool:
    """True if the peer has closed this idle connection (no reply is pending on it).

    A call looks before each request; the connection's poller is made once (poll, not
    select: select() refuses socket numbers of 1024 and more).
    """
    poller = conn.__dict__.get("_pyroinst_poller")
    try:
        if poller is None:
            poller = conn._pyroinst_poller = select.poll()
            poller.register(conn.sock, select.POLLIN | select.POLLPRI)
        if not poller.poll(0):
            return False
        return _readable_closed(conn.sock)
    except (OSError, ValueError):
        return True


def _readable_closed(sock: Any) -> bool:
    """The idle socket has something to read: True if it is the peer's close."""
    if isinstance(sock, ssl.SSLSocket):
        return _tls_closed(sock)
    return sock.recv(1, socket.MSG_PEEK) == b""


def _tls_closed(sock: ssl.SSLSocket) -> bool:
    """The same under TLS: what is waiting is read through the TLS layer, without waiting.

    A TLS socket cannot be peeked. On an idle connection the only things that can arrive
    are TLS housekeeping (TLS 1.3 session tickets), which leaves nothing to read, and the
    server's close (end of stream, or a close_notify alert). Application data here would
    be out of step anyway: the connection is then treated as closed and made afresh.
    """
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1)
    except ssl.SSLWantReadError:
        return False  # only housekeeping: the connection is open
    except (ssl.SSLError, OSError):
        return True
    finally:
        sock.settimeout(timeout)
    return True  # end of stream (b""), or data nobody asked for
