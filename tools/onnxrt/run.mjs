#!/usr/bin/env node
// Runs an ONNX model (e.g. from `python3 -m anybit.onnx_export`) on a float32 .npy input
// with onnxruntime-node's CPU execution provider and writes the outputs as float32 .npy.
//
//   node tools/onnxrt/run.mjs MODEL.onnx X.npy OUT.npy [--batch 500] [--output NAME]
//                             [--opt disabled|basic|extended|all]
//
// X.npy is [N, ...] (float32, or float64 converted to float32); the model must have one
// input. The rows run in batches of --batch; OUT.npy gets the model's first output (or
// --output NAME) for all N rows. --opt sets onnxruntime's graph optimization level
// (default: all, which fuses QDQ groups into integer kernels such as QLinearConv).
//
// Setup (once): ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix tools/onnxrt
// (the skip keeps onnxruntime-node's postinstall from fetching CUDA binaries from nuget.org;
// the CPU binaries are in the npm package itself).
import { readFileSync, writeFileSync, renameSync, unlinkSync } from 'node:fs';
import { endianness } from 'node:os';
import { basename } from 'node:path';
import ort from 'onnxruntime-node';

const USAGE =
  'usage: node tools/onnxrt/run.mjs MODEL.onnx X.npy OUT.npy [--batch 500] [--output NAME] ' +
  '[--opt disabled|basic|extended|all]';

class UsageError extends Error {}

// --- .npy (format 1.0/2.0/3.0, C order, little endian) -----------------------------------

// Returns {shape, data: Float32Array} for a '<f4' or '<f8' array.
function readNpy(path) {
  const buf = readFileSync(path);
  const magic = '\x93NUMPY';
  if (buf.length < 10 || buf.toString('latin1', 0, 6) !== magic) {
    throw new Error(`${path}: not a .npy file (bad magic)`);
  }
  const major = buf[6];
  let headerLen, offset;
  if (major === 1) {
    headerLen = buf.readUInt16LE(8);
    offset = 10;
  } else if (major === 2 || major === 3) {
    headerLen = buf.readUInt32LE(8);
    offset = 12;
  } else {
    throw new Error(`${path}: unsupported .npy format version ${major}`);
  }
  const header = buf.toString(major === 3 ? 'utf8' : 'latin1', offset, offset + headerLen);
  const descr = /'descr':\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeText) throw new Error(`${path}: malformed .npy header: ${header.trim()}`);
  if (fortran[1] === 'True') throw new Error(`${path}: Fortran-order arrays are not supported (save with C order)`);
  const shape = shapeText[1].split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw new Error(`${path}: bad shape (${shapeText[1]})`);
  const count = shape.reduce((a, b) => a * b, 1);
  const start = offset + headerLen;
  const itemSize = { '<f4': 4, '<f8': 8 }[descr[1]];
  if (!itemSize) throw new Error(`${path}: dtype '${descr[1]}' is not float32 or float64 (little endian)`);
  if (buf.length - start < count * itemSize) {
    throw new Error(`${path}: truncated data: shape [${shape}] needs ${count * itemSize} bytes, ` +
                    `the file has ${buf.length - start}`);
  }
  // Copy into a fresh, aligned buffer (a Buffer may sit at any offset of a shared pool).
  const bytes = buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + start + count * itemSize);
  const data = itemSize === 4 ? new Float32Array(bytes) : Float32Array.from(new Float64Array(bytes));
  return { shape, data };
}

// Writes a float32 array as .npy 1.0 through a temporary file and a rename.
function writeNpy(path, shape, data) {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  // NumPy pads the header with spaces so that the data starts at a multiple of 64.
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, ' ') + '\n';
  const pre = Buffer.alloc(10);
  Buffer.from('\x93NUMPY', 'latin1').copy(pre, 0);
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* nothing written */ }
    throw e;
  }
}

// --- command line ------------------------------------------------------------------------

function parseArgs(argv) {
  const opts = { batch: 500, output: null, opt: 'all', positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--batch') {
      opts.batch = Number(value());
      if (!Number.isInteger(opts.batch) || opts.batch < 1) throw new UsageError('--batch must be an integer >= 1');
    } else if (a === '--output') {
      opts.output = value();
    } else if (a === '--opt') {
      opts.opt = value();
      if (!['disabled', 'basic', 'extended', 'all'].includes(opts.opt)) {
        throw new UsageError(`--opt must be disabled, basic, extended or all, got '${opts.opt}'`);
      }
    } else if (a === '-h' || a === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (a.startsWith('--')) {
      throw new UsageError(`unknown option ${a}`);
    } else {
      opts.positional.push(a);
    }
  }
  if (opts.positional.length !== 3) throw new UsageError('expected MODEL.onnx X.npy OUT.npy');
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const [modelPath, inputPath, outPath] = opts.positional;
  if (endianness() !== 'LE') throw new Error('this runner reads and writes little-endian .npy only');

  const x = readNpy(inputPath);
  if (x.shape.length < 1) throw new Error(`${inputPath}: expected an array [N, ...], got a scalar`);
  const session = await ort.InferenceSession.create(modelPath, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: opts.opt,
  });
  if (session.inputNames.length !== 1) {
    throw new Error(`${modelPath}: the model has ${session.inputNames.length} inputs, this runner feeds one`);
  }
  const outName = opts.output ?? session.outputNames[0];
  if (!session.outputNames.includes(outName)) {
    throw new Error(`${modelPath}: no output '${outName}' (outputs: ${session.outputNames.join(', ')})`);
  }

  const n = x.shape[0];
  const rowSize = x.shape.slice(1).reduce((a, b) => a * b, 1);
  let out = null;
  let outRowShape = null;
  for (let start = 0; start < n; start += opts.batch) {
    const b = Math.min(opts.batch, n - start);
    const rows = x.data.slice(start * rowSize, (start + b) * rowSize);
    const feed = new ort.Tensor('float32', rows, [b, ...x.shape.slice(1)]);
    const result = await session.run({ [session.inputNames[0]]: feed }, [outName]);
    const y = result[outName];
    if (y.type !== 'float32') throw new Error(`${modelPath}: output '${outName}' is ${y.type}, expected float32`);
    if (out === null) {
      outRowShape = y.dims.slice(1);
      out = new Float32Array(n * (y.data.length / b));
    }
    out.set(y.data, start * (out.length / n));
  }
  if (out === null) throw new Error(`${inputPath}: no rows (N = 0)`);
  writeNpy(outPath, [n, ...outRowShape], out);
  console.log(`${basename(outPath)}: ${outName} [${[n, ...outRowShape].join(', ')}] from ${n} rows ` +
              `in batches of ${opts.batch} (onnxruntime-node ${ort.env.versions.node})`);
}

main().catch((e) => {
  const usage = e instanceof UsageError;
  const message = String(e.message ?? e).trim().replace(/\s*\n\s*/g, ' ');  // one line
  console.error(`run.mjs: error: ${message}${usage ? `\n${USAGE}` : ''}`);
  process.exit(usage ? 2 : 1);
});
