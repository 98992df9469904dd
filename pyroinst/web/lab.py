"""The web server's side of the lab: proxies per thread, the device list with reservations."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import Pyro5.client
import Pyro5.core

from ..client import DeviceProxy, connect, list_devices, lookup
from .pool import MAX_DEVICE_CONNECTIONS, ProxyPool

__all__ = ["Lab"]

log = logging.getLogger(__name__)

#: Seconds a device list (with reservations) is reused by other requests.
LIST_TTL = 1.0
#: Seconds a device's description is reused.
DESCRIBE_TTL = 5.0
#: Seconds a request waits for a device's server to answer again before 502.
RECONNECT = 3.0
#: Bytes of finished jobs' results kept for repeated downloads (newest kept).
RESULT_CACHE_BYTES = 512 << 20


class Lab:
    """A client of the lab's name server and devices, shared by the web server's threads.

    Proxies come from a bounded pool (``pool``, see ``pyroinst.web.pool``); a request
    borrows one presenting its caller's owner and lease, and gives it back.
    """

    def __init__(
        self,
        ns_host: str | None,
        ns_port: int | None,
        timeout: float = 30.0,
        max_device_connections: int = MAX_DEVICE_CONNECTIONS,
    ) -> None:
        self.ns_host, self.ns_port = ns_host, ns_port
        self.timeout = timeout
        self._lock = threading.Lock()
        self._listed: tuple[float, list[dict[str, Any]]] | None = None
        self._described: dict[str, tuple[float, dict[str, Any]]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="pyroinst-web")
        self._results: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._results_bytes = 0
        self.pool = ProxyPool(self._connect, max_device_connections, locate=self._locate)

    def borrow(self, name: str, owner: str | None = None, lease: str | None = None) -> Any:
        """A proxy of ``name`` from the pool (``with lab.borrow(...) as proxy``), presenting
        ``owner`` and ``lease`` (see ``pyroinst.web.pool``)."""
        return self.pool.borrow(name, owner, lease)

    def _locate(self, name: str) -> str:
        uri = Pyro5.core.URI(lookup(name, self.ns_host, self.ns_port))
        return f"{uri.host}:{uri.port}"

    def _connect(self, name: str) -> DeviceProxy:
        return connect(
            name,
            self.ns_host,
            self.ns_port,
            timeout=self.timeout,
            reconnect_timeout=RECONNECT,
            per_thread=False,  # the pool lends each proxy to one thread at a time
        )

    def result(self, name: str, job_id: str, proxy: DeviceProxy) -> Any:
        """A finished job's result, kept for repeated downloads (``.npy`` then ``.csv``,
        or several people): results of finished jobs never change. Arrays up to
        RESULT_CACHE_BYTES in all are kept, the newest first."""
        key = (name, job_id)
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
        value = proxy.job_result(job_id, 0)
        size = value.nbytes if isinstance(value, np.ndarray) else 0
        if 0 < size <= RESULT_CACHE_BYTES:
            with self._lock:
                if key not in self._results:
                    self._results[key] = value
                    self._results_bytes += size
                while self._results_bytes > RESULT_CACHE_BYTES:
                    _, old = self._results.popitem(last=False)
                    self._results_bytes -= old.nbytes
        return value

    def describe(self, name: str) -> dict[str, Any]:
        """``describe()`` of ``name``, reused for DESCRIBE_TTL seconds."""
        now = time.monotonic()
        cached = self._described.get(name)
        if cached is not None and now - cached[0] < DESCRIBE_TTL:
            return cached[1]
        with self.pool.borrow(name) as proxy:  # describe is open to all: nobody presented
            description = proxy.describe()
        self._described[name] = (now, description)
        return description

    def devices(self) -> list[dict[str, Any]]:
        """Every device with ``alive``/``reason`` and its ``reservation`` (None if free or
        unknown), reused for LIST_TTL seconds."""
        now = time.monotonic()
        listed = self._listed
        if listed is not None and now - listed[0] < LIST_TTL:
            return listed[1]
        devices = list_devices(self.ns_host, self.ns_port, alive=True)
        futures = {self._pool.submit(_reservation, d["uri"]): d for d in devices if d.get("alive")}
        for device in devices:
            device["reservation"] = None
        for future, device in futures.items():
            device["reservation"] = future.result()
        self._listed = (time.monotonic(), devices)
        return devices

    def close(self) -> None:
        """Release every proxy and the helper threads."""
        self._pool.shutdown(wait=True)
        self.pool.close()


def _reservation(uri: str) -> dict[str, Any] | None:
    proxy = Pyro5.client.Proxy(uri)
    proxy._pyroTimeout = 1.5
    try:
        return proxy.reservation()
    except Exception:  # noqa: BLE001 - a device that does not answer: no reservation shown
        return None
    finally:
        proxy._pyroRelease()
