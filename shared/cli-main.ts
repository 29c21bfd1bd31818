// What the three binaries share around their main(): argument parsing whose mistakes are
// usage errors, and one way of reporting a failure. A configuration or usage error is one line
// per problem naming the field or the argument, exit status 2; any other failure is one line,
// exit status 1; stack traces only at logLevel debug. Imports nothing heavy: the CLI loads it.
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { ConfigError } from './errors.ts'

/** A mistake on the command line (unknown command or option, missing value, stray argument). */
export class UsageError extends ConfigError {
  constructor (message: string) { super(message); this.name = 'UsageError' }
}

const isParseArgsError = (err: unknown): err is Error & { code: string } =>
  typeof (err as { code?: unknown })?.code === 'string' && (err as { code: string }).code.startsWith('ERR_PARSE_ARGS_')

/** node:util's parseArgs messages, made short and one line. */
function usageMessage (err: Error & { code: string }): string {
  const quoted = /'([^']*)'/.exec(err.message)?.[1] ?? ''
  const option = /--[\w-]+/.exec(quoted)?.[0] ?? quoted
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': return `unknown option ${quoted} (see --help)`
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': return `unexpected argument "${quoted}" (see --help)`
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (/argument missing/.test(err.message)) return `option ${option} needs a value`
      if (/ambiguous/.test(err.message)) return `option ${option} needs a value (one starting with "-" is written ${option}=VALUE)`
      if (/does not take an argument/.test(err.message)) return `option ${option} takes no value`
      return err.message.split('\n', 1)[0]!
    default: return err.message.split('\n', 1)[0]!
  }
}

/** parseArgs (strict) whose errors are UsageErrors: one line naming the argument, exit 2. */
export function parseCommandLine<T extends ParseArgsConfig> (config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config)
  } catch (err) {
    if (isParseArgsError(err)) throw new UsageError(usageMessage(err))
    throw err
  }
}

export interface DaemonArgs {
  /** undefined when --help was printed */
  configFile?: string
  overrides: Array<[string, string]>
  printPeerId: boolean
  help: boolean
}

/** The flags both daemons share: --config, --set key.path=value, --print-peer-id, --help. */
export function parseDaemonArgs (argv: string[], usage: string): DaemonArgs {
  const { values } = parseCommandLine({
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
    if (i < 1) throw new UsageError(`--set ${kv}: expected key.path=value`)
    return [kv.slice(0, i), kv.slice(i + 1)]
  })
  return {
    ...(values.config != null ? { configFile: values.config } : {}),
    overrides,
    printPeerId: values['print-peer-id'] === true,
    help: values.help === true
  }
}

let stackTraces = false
/** Failures print their stack trace too (the daemons call this with their logLevel once the config is loaded). */
export function reportStacksAt (logLevel: string): void {
  stackTraces = logLevel === 'debug' || logLevel === 'trace'
}

/** What runMain prints for a failure, and the exit status. */
export function describeFailure (err: unknown): { text: string, code: number } {
  if (err instanceof ConfigError || isParseArgsError(err)) {
    const message = err instanceof ConfigError ? err.message : usageMessage(err)
    return { text: message.split('\n').filter((l) => l.trim() !== '').map((l) => `error: ${l}\n`).join(''), code: 2 }
  }
  const message = err instanceof Error ? err.message : String(err)
  let text = `error: ${message.split('\n').map((l) => l.trim()).filter((l) => l !== '').join(' ')}\n`
  if (stackTraces) {
    for (let e: unknown = err; e instanceof Error; e = e.cause) text += `${e.stack ?? e.message}\n`
  }
  return { text, code: 1 }
}

/** Runs a binary's main; a failure prints as describeFailure says and exits 2 (config, usage) or 1. */
export function runMain (fn: () => Promise<void>, opts: { stack?: boolean } = {}): void {
  if (opts.stack === true) stackTraces = true
  fn().catch((err: unknown) => {
    const { text, code } = describeFailure(err)
    process.stderr.write(text)
    process.exit(code)
  })
}
