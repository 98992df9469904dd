// Plots of a job's stream: a line (uPlot) for 1-D data and scalar series, an image with a
// colour scale for 2-D data.
"use strict";
const Plot = (() => {
  // viridis, sampled at 9 points and interpolated into 256 colours.
  const STOPS = [
    [68, 1, 84], [71, 45, 123], [59, 82, 139], [44, 114, 142], [33, 145, 140],
    [40, 174, 128], [94, 201, 98], [173, 220, 48], [253, 231, 37],
  ];
  const LUT = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (STOPS.length - 1);
    const k = Math.min(Math.floor(x), STOPS.length - 2);
    const f = x - k;
    for (let c = 0; c < 3; c++) LUT[i * 3 + c] = STOPS[k][c] + f * (STOPS[k + 1][c] - STOPS[k][c]);
  }

  function range(data) {
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (!isFinite(lo)) return [0, 1];
    return lo === hi ? [lo - 0.5, hi + 0.5] : [lo, hi];
  }

  class Line {
    constructor(el, label, options = {}) {
      this.el = el;
      this.label = label;
      this.time = Boolean(options.time);
      this.height = options.height || 320;
      this.u = null;
    }
    draw(x, y) {
      const width = Math.max(this.el.clientWidth, 320);
      if (!this.u) {
        this.u = new uPlot({
          width, height: this.height,
          scales: { x: { time: this.time } },
          series: [{ label: this.time ? "time" : "index" }, { label: this.label, stroke: "#2c72b8", width: 1.5 }],
          legend: { show: false },
        }, [x, y], this.el);
      } else {
        this.u.setData([x, y]);
      }
    }
    destroy() { if (this.u) this.u.destroy(); this.u = null; }
  }

  class Image {
    constructor(el) {
      this.el = el;
      this.canvas = document.createElement("canvas");
      this.canvas.className = "image";
      this.scale = document.createElement("div");
      this.scale.className = "colour-scale";
      this.scale.innerHTML = '<span class="hi"></span><div class="bar"></div><span class="lo"></span>';
      el.append(this.canvas, this.scale);
      const bar = this.scale.querySelector(".bar");
      bar.style.background = "linear-gradient(to top, " +
        STOPS.map((c) => `rgb(${c.join(",")})`).join(", ") + ")";
    }
    draw(data, rows, cols) {
      if (this.canvas.width !== cols || this.canvas.height !== rows) {
        this.canvas.width = cols;
        this.canvas.height = rows;
        this.pixels = this.canvas.getContext("2d").createImageData(cols, rows);
      }
      const [lo, hi] = range(data);
      const k = 255 / (hi - lo);
      const out = this.pixels.data;
      for (let i = 0, j = 0; i < data.length; i++, j += 4) {
        let v = ((data[i] - lo) * k) | 0;
        v = v < 0 ? 0 : v > 255 ? 255 : v;
        out[j] = LUT[v * 3]; out[j + 1] = LUT[v * 3 + 1]; out[j + 2] = LUT[v * 3 + 2]; out[j + 3] = 255;
      }
      this.canvas.getContext("2d").putImageData(this.pixels, 0, 0);
      this.scale.querySelector(".hi").textContent = hi.toPrecision(4);
      this.scale.querySelector(".lo").textContent = lo.toPrecision(4);
    }
    destroy() { this.el.replaceChildren(); }
  }

  return { Line, Image, range };
})();
