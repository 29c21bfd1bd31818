// Unit tests for configuration loading (shared/config.ts): YAML + --set overrides validated
// with zod; every error is a ConfigError naming the exact field path, one complete line per
// invalid field: `invalid configuration in <source>: <field>: <problem>`.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { AgentConfig, ConfigError, ServerConfig, applyOverride, loadConfig, loadPsk, pskProblem } from '../../shared/config.ts'

const PEER = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'

let dir: string
let n = 0
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'edgemesh-config-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

async function yamlFile (text: string): Promise<string> {
  const f = join(dir, `cfg-${n++}.yaml`)
  await writeFile(f, text)
  return f
}

/** Runs `fn`, expects a ConfigError, returns its message. */
async function configError (fn: () => Promise<unknown>): Promise<string> {
  let thrown: unknown
  try { await fn() } catch (err) { thrown = err }
  expect(thrown, 'expected a ConfigError').toBeInstanceOf(ConfigError)
  expect((thrown as Error).name).toBe('ConfigError')
  return (thrown as Error).message
}

/**
 * The fields an error message names, one per line, each line checked to be complete on its own
 * ("invalid configuration in <source>: <field>: <problem>"), none spanning lines.
 */
function issues (msg: string, source?: string): string[] {
  return msg.split('\n').map((line) => {
    const m = /^invalid configuration in (.+?): (.+: .+)$/.exec(line)
    expect(m, `not a one-line field error: ${JSON.stringify(line)}`).not.toBeNull()
    if (source != null) expect(m![1]).toBe(source)
    return m![2]!
  })
}

const SERVER_DEFAULTS = {
  identityFile: '/var/lib/edgemesh/server.key',
  listen: { host: '0.0.0.0', tcpPort: 4001, udpPort: 4002, http: '0.0.0.0:9090' },
  announce: [],
  keepaliveMs: 2_000,
  maxAgents: 10_000,
  limits: {
    // per-IP caps unset: they follow from the PSK (server/limits.ts perIpLimits)
    joinsPerIpPerSecond: 100, connectsPerSecond: 20, connectBurst: 100, relayPairsPerAgent: 256, maxRelayPairs: 20_000,
    maxReservations: 10_000, reservationTtlSeconds: 3_600, circuitDurationSeconds: 86_400, circuitDataBytes: 64 * 2 ** 30
  },
  logLevel: 'info'
}

const MIN_AGENT_YAML = `nodeName: edge-1\nrelays:\n  - host: 203.0.113.10\n    peerId: ${PEER}\n`

