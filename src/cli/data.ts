// `onnx-hydra data download <name>`: fetch a public dataset for --data (needs a network; nothing else does).
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { downloadDataset, SOURCES } from '../data/download.js';
import { loadData } from '../data/index.js';
import { printJson } from './common.js';

type Args = Record<string, unknown> & { name: string };

export const dataCommand: CommandModule<object, Args> = {
  command: 'data <action> <name>',
  describe: 'download a public dataset (fashion-mnist, mnist, cifar10, cifar100) and print the --data spec that reads it',
  builder: (y) =>
    y
      .positional('action', { type: 'string', choices: ['download'], demandOption: true })
      .positional('name', { type: 'string', choices: Object.keys(SOURCES), demandOption: true })
      .option('dir', { type: 'string', describe: 'target folder (default: data/<name>)' })
      .option('base-url', { type: 'string', describe: 'a mirror to download from instead of the official host' })
      .option('json', { type: 'boolean', default: false }) as never,
  handler: async (a) => {
    const dir = (a.dir as string | undefined) ?? path.join('data', a.name);
    const r = await downloadDataset(a.name, dir, { baseUrl: a['base-url'] as string | undefined, quiet: !!a.json });
    const d = loadData(r.spec);
    const out = { name: a.name, dir, spec: r.spec, files: r.files, train: d.train.length, test: d.test.length, image_shape: d.test.shape, classes: d.test.classes };
    if (a.json) printJson(out);
    else process.stdout.write(`${a.name}: ${d.train.length} training and ${d.test.length} test images [${d.test.shape}] in ${dir}\n  use: --data ${r.spec}\n`);
  },
};
