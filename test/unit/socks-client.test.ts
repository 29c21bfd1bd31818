// The client half of SOCKS5 used by `edgemesh nc` (agent/control/socks-client.ts), its argument
// parsing (nc.ts) and the ssh_config stanza (ssh-config.ts): exact bytes, replies split at every
// byte boundary, fuzzed replies that never throw, and one-line errors for bad command lines.
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { connectRequest, greeting, parseAuthStatus, parseMethodChoice, parseReply, replyText, userPassRequest } from '../../agent/control/socks-client.ts'
import { parseNcArgs } from '../../agent/control/nc.ts'
import { parseSshConfigArgs, selfCommand, shellWord, sshConfigStanza } from '../../agent/control/ssh-config.ts'
import { ConfigError } from '../../shared/errors.ts'

describe('SOCKS5 client bytes', () => {
  it('greets with no-auth, or with username/password only when it has credentials', () => {
    expect([...greeting()]).toEqual([5, 1, 0])
    expect([...greeting({ user: 'u', password: 'p' })]).toEqual([5, 1, 2])
  })

  it('sends the RFC 1929 sub-negotiation and refuses empty or over-long fields', () => {
    expect([...userPassRequest({ user: 'ops', password: 'pw' })]).toEqual([1, 3, 111, 112, 115, 2, 112, 119])
    expect(() => userPassRequest({ user: '', password: 'x' })).toThrow(RangeError)
    expect(() => userPassRequest({ user: 'x', password: 'y'.repeat(256) })).toThrow(RangeError)
  })

  it('asks for CONNECT to a name (ATYP DOMAIN) with the port big-endian', () => {
    expect([...connectRequest('edge-c1', 22)]).toEqual([5, 1, 0, 3, 7, ...Buffer.from('edge-c1'), 0, 22])
    expect([...connectRequest('web.shop', 8080)].slice(-2)).toEqual([0x1f, 0x90])
    expect(() => connectRequest('x', 0)).toThrow(RangeError)
    expect(() => connectRequest('', 22)).toThrow(RangeError)
  })
})