describe('loadConfig: ServerConfig', () => {
  it('no file and no overrides gives all defaults', async () => {
    expect(await loadConfig(ServerConfig, {})).toEqual(SERVER_DEFAULTS)
  })

  it('an empty file gives all defaults', async () => {
    expect(await loadConfig(ServerConfig, { file: await yamlFile('') })).toEqual(SERVER_DEFAULTS)
    expect(await loadConfig(ServerConfig, { file: await yamlFile('# only a comment\n') })).toEqual(SERVER_DEFAULTS)
  })

  it('a partial nested object keeps the defaults of its other fields', async () => {
    const c = await loadConfig(ServerConfig, { file: await yamlFile('listen:\n  udpPort: 5002\npskFile: /etc/psk\nannounce: [203.0.113.10]\n') })
    expect(c).toEqual({
      ...SERVER_DEFAULTS,
      pskFile: '/etc/psk',
      announce: ['203.0.113.10'],
      listen: { host: '0.0.0.0', tcpPort: 4001, udpPort: 5002, http: '0.0.0.0:9090' }
    })
  })

  it('announce takes IPv4 addresses only (the relay announces /ip4/<a>/tcp/<port>), naming the entry', async () => {
    expect((await loadConfig(ServerConfig, { file: await yamlFile('announce: [203.0.113.10, 198.51.100.7]\n') })).announce).toEqual(['203.0.113.10', '198.51.100.7'])
    for (const bad of ['relay.example.com', '/ip4/1.2.3.4/tcp/4001', '203.0.113.10:4001', '2001:db8::1', '256.1.1.1', '']) {
      const file = await yamlFile(`announce: [203.0.113.10, ${JSON.stringify(bad)}]\n`)
      expect(await configError(async () => await loadConfig(ServerConfig, { file }))).toBe(`invalid configuration in ${file}: announce[1]: expected the relay's public IPv4 address`)
    }
    const file = await yamlFile('announce: [relay.example.com]\n')
    expect(issues(await configError(async () => await loadConfig(ServerConfig, { file })))).toEqual(["announce[0]: expected the relay's public IPv4 address"])
  })

  it('listen.udpPort out of range names the field', async () => {
    const file = await yamlFile('listen:\n  udpPort: 70000\n')
    const msg = await configError(async () => await loadConfig(ServerConfig, { file }))
    expect(msg).toBe(`invalid configuration in ${file}: listen.udpPort: Too big: expected number to be <=65535`)
    expect(issues(msg, file)).toEqual(['listen.udpPort: Too big: expected number to be <=65535'])
  })

  it('wrong types name the field', async () => {
    const msg = await configError(async () => await loadConfig(ServerConfig, { file: await yamlFile('keepaliveMs: fast\nlogLevel: loud\n') }))
    const lines = issues(msg)
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatch(/^keepaliveMs: .*expected number, received string/)
    expect(lines[1]).toMatch(/^logLevel: /)
    expect(lines[1]).toContain('"debug"')
  })

  it('keepaliveMs bounds', async () => {
    expect((await loadConfig(ServerConfig, { overrides: [['keepaliveMs', '200']] })).keepaliveMs).toBe(200)
    expect((await loadConfig(ServerConfig, { overrides: [['keepaliveMs', '25000']] })).keepaliveMs).toBe(25_000)
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['keepaliveMs', '199']] })))
      .toBe('invalid configuration in flags: keepaliveMs: Too small: expected number to be >=200')
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['keepaliveMs', '1.5']] })))
      .toMatch(/^invalid configuration in flags: keepaliveMs: [^\n]*int[^\n]*$/)
  })

  it('listen.http must be host:port', async () => {
    expect((await loadConfig(ServerConfig, { overrides: [['listen.http', '[::1]:9090']] })).listen.http).toBe('[::1]:9090')
    expect((await loadConfig(ServerConfig, { overrides: [['listen.http', 'localhost:80']] })).listen.http).toBe('localhost:80')
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['listen.http', 'localhost']] })))
      .toBe('invalid configuration in flags: listen.http: expected host:port')
  })

  it('unknown keys are rejected at the top level and nested, naming the key', async () => {
    const msg = await configError(async () => await loadConfig(ServerConfig, { file: await yamlFile('bogus: 1\nlisten:\n  udpport: 4002\n') }))
    const lines = issues(msg)
    expect(lines).toContain('(root): Unrecognized key: "bogus"')
    expect(lines).toContain('listen: Unrecognized key: "udpport"')
    expect(lines).toHaveLength(2)
  })
})

