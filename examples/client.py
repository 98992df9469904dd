"""List the devices, identify one, run a measurement as a job while showing its progress.

python examples/client.py [DEVICE]      # default: dev
"""

import sys

import Pyro5.api

import pyroinst  # numpy arrays and job handles

name = sys.argv[1] if len(sys.argv) > 1 else "dev"
for d in pyroinst.list_devices():
    print(f"{d['name']:10} {d['class']:30} {d['uri']}")

dev = Pyro5.api.Proxy(f"PYRONAME:{name}")
print("idn:", dev.idn())
job = dev.measure(2000)  # returns at once
while not job.wait(timeout=0.25):
    status = job.status()
    print(f"\r{status['state']:8} {status['progress']:6.1%} {status['message'] or ''}", end="")
data = job.result()
print(f"\nresult: shape {data.shape}, dtype {data.dtype}, mean {data.mean():.4f}")
