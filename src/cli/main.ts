// onnx-hydra command line: one yargs subcommand per job; every command has --json.
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { UserError } from '../util/errors.js';
import { exitWithStarter } from '../util/lifetime.js';
import { inspectCommand } from './inspect.js';
import { checkCommand } from './check.js';
import { trainCommand } from './train.js';
import { pruneCommand } from './prune.js';
import { verifyCommand } from './verify.js';
import { quantizeCommand } from './quantize.js';
import { runCommand } from './run.js';
import { dataCommand } from './data.js';
import { benchCommand } from './bench.js';

/** A message on one line: control characters (e.g. a newline inside a name read from a damaged file) escaped. */
function oneLine(msg: string): string {
  return msg.replace(/[\u0000-\u001f\u007f]/g, (ch) => JSON.stringify(ch).slice(1, -1));
}

export async function main(argv: string[]): Promise<void> {
  exitWithStarter();
  const cli: Argv = yargs(hideBin(argv))
    .scriptName('onnx-hydra')
    .parserConfiguration({ 'camel-case-expansion': false })
    .usage('$0 <command> [options]\n\nMake ONNX classifiers small and adversarially robust, and prove it.')
    .command(inspectCommand)
    .command(checkCommand)
    .command(trainCommand as never)
    .command(pruneCommand as never)
    .command(quantizeCommand as never)
    .command(verifyCommand as never)
    .command(runCommand as never)
    .command(dataCommand as never)
    .command(benchCommand as never)
    .demandCommand(1, 'name a command (see --help)')
    .strictCommands()
    .strictOptions()
    .option('debug', { type: 'boolean', default: false, describe: 'print stack traces of internal errors', global: true })
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`onnx-hydra: ${msg}\n(see onnx-hydra --help)\n`);
      void y;
      process.exit(2);
    });
  try {
    await cli.parseAsync();
  } catch (e) {
    if (e instanceof UserError) {
      process.stderr.write(`onnx-hydra: error: ${oneLine(e.message)}\n`);
      process.exit(2);
    }
    const err = e as Error;
    process.stderr.write(`onnx-hydra: internal error: ${oneLine(err.message)}\n`);
    if (argv.includes('--debug')) process.stderr.write(`${err.stack}\n`);
    else process.stderr.write('(run again with --debug for the stack trace)\n');
    process.exit(3);
  }
}