describe('loadConfig: AgentConfig', () => {
  it('a minimal file gets every default', async () => {
    const c = await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML) })
    expect(c).toEqual({
      nodeName: 'edge-1',
      identityFile: '/var/lib/edgemesh/agent.key',
      listen: { host: '0.0.0.0', udpPort: 4003, tcpPort: 4004 },
      controlSocket: '/run/edgemesh/agent.sock',
      relays: [{ host: '203.0.113.10', peerId: PEER, tcpPort: 4001, udpPort: 4002 }],
      tunnel: { punchTimeoutMs: 3_000, punchRetryMs: 30_000, keepaliveMs: 5_000, advertise: [] },
      diagnostics: false,
      logLevel: 'info'
    })
  })

  it('nodeName and relays are required', async () => {
    expect(await configError(async () => await loadConfig(AgentConfig, {}))).toBe([
      'invalid configuration in flags: nodeName: Invalid input: expected string, received undefined',
      'invalid configuration in flags: relays: Invalid input: expected array, received undefined'
    ].join('\n'))
    const file = await yamlFile('nodeName: a\nrelays: []\n')
    expect(await configError(async () => await loadConfig(AgentConfig, { file })))
      .toBe(`invalid configuration in ${file}: relays: at least one relay is required`)
  })

  it('nodeName must be a lowercase RFC 1123 name', async () => {
    for (const bad of ['Edge-1', 'edge_1', '-edge', 'edge-', 'a'.repeat(254)]) {
      const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['nodeName', bad]] }))
      expect(issues(msg).every((l) => l.startsWith('nodeName: ')), msg).toBe(true)
    }
    const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['nodeName', 'Edge_1']] }))
    expect(issues(msg)).toEqual(['nodeName: expected a Kubernetes node name (lowercase RFC 1123)'])
    for (const good of ['a', 'edge-1', 'node.example.com', '0a']) {
      expect((await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['nodeName', good]] })).nodeName).toBe(good)
    }
  })

  it('relay errors name the array index and field', async () => {
    const file = await yamlFile(`nodeName: edge-1
relays:
  - host: 203.0.113.10
    peerId: ${PEER}
  - host: relay.example.com
    peerId: not-a-peer-id
    udpPort: 70000
    tcpport: 1
`)
    const lines = issues(await configError(async () => await loadConfig(AgentConfig, { file })), file)
    expect(lines).toContain('relays[1].peerId: expected a libp2p peer id (12D3Koo...)')
    expect(lines).toContain('relays[1].udpPort: Too big: expected number to be <=65535')
    expect(lines).toContain('relays[1]: Unrecognized key: "tcpport"')
    expect(lines).toContain("relays[1].host: expected the relay's IPv4 address")
    expect(lines).toHaveLength(4)
  })

  it('a relay named by its certificate (certificateFile) gets the peer id of the certificate\'s Ed25519 key', async () => {
    const cert = new URL('../fixtures/relay-identity/relay.crt', import.meta.url).pathname
    const file = await yamlFile(`nodeName: edge-1\nrelays:\n  - host: 203.0.113.10\n    certificateFile: ${cert}\n  - host: 203.0.113.11\n    peerId: ${PEER}\n`)
    const c = await loadConfig(AgentConfig, { file })
    // the fixture's key (test/unit/relay-certificate.test.ts checks the derivation against libp2p)
    expect(c.relays).toEqual([
      { host: '203.0.113.10', peerId: '12D3KooWDBXfS2jzapVgS32JehLKi8dvQgjUTVRc21jRY58xgSpx', certificateFile: cert, tcpPort: 4001, udpPort: 4002 },
      { host: '203.0.113.11', peerId: PEER, tcpPort: 4001, udpPort: 4002 }
    ])
    // or through --set
    const viaFlags = await loadConfig(AgentConfig, { file: await yamlFile('nodeName: edge-1\nrelays:\n  - host: 203.0.113.10\n'), overrides: [['relays.0.certificateFile', cert]] })
    expect(viaFlags.relays[0]!.peerId).toBe(c.relays[0]!.peerId)
  })

  it('a relay needs exactly one of peerId and certificateFile, and a certificate that is readable and Ed25519: each error one line naming the field', async () => {
    const fixture = (f: string): string => new URL(`../fixtures/relay-identity/${f}`, import.meta.url).pathname
    const missing = join(dir, 'absent.crt')
    const file = await yamlFile(`nodeName: edge-1
relays:
  - host: 203.0.113.10
  - host: 203.0.113.11
    peerId: ${PEER}
    certificateFile: ${fixture('relay.crt')}
  - host: 203.0.113.12
    certificateFile: ${missing}
  - host: 203.0.113.13
    certificateFile: ${fixture('rsa.crt')}
  - host: 203.0.113.14
    certificateFile: ${fixture('relay.key')}
  - host: 203.0.113.15
    certificateFile: ''
`)
    const lines = issues(await configError(async () => await loadConfig(AgentConfig, { file })), file)
    expect(lines).toEqual([
      'relays[0].peerId: required: the relay\'s peer id (12D3Koo...), or certificateFile (the relay\'s certificate, PEM)',
      'relays[1].certificateFile: give either peerId or certificateFile, not both',
      `relays[2].certificateFile: cannot read ${missing}: ENOENT: no such file or directory, open '${missing}'`,
      `relays[3].certificateFile: ${fixture('rsa.crt')}: the certificate holds a rsa key, expected the relay's Ed25519 key`,
      expect.stringMatching(new RegExp(`^relays\\[4\\]\\.certificateFile: ${fixture('relay.key')}: not a PEM X\\.509 certificate \\(`)),
      'relays[5].certificateFile: expected the path of the relay\'s certificate (PEM)'
    ])
  })

  it('proxy: defaults when the section is present, and errors name the field', async () => {
    const ok = await loadConfig(AgentConfig, { file: await yamlFile(`${MIN_AGENT_YAML}kubernetes: {}\nproxy: {}\n`) })
    expect(ok.proxy).toEqual({
      listen: '169.254.96.16', device: 'edgemesh0', iptables: 'auto', chainPrefix: 'EDGEMESH', directCidrs: [], minSyncIntervalMs: 250,
      resyncSeconds: 60, connectTimeoutMs: 3_000, udpIdleSeconds: 10, udpStreamIdleSeconds: 180, destinationRules: true, cleanupOnExit: true
    })
    const file = await yamlFile(`${MIN_AGENT_YAML}kubernetes: {}\nproxy:\n  iptables: ipvs\n  directCidrs: [10.244.0.0/16, 10.0.0.0/]\n  chainPrefix: mesh\n  listen: 169.254.96\n`)
    const lines = issues(await configError(async () => await loadConfig(AgentConfig, { file })))
    expect(lines).toHaveLength(4)
    expect(lines.find((l) => l.startsWith('proxy.iptables: '))).toBeDefined()
    expect(lines).toContain('proxy.directCidrs[1]: expected an IPv4 CIDR like 10.244.0.0/16')
    expect(lines).toContain('proxy.chainPrefix: expected 1-15 upper-case letters, digits or _')
    expect(lines).toContain('proxy.listen: expected an IPv4 address')
  })

  it('proxy without kubernetes (the README agent.yaml with kubernetes taken out) is refused, naming proxy', async () => {
    const file = await yamlFile(`${MIN_AGENT_YAML}dns:\n  listen: 169.254.96.16:53\nproxy:\n  listen: 169.254.96.16\n  iptables: auto\n`)
    expect(await configError(async () => await loadConfig(AgentConfig, { file })))
      .toBe(`invalid configuration in ${file}: proxy: needs kubernetes (the proxy learns Services and endpoints from the Kubernetes API): add a kubernetes section or remove proxy`)
    // the same through flags, and alongside other errors: still one line each
    expect(await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['proxy.iptables', 'nft']] })))
      .toMatch(/^invalid configuration in \S+: proxy: needs kubernetes [^\n]*$/)
    // kubernetes present: accepted
    expect((await loadConfig(AgentConfig, { file: await yamlFile(`${MIN_AGENT_YAML}kubernetes: {}\nproxy: {}\n`) })).proxy?.iptables).toBe('auto')
  })

  it('relays[0].udpPort negative', async () => {
    const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(`${MIN_AGENT_YAML}    udpPort: -1\n`) }))
    expect(issues(msg)).toEqual(['relays[0].udpPort: Too small: expected number to be >=0'])
  })

  it('tunnel.keepaliveMs bounds name the nested field', async () => {
    const file = await yamlFile(`${MIN_AGENT_YAML}tunnel:\n  keepaliveMs: 100\n`)
    expect(issues(await configError(async () => await loadConfig(AgentConfig, { file }))))
      .toEqual(['tunnel.keepaliveMs: Too small: expected number to be >=500'])
    const c = await loadConfig(AgentConfig, { file: await yamlFile(`${MIN_AGENT_YAML}tunnel:\n  keepaliveMs: 600\n`) })
    expect(c.tunnel).toEqual({ punchTimeoutMs: 3_000, punchRetryMs: 30_000, keepaliveMs: 600, advertise: [] })
  })

  it('listen.udpPort wrong type and unknown nested key', async () => {
    const file = await yamlFile(`${MIN_AGENT_YAML}listen:\n  udpPort: "4003"\n  extra: 1\n`)
    const lines = issues(await configError(async () => await loadConfig(AgentConfig, { file })))
    expect(lines).toContain('listen.udpPort: Invalid input: expected number, received string')
    expect(lines).toContain('listen: Unrecognized key: "extra"')
  })

  it('metrics must be host:port', async () => {
    expect((await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['metrics', '127.0.0.1:9100']] })).metrics).toBe('127.0.0.1:9100')
    expect(await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['metrics', 'http://x:1']] })))
      .toMatch(/^invalid configuration in \S+: metrics: expected host:port$/)
  })

  // BUG: the host:port regex allows any 1-5 digit port, so 99999 passes validation and the
  // agent only fails later, in server.listen (RangeError, reported as "fatal", not a config error).
  it('metrics with a port above 65535 is a config error', async () => {
    const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['metrics', '127.0.0.1:99999']] }))
    expect(msg).toContain('metrics')
  })

  it('unknown top-level key', async () => {
    const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(`${MIN_AGENT_YAML}relay: []\n`) }))
    expect(issues(msg)).toEqual(['(root): Unrecognized key: "relay"'])
  })
})

