// `edgemesh nc`'s argument parsing and refusal lines (agent/control/nc.ts) and the ssh_config
// stanza (ssh-config.ts): one-line errors naming the argument for bad command lines. (The SOCKS5
// bytes it sends and reads are agent/socks5/wire.ts, tested and fuzzed in socks5-wire/-fuzz.)
import { describe, expect, it } from 'vitest'
import { parseNcArgs, refusalText } from '../../agent/control/nc.ts'
import { parseSshConfigArgs, selfCommand, shellWord, sshConfigStanza } from '../../agent/control/ssh-config.ts'
import { ConfigError } from '../../shared/errors.ts'

describe('edgemesh nc refusal lines', () => {
  it('names every RFC 1928 reply code for the operator', () => {
    expect(refusalText(2)).toBe('not allowed (the port is not in the node\'s allowedPorts, not a port of the Service, or the node does not serve SOCKS5) (SOCKS5 reply 2)')
    expect(refusalText(4)).toMatch(/^host unreachable \(no such node or Service/)
    for (let c = 1; c <= 8; c++) expect(refusalText(c)).not.toMatch(/^unknown/)
    expect(refusalText(42)).toBe('unknown reply code (SOCKS5 reply 42)')
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
    // --proxy's host is any word without ':' or spaces: the shell that runs ProxyCommand gets it quoted
    expect(sshConfigStanza(parseSshConfigArgs({ command: 'edgemesh', proxy: 'a;id:1080' }, {}))).toContain("    ProxyCommand edgemesh nc --proxy 'a;id:1080' %h %p\n")
  })

  it('refuses a suffix ssh could not match and a password without a user', () => {
    expect(() => parseSshConfigArgs({ suffix: '*' }, {})).toThrow(/^--suffix \*: expected the agents' socks5.nodeSuffix/)
    expect(() => parseSshConfigArgs({ 'password-file': '/pw' }, {})).toThrow(/^--password-file: give --user too/)
    expect(() => parseSshConfigArgs({ proxy: 'nope' }, {})).toThrow(/^--proxy nope: expected HOST:PORT/)
  })
})
