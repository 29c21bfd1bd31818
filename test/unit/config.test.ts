// Unit tests for configuration loading (shared/config.ts): YAML + --set overrides validated
// with zod; every error is a ConfigError naming the exact field path.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { AgentConfig, ConfigError, ServerConfig, applyOverride, loadConfig, loadPsk } from '../../shared/config.ts'

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

const SERVER_DEFAULTS = {
  identityFile: '/var/lib/edgemesh/server.key',
  listen: { host: '0.0.0.0', tcpPort: 4001, udpPort: 4002, http: '0.0.0.0:9090' },
  announce: [],
  keepaliveMs: 2_000,
  maxAgents: 10_000,
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
    const c = await loadConfig(ServerConfig, { file: await yamlFile('listen:\n  udpPort: 5002\npskFile: /etc/psk\nannounce: [/ip4/1.2.3.4/tcp/4001]\n') })
    expect(c).toEqual({
      ...SERVER_DEFAULTS,
      pskFile: '/etc/psk',
      announce: ['/ip4/1.2.3.4/tcp/4001'],
      listen: { host: '0.0.0.0', tcpPort: 4001, udpPort: 5002, http: '0.0.0.0:9090' }
    })
  })

  it('listen.udpPort out of range names the field', async () => {
    const msg = await configError(async () => await loadConfig(ServerConfig, { file: await yamlFile('listen:\n  udpPort: 70000\n') }))
    expect(msg).toMatch(/^invalid configuration in .*cfg-\d+\.yaml:\n/)
    expect(msg.split('\n').slice(1)).toEqual(['  listen.udpPort: Too big: expected number to be <=65535'])
  })

  it('wrong types name the field', async () => {
    const msg = await configError(async () => await loadConfig(ServerConfig, { file: await yamlFile('keepaliveMs: fast\nlogLevel: loud\n') }))
    const lines = msg.split('\n').slice(1)
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatch(/^ {2}keepaliveMs: .*expected number, received string/)
    expect(lines[1]).toMatch(/^ {2}logLevel: /)
    expect(lines[1]).toContain('"debug"')
  })

  it('keepaliveMs bounds', async () => {
    expect((await loadConfig(ServerConfig, { overrides: [['keepaliveMs', '200']] })).keepaliveMs).toBe(200)
    expect((await loadConfig(ServerConfig, { overrides: [['keepaliveMs', '25000']] })).keepaliveMs).toBe(25_000)
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['keepaliveMs', '199']] })))
      .toBe('invalid configuration in flags:\n  keepaliveMs: Too small: expected number to be >=200')
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['keepaliveMs', '1.5']] })))
      .toMatch(/^invalid configuration in flags:\n {2}keepaliveMs: .*int/)
  })

  it('listen.http must be host:port', async () => {
    expect((await loadConfig(ServerConfig, { overrides: [['listen.http', '[::1]:9090']] })).listen.http).toBe('[::1]:9090')
    expect((await loadConfig(ServerConfig, { overrides: [['listen.http', 'localhost:80']] })).listen.http).toBe('localhost:80')
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['listen.http', 'localhost']] })))
      .toBe('invalid configuration in flags:\n  listen.http: expected host:port')
  })

  it('unknown keys are rejected at the top level and nested, naming the key', async () => {
    const msg = await configError(async () => await loadConfig(ServerConfig, { file: await yamlFile('bogus: 1\nlisten:\n  udpport: 4002\n') }))
    const lines = msg.split('\n').slice(1)
    expect(lines).toContain('  (root): Unrecognized key: "bogus"')
    expect(lines).toContain('  listen: Unrecognized key: "udpport"')
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
      'invalid configuration in flags:',
      '  nodeName: Invalid input: expected string, received undefined',
      '  relays: Invalid input: expected array, received undefined'
    ].join('\n'))
    expect(await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile('nodeName: a\nrelays: []\n') })))
      .toMatch(/:\n {2}relays: at least one relay is required$/)
  })

  it('nodeName must be a lowercase RFC 1123 name', async () => {
    for (const bad of ['Edge-1', 'edge_1', '-edge', 'edge-', 'a'.repeat(254)]) {
      const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['nodeName', bad]] }))
      expect(msg.split('\n').slice(1).every((l) => l.startsWith('  nodeName: ')), msg).toBe(true)
    }
    const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['nodeName', 'Edge_1']] }))
    expect(msg).toMatch(/\n {2}nodeName: expected a Kubernetes node name \(lowercase RFC 1123\)$/)
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
    const lines = (await configError(async () => await loadConfig(AgentConfig, { file }))).split('\n').slice(1)
    expect(lines).toContain('  relays[1].peerId: expected a libp2p peer id (12D3Koo...)')
    expect(lines).toContain('  relays[1].udpPort: Too big: expected number to be <=65535')
    expect(lines).toContain('  relays[1]: Unrecognized key: "tcpport"')
    expect(lines).toContain("  relays[1].host: expected the relay's IPv4 address")
    expect(lines).toHaveLength(4)
  })

  it('proxy: defaults when the section is present, and errors name the field', async () => {
    const ok = await loadConfig(AgentConfig, { file: await yamlFile(`${MIN_AGENT_YAML}proxy: {}\n`) })
    expect(ok.proxy).toEqual({
      listen: '169.254.96.16', device: 'edgemesh0', iptables: 'auto', chainPrefix: 'EDGEMESH', directCidrs: [], minSyncIntervalMs: 250,
      resyncSeconds: 60, connectTimeoutMs: 3_000, udpIdleSeconds: 10, udpStreamIdleSeconds: 180, destinationRules: true, cleanupOnExit: true
    })
    const file = await yamlFile(`${MIN_AGENT_YAML}proxy:\n  iptables: ipvs\n  directCidrs: [10.244.0.0/16, 10.0.0.0/]\n  chainPrefix: mesh\n  listen: 169.254.96\n`)
    const lines = (await configError(async () => await loadConfig(AgentConfig, { file }))).split('\n').slice(1)
    expect(lines).toHaveLength(4)
    expect(lines.find((l) => l.startsWith('  proxy.iptables: '))).toBeDefined()
    expect(lines).toContain('  proxy.directCidrs[1]: expected an IPv4 CIDR like 10.244.0.0/16')
    expect(lines).toContain('  proxy.chainPrefix: expected 1-15 upper-case letters, digits or _')
    expect(lines).toContain('  proxy.listen: expected an IPv4 address')
  })

  it('relays[0].udpPort negative', async () => {
    const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(`${MIN_AGENT_YAML}    udpPort: -1\n`) }))
    expect(msg.split('\n').slice(1)).toEqual(['  relays[0].udpPort: Too small: expected number to be >=0'])
  })

  it('tunnel.keepaliveMs bounds name the nested field', async () => {
    const file = await yamlFile(`${MIN_AGENT_YAML}tunnel:\n  keepaliveMs: 100\n`)
    expect((await configError(async () => await loadConfig(AgentConfig, { file }))).split('\n').slice(1))
      .toEqual(['  tunnel.keepaliveMs: Too small: expected number to be >=500'])
    const c = await loadConfig(AgentConfig, { file: await yamlFile(`${MIN_AGENT_YAML}tunnel:\n  keepaliveMs: 600\n`) })
    expect(c.tunnel).toEqual({ punchTimeoutMs: 3_000, punchRetryMs: 30_000, keepaliveMs: 600, advertise: [] })
  })

  it('listen.udpPort wrong type and unknown nested key', async () => {
    const file = await yamlFile(`${MIN_AGENT_YAML}listen:\n  udpPort: "4003"\n  extra: 1\n`)
    const lines = (await configError(async () => await loadConfig(AgentConfig, { file }))).split('\n').slice(1)
    expect(lines).toContain('  listen.udpPort: Invalid input: expected number, received string')
    expect(lines).toContain('  listen: Unrecognized key: "extra"')
  })

  it('metrics must be host:port', async () => {
    expect((await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['metrics', '127.0.0.1:9100']] })).metrics).toBe('127.0.0.1:9100')
    expect(await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['metrics', 'http://x:1']] })))
      .toMatch(/\n {2}metrics: expected host:port$/)
  })

  // BUG: the host:port regex allows any 1-5 digit port, so 99999 passes validation and the
  // agent only fails later, in server.listen (RangeError, reported as "fatal", not a config error).
  it('metrics with a port above 65535 is a config error', async () => {
    const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(MIN_AGENT_YAML), overrides: [['metrics', '127.0.0.1:99999']] }))
    expect(msg).toContain('metrics')
  })

  it('unknown top-level key', async () => {
    const msg = await configError(async () => await loadConfig(AgentConfig, { file: await yamlFile(`${MIN_AGENT_YAML}relay: []\n`) }))
    expect(msg.split('\n').slice(1)).toEqual(['  (root): Unrecognized key: "relay"'])
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
    expect(msg).toBe(`invalid configuration in ${file}:\n  relays[0].udpPort: Invalid input: expected number, received string`)
  })

  it('overrides alone can build a complete config (source "flags")', async () => {
    const c = await loadConfig(ServerConfig, { overrides: [['listen.tcpPort', '0'], ['maxAgents', '3']] })
    expect(c.listen.tcpPort).toBe(0)
    expect(c.maxAgents).toBe(3)
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['maxAgents', '0']] })))
      .toBe('invalid configuration in flags:\n  maxAgents: Too small: expected number to be >0')
    expect(await configError(async () => await loadConfig(ServerConfig, { overrides: [['listen.bogus', '1']] })))
      .toBe('invalid configuration in flags:\n  listen: Unrecognized key: "bogus"')
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

  it('returns the file bytes', async () => {
    const f = join(dir, 'psk.bin')
    await writeFile(f, Uint8Array.from([0, 1, 2, 255, 10]))
    const psk = await loadPsk(f)
    expect(psk).toBeInstanceOf(Uint8Array)
    expect(Array.from(psk!)).toEqual([0, 1, 2, 255, 10])
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