describe('loadConfig: file problems', () => {
  it('a missing file names the file', async () => {
    const missing = join(dir, 'nope.yaml')
    const msg = await configError(async () => await loadConfig(AgentConfig, { file: missing }))
    expect(msg).toMatch(new RegExp(`^cannot read config file ${missing}: ENOENT`))
  })

  it('invalid YAML names the file', async () => {
    const file = await yamlFile('nodeName: [unclosed\nrelays: {\n')
    const msg = await configError(async () => await loadConfig(AgentConfig, { file }))
    expect(msg.startsWith(`config file ${file} is not valid YAML: `)).toBe(true)
    expect(msg.length).toBeGreaterThan(`config file ${file} is not valid YAML: `.length)
    // one line: the YAML library's code frame is left out, where the problem is stays in
    expect(msg).not.toContain('\n')
    expect(msg).toMatch(/at line \d+, column \d+/)
  })

  it('a top-level list or scalar is rejected', async () => {
    for (const text of ['- a\n- b\n', '42\n', 'just a string\n']) {
      const file = await yamlFile(text)
      expect(await configError(async () => await loadConfig(ServerConfig, { file }))).toBe(`config file ${file}: expected a mapping at the top level`)
    }
  })
})

describe('applyOverride', () => {
  it('coerces integers, negatives, decimals and booleans; leaves other strings alone', () => {
    const t: Record<string, any> = {}
    applyOverride(t, 'a', '42')
    applyOverride(t, 'b', '-7')
    applyOverride(t, 'c', '1.25')
    applyOverride(t, 'd', 'true')
    applyOverride(t, 'e', 'false')
    applyOverride(t, 'f', 'edge-1')
    applyOverride(t, 'g', '1e3')
    applyOverride(t, 'h', '')
    applyOverride(t, 'i', 'TRUE')
    applyOverride(t, 'j', '0x10')
    applyOverride(t, 'k', '1.')
    expect(t).toEqual({ a: 42, b: -7, c: 1.25, d: true, e: false, f: 'edge-1', g: '1e3', h: '', i: 'TRUE', j: '0x10', k: '1.' })
  })

  it('nests dotted keys, creating objects as needed and keeping siblings', () => {
    const t: Record<string, any> = { listen: { host: '::', udpPort: 1 }, other: 1 }
    applyOverride(t, 'listen.udpPort', '5003')
    applyOverride(t, 'tunnel.punch.deep', 'x')
    expect(t).toEqual({ listen: { host: '::', udpPort: 5003 }, other: 1, tunnel: { punch: { deep: 'x' } } })
  })

  it('replaces a scalar on the way with an object', () => {
    const t: Record<string, any> = { listen: 5, n: null }
    applyOverride(t, 'listen.udpPort', '1')
    applyOverride(t, 'n.x', '2')
    expect(t).toEqual({ listen: { udpPort: 1 }, n: { x: 2 } })
  })

  it('indexes into existing arrays with numeric path parts', () => {
    const t: Record<string, any> = { relays: [{ host: 'a' }, { host: 'b' }] }
    applyOverride(t, 'relays.1.udpPort', '9')
    expect(t).toEqual({ relays: [{ host: 'a' }, { host: 'b', udpPort: 9 }] })
  })

  it('property: integer strings become numbers at the dotted path', () => {
    fc.assert(fc.property(fc.array(fc.stringMatching(/^[a-z][a-zA-Z]{0,8}$/), { minLength: 1, maxLength: 4 }), fc.integer(), (path, v) => {
      const t: Record<string, any> = {}
      applyOverride(t, path.join('.'), String(v))
      let o: any = t
      for (const p of path.slice(0, -1)) o = o[p]
      expect(o[path.at(-1)!]).toBe(v)
    }), { numRuns: 300 })
  })
})

