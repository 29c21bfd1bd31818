import { ConfigError } from './config.ts'

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
