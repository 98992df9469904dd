// Reading .npy files (numpy's format) in the browser: little-endian numeric arrays.
"use strict";
const NPY = (() => {
  const TYPES = {
    f8: Float64Array, f4: Float32Array, i8: BigInt64Array, u8: BigUint64Array,
    i4: Int32Array, u4: Uint32Array, i2: Int16Array, u2: Uint16Array,
    i1: Int8Array, u1: Uint8Array, b1: Uint8Array,
  };
  function parse(buffer) {
    const bytes = new Uint8Array(buffer);
    if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.slice(1, 6)) !== "NUMPY") {
      throw new Error("not a .npy file");
    }
    const view = new DataView(buffer);
    const major = bytes[6];
    const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
    const start = major === 1 ? 10 : 12;
    const header = new TextDecoder().decode(bytes.slice(start, start + headerLength));
    const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
    const fortran = /'fortran_order':\s*True/.test(header);
    const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)[1];
    const shape = shapeText.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    const kind = descr.slice(1);
    if (descr[0] === ">" || !(kind in TYPES)) throw new Error("unsupported dtype " + descr);
    const Type = TYPES[kind];
    let data = new Type(buffer, start + headerLength);
    if (Type === BigInt64Array || Type === BigUint64Array) data = Float64Array.from(data, Number);
    return { dtype: descr, shape, fortran, data };
  }
  return { parse };
})();