describe('loadConfig: overrides', () => {
  it('overrides win over the file and are validated like it', async () => {
    const file = await yamlFile(`${MIN_AGENT_YAML}listen:\n  udpPort: 1\n`)
    const c = await loadConfig(AgentConfig, {
      file,
      overrides: [['listen.udpPort', '5003'], ['diagnostics', 'true'], ['relays.0.udpPort', '6000'], ['tunnel.punchTimeoutMs', '500'], ['logLevel', 'debug']]
    })
    expect(c.listen).toEqual({ host: '0.0.0.0', udpPort: 5003, tcpPort: 4004 })
    expect(c.diagnostics).toBe(true)
    expect(c.relays[0]).toEqual({ host: '203.0.113.10', peerId: PEER, tcpPort: 4001, udpPort: 6000 })
    expect(c.tunnel.punchTimeoutMs).toBe(500)
    expect(c.logLevel).toBe('debug')
    // an override error names the field and the source (the file)
    const msg = await configError(async () => await loadConfig(AgentConfig, { file, overrides: [['relays.0.udpPort', 'abc']] }))
    expect(msg).toBe(`invalid configuration in ${file}: relays[0].udpPort: Invalid input: expected number, received string`)
  })

  it('overrides alone can build a complete config (source "flags")', async () => {
    const c = await loadConfig(ServerConfig, { overrides: [['listen.tcpPort', '0'], ['maxAgents', '3']] })
    expect(c.listen.tcpPort).toBe(0)
    expect(c.maxAgents).toBe(3)
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['maxAgents', '0']] })))
      .toBe('invalid configuration in flags: maxAgents: Too small: expected number to be >0')
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['listen.bogus', '1']] })))
      .toBe('invalid configuration in flags: listen: Unrecognized key: "bogus"')
  })

  // BUG: applyOverride coerces every all-digit value to a number without looking at the
  // schema, so `--set nodeName=1234` (a valid RFC 1123 node name) is rejected with
  // "nodeName: Invalid input: expected string, received number".
  it('--set nodeName=1234 keeps the string', async () => {
    const c = await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['nodeName', '1234']] })
    expect(c.nodeName).toBe('1234')
  })
})

