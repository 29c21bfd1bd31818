// shared/cli-main.ts: command-line mistakes become one-line usage errors (exit 2) and any other
// failure one line (exit 1), stack traces only when asked for. The binaries themselves are run
// in test/integration/cli-errors.test.ts.
import { afterEach, describe, expect, it } from 'vitest'
import { UsageError, describeFailure, parseCommandLine, parseDaemonArgs, reportStacksAt } from '../../shared/cli-main.ts'
import { ConfigError } from '../../shared/errors.ts'

const usageError = (fn: () => unknown): string => {
  let thrown: unknown
  try { fn() } catch (err) { thrown = err }
  expect(thrown).toBeInstanceOf(UsageError)
  expect(thrown).toBeInstanceOf(ConfigError) // exits 2
  return (thrown as Error).message
}

describe('parseDaemonArgs / parseCommandLine', () => {
  it('names the argument in one line', () => {
    expect(usageError(() => parseDaemonArgs(['--config'], ''))).toBe('option --config needs a value')
    expect(usageError(() => parseDaemonArgs(['-c'], ''))).toBe('option --config needs a value')
    expect(usageError(() => parseDaemonArgs(['--config', '--set', 'a=b'], ''))).toBe('option --config needs a value (one starting with "-" is written --config=VALUE)')
    expect(usageError(() => parseDaemonArgs(['--bogus'], ''))).toBe('unknown option --bogus (see --help)')
    expect(usageError(() => parseDaemonArgs(['agent.yaml'], ''))).toBe('unexpected argument "agent.yaml" (see --help)')
    expect(usageError(() => parseDaemonArgs(['--help=yes'], ''))).toBe('option --help takes no value')
    expect(usageError(() => parseDaemonArgs(['--set', 'novalue'], ''))).toBe('--set novalue: expected key.path=value')
    expect(parseDaemonArgs(['--config', 'a.yaml', '--set', 'x.y=1=2'], '')).toEqual({ configFile: 'a.yaml', overrides: [['x.y', '1=2']], printPeerId: false, help: false })
  })

  it('parseCommandLine returns what parseArgs returns', () => {
    const { values, positionals } = parseCommandLine({ args: ['ping', 'x', '-c', '2'], allowPositionals: true, options: { count: { type: 'string', short: 'c' } } })
    expect(values.count).toBe('2')
    expect(positionals).toEqual(['ping', 'x'])
  })
})

describe('describeFailure', () => {
  afterEach(() => { reportStacksAt('info') })

  it('config errors: one "error:" line per problem, exit 2', () => {
    expect(describeFailure(new ConfigError('invalid configuration in f: a: x\ninvalid configuration in f: b: y'))).toEqual({ text: 'error: invalid configuration in f: a: x\nerror: invalid configuration in f: b: y\n', code: 2 })
    const parseArgsError = Object.assign(new Error("Option '-c, --config <value>' argument missing"), { code: 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' })
    expect(describeFailure(parseArgsError)).toEqual({ text: 'error: option --config needs a value\n', code: 2 })
  })

  it('other failures: one line, exit 1; the stack only at logLevel debug', () => {
    const err = new Error('metrics: listen EADDRINUSE: address already in use 127.0.0.1:9100', { cause: new Error('inner') })
    expect(describeFailure(err)).toEqual({ text: 'error: metrics: listen EADDRINUSE: address already in use 127.0.0.1:9100\n', code: 1 })
    expect(describeFailure(new Error('first\n  second\n'))).toEqual({ text: 'error: first second\n', code: 1 })
    expect(describeFailure('a string')).toEqual({ text: 'error: a string\n', code: 1 })
    reportStacksAt('debug')
    const { text } = describeFailure(err)
    expect(text.split('\n')[0]).toBe('error: metrics: listen EADDRINUSE: address already in use 127.0.0.1:9100')
    expect(text).toMatch(/\n {4}at /)
    expect(text).toContain('Error: inner')
  })
})
