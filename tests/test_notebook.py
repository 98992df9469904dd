"""A real notebook, run headless (nbclient and a real IPython kernel) against a test lab:
help from describe(), a live plot of a job, an awaited job, a remote error's traceback."""

from __future__ import annotations

import json

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("anywidget")

from devices.dummy import DummyDevice  # noqa: E402
from tests.helpers import Echo  # noqa: E402


@pytest.fixture(scope="module")
def lab():
    from pyroinst import EmbeddedNameServer, InstServer

    ns = EmbeddedNameServer("127.0.0.1", 0).start()
    server = InstServer(host="127.0.0.1", port=0, ns_host=ns.host, ns_port=ns.port)
    server.add_device(DummyDevice(idn_delay=0.01), "dmm")
    server.add_device(Echo(), "echo")
    server.start()
    yield ns
    server.stop()
    ns.stop()


def _outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(json.dumps(out.get("data", {})))
        elif out.get("output_type") == "error":
            parts.append("\n".join(out.get("traceback", [])))
    return "\n".join(parts)


def test_a_notebook_drives_a_lab(lab):
    where = f"{lab.host!r}, {lab.port}"
    cells = [
        f"import inspect, numpy as np, pyroinst\ndev = pyroinst.connect('dmm', {where})\ndev",
        "job = dev.measure(300)\nplot = job.plot()\nplot",
        "assert plot.wait(60)\nw = plot.widget\n"
        "print('ITEMS', w.items, 'POINTS', len(w.y), 'STATE', w.state)\n"
        "print('SAME', np.allclose(w.y, job.result()))",
        "again = dev.measure(50)\nresult = await again\nprint('AWAITED', result.shape)",
        "print(get_ipython().object_inspect_text('dev.measure'))\n"
        "print('SIGNATURE', inspect.signature(dev.measure))",
        f"echo = pyroinst.connect('echo', {where})\necho.fail('from the notebook')",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=True, store_widget_state=True
    )
    client.execute()
    texts = [_outputs_text(cell) for cell in nb.cells]
    for i, text in enumerate(texts[:-1]):
        assert '"ename"' not in text and "Traceback" not in text, (i, text)

    # The device's help, as IPython displays it: its methods with signatures.
    assert "measure(time: int) -> numpy.ndarray" in texts[0]
    assert "text/html" in texts[0] and "DeviceProxy" in texts[0]
    # The live plot: a widget, holding every item of the job at the end.
    assert "application/vnd.jupyter.widget-view+json" in texts[1]
    assert "POINTS 300" in texts[2] and "STATE done" in texts[2], texts[2]
    assert "SAME True" in texts[2]
    items = int(texts[2].split("ITEMS ")[1].split()[0])
    assert items >= 2
    # The widget state the notebook keeps holds all the points too.
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = [m["state"] for m in state.get("state", {}).values() if "items" in m["state"]]
    assert models and len(models[0]["y"]) == 300 and models[0]["state"] == "done"
    # await in a notebook cell (Jupyter's running loop).
    assert "AWAITED (50,)" in texts[3]
    # dev.measure? shows the driver's docstring and signature.
    assert "Measure for ``time`` milliseconds" in texts[4]
    assert "SIGNATURE (time: int) -> numpy.ndarray" in texts[4]
    # The remote error's traceback names the driver's function.
    assert "RemoteError" in texts[5] and "from the notebook" in texts[5]
    assert "in fail" in texts[5] and "helpers.py" in texts[5]
