// The one host:port parser: config addresses, listeners and `--proxy` read the same text the same way.
import { describe, expect, it } from 'vitest'
import { parseHostPort, parseHostPortOption, splitHostPort } from '../../shared/host-port.ts'
import { ConfigError } from '../../shared/errors.ts'

describe('host:port', () => {
  it('names, IPv4 and bracketed IPv6 (brackets dropped); port 0 to 65535', () => {
    expect(splitHostPort('127.0.0.1:10800')).toEqual({ host: '127.0.0.1', port: 10800 })
    expect(splitHostPort('localhost:0')).toEqual({ host: 'localhost', port: 0 })
    expect(splitHostPort('[::1]:9090')).toEqual({ host: '::1', port: 9090 })
    expect(splitHostPort('[::ffff:10.0.0.1]:53')).toEqual({ host: '::ffff:10.0.0.1', port: 53 })
    expect(splitHostPort('0.0.0.0:65535')).toEqual({ host: '0.0.0.0', port: 65535 })
    for (const bad of ['localhost', ':80', 'a:65536', 'a:123456', '::1:53', 'a b:80', '[x]:80', 'a:', 'a:-1']) expect(splitHostPort(bad), bad).toBeUndefined()
  })

  it('config addresses: a ConfigError saying host:port', () => {
    expect(parseHostPort('[::]:53')).toEqual({ host: '::', port: 53 })
    expect(() => parseHostPort('nope')).toThrow(new ConfigError('nope: expected host:port'))
  })

  it('command-line options: port 1 or more, the error names the option', () => {
    expect(parseHostPortOption('127.0.0.1:10800', '--proxy')).toEqual({ host: '127.0.0.1', port: 10800 })
    expect(() => parseHostPortOption('127.0.0.1:0', '--proxy')).toThrow(new ConfigError('--proxy 127.0.0.1:0: expected HOST:PORT, e.g. 127.0.0.1:10800'))
    expect(() => parseHostPortOption('x', 'EDGEMESH_SOCKS_PROXY')).toThrow(/^EDGEMESH_SOCKS_PROXY x: expected HOST:PORT/)
  })
})
