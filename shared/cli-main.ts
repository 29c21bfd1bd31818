import { parseArgs } from 'node:util'
import { ConfigError } from './config.ts'

export interface DaemonArgs {
  /** undefined when --help was printed */
  configFile?: string
  overrides: Array<[string, string]>
  printPeerId: boolean
  help: boolean
}

/** The flags both daemons share: --config, --set key.path=value, --print-peer-id, --help. */
export function parseDaemonArgs (argv: string[], usage: string): DaemonArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      set: { type: 'string', multiple: true },
      'print-peer-id': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' }
    }
  })
  if (values.help === true) process.stdout.write(usage)
  const overrides = (values.set ?? []).map((kv): [string, string] => {
    const i = kv.indexOf('=')
    if (i < 1) throw new ConfigError(`--set ${kv}: expected key.path=value`)
    return [kv.slice(0, i), kv.slice(i + 1)]
  })
  return {
    ...(values.config != null ? { configFile: values.config } : {}),
    overrides,
    printPeerId: values['print-peer-id'] === true,
    help: values.help === true
  }
}

/** Runs a binary's main: configuration errors print one clear message and exit 2. */
export function runMain (fn: () => Promise<void>, opts: { stack?: boolean } = {}): void {
  fn().catch((err: unknown) => {
    if (err instanceof ConfigError || (err as any)?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      process.stderr.write(`error: ${(err as Error).message}\n`)
      process.exit(2)
    }
    if (opts.stack === false) process.stderr.write(`error: ${(err as Error)?.message ?? String(err)}\n`)
    else process.stderr.write(`fatal: ${(err as Error)?.stack ?? String(err)}\n`)
    process.exit(1)
  })
}