describe('SOCKS5 replies', () => {
  const v4 = Buffer.from([5, 0, 0, 1, 10, 1, 0, 10, 0x1f, 0x90])
  const v6 = Buffer.from([5, 4, 0, 4, 0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 1, 0, 80])
  const dom = Buffer.from([5, 2, 0, 3, 4, ...Buffer.from('node'), 0, 22])

  it('reads IPv4, IPv6 and domain bound addresses, and what follows is left for the caller', () => {
    expect(parseReply(Buffer.concat([v4, Buffer.from('SSH-2.0')]))).toEqual({ value: { code: 0, bindAddress: '10.1.0.10', bindPort: 8080 }, used: 10 })
    expect(parseReply(v6)).toEqual({ value: { code: 4, bindAddress: '2001:db8:0:0:0:0:0:1', bindPort: 80 }, used: 22 })
    expect(parseReply(dom)).toEqual({ value: { code: 2, bindAddress: 'node', bindPort: 22 }, used: 11 })
  })

  it('asks for more at every byte boundary before the end, and never before', () => {
    for (const r of [v4, v6, dom]) {
      for (let i = 0; i < r.length; i++) expect(parseReply(r.subarray(0, i)), `${i} of ${r.length}`).toEqual({ need: true })
      expect('value' in parseReply(r)).toBe(true)
    }
    expect(parseMethodChoice(Buffer.from([5]))).toEqual({ need: true })
    expect(parseAuthStatus(Buffer.from([1]))).toEqual({ need: true })
  })

  it('calls malformed answers errors: wrong version, reserved byte, address type; 2-byte error replies are incomplete', () => {
    expect(parseReply(Buffer.from([4, 0, 0, 1, 0, 0, 0, 0, 0, 0]))).toEqual({ error: 'bad SOCKS5 reply (version 4)' })
    expect(parseReply(Buffer.from([5, 0, 1, 1, 0, 0, 0, 0, 0, 0]))).toEqual({ error: 'bad SOCKS5 reply (reserved byte 1)' })
    expect(parseReply(Buffer.from([5, 0, 0, 9, 0, 0, 0, 0, 0, 0]))).toEqual({ error: 'bad SOCKS5 reply (address type 9)' })
    expect(parseMethodChoice(Buffer.from([4, 0]))).toEqual({ error: 'not a SOCKS5 proxy (its first byte is 4)' })
    expect(parseAuthStatus(Buffer.from([5, 0]))).toEqual({ error: 'bad username/password answer (version 5)' })
    expect(parseReply(Buffer.from([5, 2]))).toEqual({ need: true }) // socksv5's truncated refusal: the timeout then speaks
  })

  it('names every RFC 1928 reply code for the operator', () => {
    expect(replyText(2)).toBe('not allowed (the port is not in the node\'s allowedPorts, not a port of the Service, or the node does not serve SOCKS5) (SOCKS5 reply 2)')
    expect(replyText(4)).toMatch(/^host unreachable \(no such node or Service/)
    for (let c = 1; c <= 8; c++) expect(replyText(c)).not.toMatch(/^unknown/)
    expect(replyText(42)).toBe('unknown reply code (SOCKS5 reply 42)')
  })

  it('fuzz: any bytes, split anywhere, give need/value/error and never throw; a value never uses more than it was given', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(300), (bytes, cut) => {
      for (const parse of [parseReply, parseMethodChoice, parseAuthStatus] as Array<(b: Uint8Array) => any>) {
        for (const b of [bytes, bytes.subarray(0, Math.min(cut, bytes.length))]) {
          const r = parse(b)
          if ('value' in r) expect(r.used).toBeLessThanOrEqual(b.length)
          else expect('need' in r || typeof r.error === 'string').toBe(true)
        }
      }
    }), { numRuns: 20_000 })
    // mutated valid replies
    fc.assert(fc.property(fc.constantFrom(v4, v6, dom), fc.nat(30), fc.integer({ min: 0, max: 255 }), (r, at, byte) => {
      const m = Buffer.from(r); if (at < m.length) m[at] = byte
      const p = parseReply(m)
      expect('value' in p || 'need' in p || 'error' in p).toBe(true)
    }), { numRuns: 20_000 })
  })
})