describe('loadPsk', () => {
  it('undefined without a file', async () => {
    expect(await loadPsk(undefined)).toBeUndefined()
  })

  const KEY = '0123456789abcdef'.repeat(4)
  const PSK_TEXT = `/key/swarm/psk/1.0.0/\n/base16/\n${KEY}`

  it('returns the file bytes of a valid key (what pnet and the registration MAC use)', async () => {
    for (const text of [PSK_TEXT, `${PSK_TEXT}\n`, PSK_TEXT.replaceAll('\n', '\r\n') + '\r\n', PSK_TEXT.toUpperCase().replace('/KEY/SWARM/PSK/1.0.0/', '/key/swarm/psk/1.0.0/').replace('/BASE16/', '/base16/')]) {
      const f = join(dir, `psk-${n++}.key`)
      await writeFile(f, text)
      const psk = await loadPsk(f)
      expect(psk).toBeInstanceOf(Uint8Array)
      expect(Buffer.from(psk!).toString()).toBe(text)
    }
  })

  it('what @libp2p/pnet would refuse (or misread) is a ConfigError naming pskFile, the path and the line', async () => {
    const cases: Array<[string | Uint8Array, string]> = [
      [Uint8Array.from([0, 1, 2, 255, 10]), 'line 1 must be "/key/swarm/psk/1.0.0/"'],
      ['', 'line 1 must be "/key/swarm/psk/1.0.0/"'],
      [KEY, 'line 1 must be "/key/swarm/psk/1.0.0/"'],
      [`/key/swarm/psk/1.0.0/\n/base64/\n${KEY}`, 'line 2 must be "/base16/"'],
      ['/key/swarm/psk/1.0.0/\n/base16/\n', 'line 3 must be the key as 64 hex digits (32 bytes), got 0 characters'],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${KEY.slice(2)}`, 'line 3 must be the key as 64 hex digits (32 bytes), got 62 characters'],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${KEY.slice(1)}g`, 'line 3 must be the key as 64 hex digits (32 bytes), got 64 characters with non-hex ones'],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${KEY} `, 'line 3 must be the key as 64 hex digits (32 bytes), got 65 characters with non-hex ones'],
      [`${PSK_TEXT}\nextra`, 'unexpected text after the key (line 4)']
    ]
    for (const [content, problem] of cases) {
      const f = join(dir, `psk-${n++}.key`)
      await writeFile(f, content)
      const msg = await configError(async () => await loadPsk(f))
      expect(msg).toBe(`pskFile: ${f} is not a libp2p pre-shared key ("/key/swarm/psk/1.0.0/", "/base16/", 64 hex digits, one per line): ${problem}`)
    }
  })

  it('property: pskProblem accepts exactly tag, codec, 64 hex digits (and trailing newlines)', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.constantFrom('', '\n', '\r\n', '\n\n'), (key, tail) => {
      expect(pskProblem(Buffer.from(`/key/swarm/psk/1.0.0/\n/base16/\n${Buffer.from(key).toString('hex')}${tail}`))).toBeUndefined()
    }), { numRuns: 200 })
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      // random bytes are never a key (and never throw)
      expect(typeof pskProblem(bytes)).toBe('string')
    }), { numRuns: 2_000 })
  })

  it('a missing file is a ConfigError naming pskFile and the path', async () => {
    const missing = join(dir, 'missing.psk')
    const msg = await configError(async () => await loadPsk(missing))
    expect(msg).toMatch(new RegExp(`^pskFile: cannot read ${missing}: ENOENT`))
  })

  it('a directory is a ConfigError naming pskFile', async () => {
    const msg = await configError(async () => await loadPsk(dir))
    expect(msg).toMatch(new RegExp(`^pskFile: cannot read ${dir}: EISDIR`))
  })
})
