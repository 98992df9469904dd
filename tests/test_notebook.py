"""A real notebook, run headless (nbclient and a real IPython kernel) against a test lab:
help from describe(), a live plot of a job, an awaited job, a remote error's traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pyroinst

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
    server.add_device(DummyDevice(idn_delay=0.01), "dev")
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


def test_the_readmes_notebook_runs(lab, monkeypatch):
    """The README's notebook, cell by cell (``# %%``), in a real kernel."""
    from tests import docs

    monkeypatch.setenv("PYROINST_NS_HOST", lab.host)  # the kernel inherits these
    monkeypatch.setenv("PYROINST_NS_PORT", str(lab.port))
    sources = [c.strip() for c in docs.block("readme-notebook").split("# %%") if c.strip()]
    sources.append("print('SHAPE', data.shape)")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    texts = [_outputs_text(cell) for cell in nb.cells]
    assert "measure(time: int)" in texts[0]
    assert "application/vnd.jupyter.widget-view+json" in texts[1]
    assert "SHAPE (2000,)" in texts[-1]


class Imager:
    """Publishes frames and (x, y) pieces."""

    @pyroinst.job
    def frames(self, n: int) -> int:
        """``n`` 2-D frames, the last one all n."""
        for i in range(n):
            pyroinst.current_job().publish(np.full((4, 6), float(i + 1)))
        return n

    @pyroinst.job
    def pieces(self, n: int) -> int:
        """``n`` items {"x": [...], "y": [...]} of two points each."""
        for i in range(n):
            pyroinst.current_job().publish({"x": [10 * i, 10 * i + 5], "y": [i, -i]})
        return n


def test_live_plot_items_lines_images_and_pairs(lab):
    from pyroinst.notebook import LivePlot

    server = pyroinst.InstServer(host="127.0.0.1", port=0, ns_host=lab.host, ns_port=lab.port)
    server.add_device(Imager(), "imager")
    server.start()
    try:
        dev = pyroinst.connect("imager", lab.host, lab.port)
        frames = dev.frames(3).plot()
        assert frames.wait(30)
        w = frames.widget
        assert (w.kind, w.shape, w.items, w.state) == ("image", [4, 6], 3, "done")
        assert np.all(np.frombuffer(w.image, dtype=np.float32) == 3.0)  # the newest frame
        pieces = dev.pieces(4).plot()
        assert pieces.wait(30)
        w = pieces.widget
        assert w.x == [0, 5, 10, 15, 20, 25, 30, 35] and w.y == [0, 0, 1, -1, 2, -2, 3, -3]
        small = LivePlot(dev.pieces(50).stream(), max_points=16)
        assert small.wait(30)
        assert len(small.widget.y) <= 16 and small.widget.items == 50
        pyroinst.disconnect(dev)
    finally:
        server.stop()


def test_live_plot_without_the_extra_says_what_to_install(monkeypatch):
    from pyroinst import notebook

    monkeypatch.setattr(notebook, "anywidget", None)
    monkeypatch.delitem(notebook.__dict__, "_LIVE_PLOT_CLASS", raising=False)
    with pytest.raises(pyroinst.ConfigurationError, match=r"pyroinst\[notebook\]"):
        notebook._widget_class()