describe('edgemesh nc arguments', () => {
  const noFile = (): string => { throw Object.assign(new Error('x'), { code: 'ENOENT' }) }
  const err = (f: () => unknown): string => { try { f(); return 'no error' } catch (e) { expect(e).toBeInstanceOf(ConfigError); return (e as Error).message } }

  it('takes a name and a port; the proxy from --proxy, then $EDGEMESH_SOCKS_PROXY, then 169.254.96.16:10800', () => {
    expect(parseNcArgs(['edge-c1.edge', '22'], {}, {})).toEqual({ target: 'edge-c1.edge', port: 22, proxy: { host: '169.254.96.16', port: 10800 }, timeoutMs: 30_000 })
    expect(parseNcArgs(['web.shop', '80'], {}, { EDGEMESH_SOCKS_PROXY: '127.0.0.1:1080' }).proxy).toEqual({ host: '127.0.0.1', port: 1080 })
    expect(parseNcArgs(['web.shop', '80'], { proxy: '[::1]:9', 'connect-timeout': '2.5' }, { EDGEMESH_SOCKS_PROXY: '127.0.0.1:1080' })).toMatchObject({ proxy: { host: '::1', port: 9 }, timeoutMs: 2500 })
  })

  it('reads credentials from --user and --password-file (trailing newline dropped) or the environment', () => {
    expect(parseNcArgs(['n', '22'], { user: 'ops', 'password-file': '/s/pw' }, {}, () => 's3cret\n').creds).toEqual({ user: 'ops', password: 's3cret' })
    expect(parseNcArgs(['n', '22'], {}, { EDGEMESH_SOCKS_USER: 'a', EDGEMESH_SOCKS_PASSWORD: 'b' }).creds).toEqual({ user: 'a', password: 'b' })
  })

  it('says what is wrong in one line naming the argument', () => {
    expect(err(() => parseNcArgs([], {}, {}))).toMatch(/^nc: missing <node\|service> \(usage: edgemesh nc /)
    expect(err(() => parseNcArgs(['n'], {}, {}))).toMatch(/^nc: missing <port>/)
    expect(err(() => parseNcArgs(['n', '22', 'x'], {}, {}))).toMatch(/^nc: unexpected argument "x"/)
    expect(err(() => parseNcArgs(['n', '0'], {}, {}))).toBe('nc: port 0: expected an integer from 1 to 65535')
    expect(err(() => parseNcArgs(['n', 'ssh'], {}, {}))).toBe('nc: port ssh: expected an integer from 1 to 65535')
    expect(err(() => parseNcArgs(['bad name', '22'], {}, {}))).toMatch(/^nc: bad name: expected a node or Service name/)
    expect(err(() => parseNcArgs(['n', '22'], { proxy: 'localhost' }, {}))).toBe('--proxy localhost: expected HOST:PORT, e.g. 127.0.0.1:10800')
    expect(err(() => parseNcArgs(['n', '22'], {}, { EDGEMESH_SOCKS_PROXY: 'x:99999' }))).toMatch(/^EDGEMESH_SOCKS_PROXY x:99999/)
    expect(err(() => parseNcArgs(['n', '22'], { 'connect-timeout': '0' }, {}))).toMatch(/^--connect-timeout 0:/)
    expect(err(() => parseNcArgs(['n', '22'], { user: 'ops' }, {}))).toMatch(/^--user: give --password-file/)
    expect(err(() => parseNcArgs(['n', '22'], { user: 'ops', 'password-file': '/nope' }, {}, noFile))).toBe('--password-file /nope: cannot read it (ENOENT)')
  })
})

describe('edgemesh ssh-config', () => {
  it('prints a Host *.<suffix> stanza whose ProxyCommand is edgemesh nc with %h %p', () => {
    const text = sshConfigStanza(parseSshConfigArgs({ command: '/usr/local/bin/edgemesh' }, {}))
    expect(text.split('\n').filter((l) => !l.startsWith('#'))).toEqual([
      'Host *.edge',
      '    ProxyCommand /usr/local/bin/edgemesh nc --proxy 169.254.96.16:10800 %h %p',
      ''
    ])
    const laptop = sshConfigStanza(parseSshConfigArgs({ suffix: '.mesh', proxy: '127.0.0.1:1080', command: 'edgemesh', user: 'ops', 'password-file': '/home/o/pw' }, {}))
    expect(laptop).toContain('Host *.mesh\n    ProxyCommand edgemesh nc --proxy 127.0.0.1:1080 --user ops --password-file /home/o/pw %h %p\n')
  })

  it('runs itself again by absolute path, quoting what the shell would split', () => {
    expect(selfCommand('/opt/edge mesh/bin/edgemesh.js', '/usr/bin/node')).toBe("/usr/bin/node '/opt/edge mesh/bin/edgemesh.js'")
    expect(selfCommand('/usr/local/bin/edgemesh', '/usr/bin/node')).toBe('/usr/local/bin/edgemesh')
    expect(shellWord("it's")).toBe("'it'\\''s'")
  })

  it('refuses a suffix ssh could not match and a password without a user', () => {
    expect(() => parseSshConfigArgs({ suffix: '*' }, {})).toThrow(/^--suffix \*: expected the agents' socks5.nodeSuffix/)
    expect(() => parseSshConfigArgs({ 'password-file': '/pw' }, {})).toThrow(/^--password-file: give --user too/)
    expect(() => parseSshConfigArgs({ proxy: 'nope' }, {})).toThrow(/^--proxy nope: expected HOST:PORT/)
  })
})
