// NumPy .npy (format version 1.0) for float32 arrays. Hand-written: npyjs's dump pads the header to a
// multiple of 8 bytes, the format asks for 64 (numpy.lib.format: magic + length + header ≡ 0 mod 64).
const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** The bytes of a C-order little-endian float32 array of the given shape. */
export function encodeNpyFloat32(data: Float32Array, shape: number[]): Uint8Array {
  const count = shape.reduce((a, d) => a * d, 1);
  if (count !== data.length) throw new Error(`npy: shape [${shape}] holds ${count} values, the data ${data.length}`);
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  const fixed = MAGIC.length + 2 + 2; // magic, version 1.0, 2-byte header length
  header += ' '.repeat((64 - ((fixed + header.length + 1) % 64)) % 64) + '\n';
  if (header.length > 0xffff) throw new Error(`npy: a header of ${header.length} bytes needs format version 2.0`);
  const out = new Uint8Array(fixed + header.length + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[fixed + i] = header.charCodeAt(i);
  const body = new DataView(out.buffer, fixed + header.length);
  for (let i = 0; i < data.length; i++) body.setFloat32(4 * i, data[i]!, true);
  return out;
}
