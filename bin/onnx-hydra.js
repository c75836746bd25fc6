#!/usr/bin/env node
// Entry point of the `onnx-hydra` command (the TypeScript is compiled to dist/ by `npm ci` / `npm run build`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('onnx-hydra: not built yet; run `npm run build` in the onnx-hydra folder\n');
  process.exit(2);
}
// the watcher that ends this process with its starter (npx, `run`) starts before the heavy modules load:
// a starter killed during those seconds would otherwise leave this process running
const { exitWithStarter } = await import(new URL('../dist/src/util/lifetime.js', import.meta.url).href);
exitWithStarter();
const { main } = await import(entry.href);
await main(process.argv);
