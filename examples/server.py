"""Serve two dummy devices, the 2017 server's demo done the pyroinst way.

    python examples/server.py            # Ctrl-C to stop

Uses the name server at PYROINST_NS_HOST/PYROINST_NS_PORT (default localhost:9090) and
starts an embedded one there if none answers.
"""

import logging

from devices.dummy import DummyDevice
from pyroinst import InstServer

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

server = InstServer(host="127.0.0.1")
server.add_device(DummyDevice(), "dev")
server.add_device(DummyDevice(), "dev2")  # the same class may be served twice
server.run()
