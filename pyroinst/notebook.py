"""Live plots in a notebook: ``job.plot()`` and ``dev.watch(channel).plot()``.

Needs the extra ``pyroinst[notebook]`` (anywidget). The widget is an anywidget drawn with
the uPlot pyroinst already vendors for its dashboard, loaded from the package itself, so
it works offline; uPlot redraws a 100,000-point line in a few milliseconds, and nothing
is installed into Jupyter (matplotlib through ipympl needs a front-end extension and
redraws far slower).

What is drawn, from the items read so far (as the dashboard does):

* a number, a 1-D array or list: appended to one growing line (x: the running index);
* ``{"x": ..., "y": ...}``: appended with its own x;
* a channel's ``(timestamp, value)`` pairs: value against time;
* a 2-D array: an image (the newest one), with its own colour scale.

``plot()`` returns at once; a thread of the widget reads the stream and updates the
widget's state (``x``, ``y``, ``image``, ``items``, ``state``) every ``interval`` seconds
while the job runs, and once more when the stream ends (``state`` then "done", or
"failed: ..."). At most ``max_points`` points are kept (every second point is dropped
when full: the shape stays, the detail halves). ``close()`` stops reading; ``wait()``
waits (bounded) for the end.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .streams import Stream

__all__ = ["LivePlot", "live_plot", "MAX_POINTS"]

log = logging.getLogger(__name__)

_DRAWN = ("kind", "time_axis", "x", "y", "image", "shape", "items", "dropped", "state")

#: Most points a live plot keeps (halved by dropping every second point when full).
MAX_POINTS = 100_000

try:
    import anywidget
    import traitlets
except ImportError:  # the extra is not installed: plot() says how to get it
    anywidget = None
    traitlets = None


def _vendor(name: str) -> str:
    return (
        resources.files("pyroinst.web")
        .joinpath("static", "vendor", "uplot", name)
        .read_text(encoding="utf-8")
    )


_RENDER = r"""
function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "pyroinst-plot";
  const head = document.createElement("div");
  head.className = "pyroinst-plot-head";
  const area = document.createElement("div");
  box.append(head, area);
  el.appendChild(box);
  let plot = null, canvas = null;
  function line() {
    if (canvas) { canvas.remove(); canvas = null; }
    const data = [model.get("x"), model.get("y")];
    if (!plot) {
      plot = new uPlot({
        width: Math.max(300, (el.clientWidth || 640) - 20), height: 300,
        scales: { x: { time: model.get("time_axis") } },
        series: [{}, { label: model.get("label") || "value", stroke: "#1f77b4", width: 1 }],
      }, data, area);
    } else {
      plot.setData(data);
    }
  }
  function image() {
    if (plot) { plot.destroy(); plot = null; }
    const [rows, cols] = model.get("shape");
    const view = model.get("image");
    if (!rows || !cols || !view) return;
    const values = new Float32Array(view.buffer, view.byteOffset, rows * cols);
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    const span = hi > lo ? hi - lo : 1;
    if (!canvas) { canvas = document.createElement("canvas"); area.appendChild(canvas); }
    canvas.width = cols; canvas.height = rows;
    canvas.style.width = Math.min(640, Math.max(200, cols)) + "px";
    canvas.style.imageRendering = "pixelated";
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(cols, rows);
    for (let i = 0; i < values.length; i++) {
      const t = (values[i] - lo) / span;
      img.data[4 * i] = 255 * Math.min(1, 1.5 * t);
      img.data[4 * i + 1] = 255 * t * t;
      img.data[4 * i + 2] = 255 * (1 - t) * 0.6;
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }
  function draw() {
    head.textContent = `${model.get("title")}: ${model.get("items")} items, ` +
      `${model.get("state")}` + (model.get("dropped") ? `, ${model.get("dropped")} dropped` : "");
    if (model.get("kind") === "image") image(); else line();
  }
  for (const name of ["x", "y", "image", "items", "state", "kind"]) {
    model.on("change:" + name, draw);
  }
  draw();
  return () => { if (plot) plot.destroy(); };
}
export default { render };
"""

_CSS = """
.pyroinst-plot { font-family: sans-serif; font-size: 12px; }
.pyroinst-plot-head { margin: 2px 0 4px 0; color: #333; }
"""


def _widget_class() -> type:
    if anywidget is None:
        raise ConfigurationError(
            "live plots in a notebook need the notebook extra: pip install 'pyroinst[notebook]'"
        )
    cached = globals().get("_LIVE_PLOT_CLASS")
    if cached is not None:
        return cached  # type: ignore[no-any-return]

    class LivePlotWidget(anywidget.AnyWidget):  # type: ignore[misc, name-defined]
        """The widget behind ``LivePlot`` (its state is what the notebook saves)."""

        _esm = _vendor("uPlot.iife.min.js") + "\n" + _RENDER
        _css = _vendor("uPlot.min.css") + _CSS
        title = traitlets.Unicode("").tag(sync=True)
        label = traitlets.Unicode("").tag(sync=True)
        kind = traitlets.Unicode("line").tag(sync=True)
        time_axis = traitlets.Bool(False).tag(sync=True)
        x = traitlets.List(traitlets.Float()).tag(sync=True)
        y = traitlets.List(traitlets.Float()).tag(sync=True)
        image = traitlets.Bytes(b"").tag(sync=True)
        shape = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)
        items = traitlets.Int(0).tag(sync=True)
        dropped = traitlets.Int(0).tag(sync=True)
        state = traitlets.Unicode("running").tag(sync=True)

    globals()["_LIVE_PLOT_CLASS"] = LivePlotWidget
    return LivePlotWidget


class LivePlot:
    """A live plot of a stream in a notebook; displays as its widget.

    ``widget`` is the anywidget (its traits hold what is drawn: ``x``, ``y``, ``image``,
    ``shape``, ``items``, ``state``). ``wait(timeout)``: True once the stream ended and
    the last update was made. ``close()``: stop reading (the plot stays as it is).
    """

    def __init__(
        self,
        stream: Stream,
        title: str = "",
        interval: float = 0.2,
        max_points: int = MAX_POINTS,
    ) -> None:
        self.widget = _widget_class()(title=title or repr(stream), label=title)
        self.stream = stream
        self.interval = float(interval)
        self.max_points = int(max_points)
        self._x: list[float] = []
        self._y: list[float] = []
        self._image: np.ndarray | None = None
        self._items = 0
        self._index = 0
        self._time_axis = False
        self._ended = threading.Event()
        self._final = "running"
        self._lock = threading.Lock()
        # Run in the notebook cell's context, so the kernel files the updates under it.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._read,), name="pyroinst-live-plot", daemon=True
        )
        self._thread.start()

    # -- reading -------------------------------------------------------------------------
    def _read(self) -> None:
        state = "done"
        last = 0.0
        try:
            while True:
                batch = self.stream.read()
                if batch is None:
                    break
                for item in batch:
                    self._add(item)
                now = time.monotonic()
                if batch and now - last >= self.interval:
                    self._push("running")
                    last = now
        except Exception as exc:  # noqa: BLE001 - shown in the plot, and logged
            state = f"failed: {type(exc).__name__}: {exc}"
            log.warning("live plot of %r stopped: %s", self.stream, exc)
        finally:
            self._final = state
            self._push(state)
            self._ended.set()

    def _add(self, item: Any) -> None:
        self._items += 1
        when = None
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], float):
            when, item = item  # a channel's (timestamp, value)
        if isinstance(item, dict) and "x" in item and "y" in item:
            xs = np.ravel(np.asarray(item["x"], dtype=float))
            ys = np.ravel(np.asarray(item["y"], dtype=float))
            self._extend(xs.tolist(), ys.tolist())
            return
        value = np.asarray(item)
        if value.ndim == 2:
            self._image = value.astype(np.float32)
            return
        if value.dtype.kind not in "biuf":
            return  # text and the like: counted, not drawn
        ys = np.ravel(value).astype(float)
        if when is not None and ys.size == 1:
            self._time_axis = True
            self._extend([when], ys.tolist())
            return
        xs = np.arange(self._index, self._index + ys.size, dtype=float)
        self._extend(xs.tolist(), ys.tolist())

    def _extend(self, xs: list[float], ys: list[float]) -> None:
        n = min(len(xs), len(ys))
        self._x.extend(xs[:n])
        self._y.extend(ys[:n])
        self._index += n
        while len(self._y) > self.max_points:
            self._x = self._x[::2]
            self._y = self._y[::2]

    def _push(self, state: str) -> None:
        widget = self.widget
        with self._lock, widget.hold_sync():
            if self._image is not None:
                widget.kind = "image"
                widget.shape = list(self._image.shape)
                widget.image = self._image.tobytes()
            else:
                widget.time_axis = self._time_axis
                widget.x = list(self._x)
                widget.y = list(self._y)
            widget.items = self._items
            widget.dropped = int(getattr(self.stream, "dropped", 0))
            widget.state = state

    # -- use -----------------------------------------------------------------------------
    def wait(self, timeout: float = 60.0) -> bool:
        """True once the stream ended and the plot shows all of it (waits ``timeout``).

        The final state is sent again from the calling thread: a notebook saved after
        the cell that waited keeps the whole plot."""
        if not self._ended.wait(timeout):
            return False
        with self._lock:
            self.widget.send_state(list(_DRAWN))
        return True

    def close(self) -> None:
        """Stop reading; the plot keeps what it shows."""
        self.stream.close()
        self._thread.join(5.0)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<LivePlot of {self.stream!r}: {self._items} items, {self.widget.state}>"


def live_plot(stream: Stream, title: str = "", **options: Any) -> LivePlot:
    """A ``LivePlot`` of ``stream`` (``Stream.plot()`` and ``JobHandle.plot()`` call this)."""
    return LivePlot(stream, title, **options)
