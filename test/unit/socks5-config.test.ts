// SOCKS5 configuration, credentials and target names: the socks5 section's defaults and its
// errors (one line naming the field), credential files (a Secret's, trailing newline dropped,
// errors naming the field), the verifier, and what a target name means (pure).
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AgentConfig, ConfigError, loadConfig } from '../../shared/config.ts'
import { credentialVerifier, loadCredentials } from '../../agent/socks5/auth.ts'
import { checkDialAddresses, statusOfDialError } from '../../agent/socks5/node-server.ts'
import { decodeNodeRequest, encodeNodeRequest, NodeStatus } from '../../agent/socks5/node-wire.ts'
import { resolveTarget, serviceName, type TargetContext } from '../../agent/socks5/targets.ts'

const PEER = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
const BASE = `nodeName: edge-1\nrelays:\n  - host: 203.0.113.10\n    peerId: ${PEER}\n`
let dir: string
let n = 0
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'edgemesh-socks5-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })
async function file (text: string | Buffer): Promise<string> {
  const f = join(dir, `f-${n++}`)
  await writeFile(f, text)
  return f
}
async function errorOf (fn: () => Promise<unknown>): Promise<string> {
  try { await fn() } catch (err) { expect(err).toBeInstanceOf(ConfigError); return (err as Error).message }
  throw new Error('expected a ConfigError')
}

describe('socks5 config', () => {
  it('an empty section gets every default: listener on 169.254.96.16:10800, port 22 only, suffix edge, no auth', async () => {
    const c = await loadConfig(AgentConfig, { file: await file(`${BASE}socks5: {}\n`) })
    expect(c.socks5).toEqual({
      enabled: true, listen: ['169.254.96.16:10800'], device: 'edgemesh0', nodeSuffix: 'edge', allowedPorts: [22], acceptFromPeers: true,
      dialAddresses: ['127.0.0.1'], services: true, handshakeTimeoutMs: 10_000, connectTimeoutMs: 15_000, maxConnections: 1_024
    })
    expect((await loadConfig(AgentConfig, { file: await file(BASE) })).socks5).toBeUndefined()
  })

  it('errors name the field, one line each', async () => {
    const f = await file(`${BASE}socks5:\n  listen: ["169.254.96.16"]\n  allowedPorts: [0, 70000]\n  nodeSuffix: .Edge\n  dialAddresses: [localhost]\n  auth: { usernameFile: /u }\n  bogus: 1\n`)
    const lines = (await errorOf(async () => await loadConfig(AgentConfig, { file: f }))).split('\n').map((l) => l.replace(`invalid configuration in ${f}: `, ''))
    expect(lines.map((l) => l.slice(0, l.indexOf(': '))).sort()).toEqual(['socks5', 'socks5.allowedPorts[0]', 'socks5.allowedPorts[1]', 'socks5.auth.passwordFile', 'socks5.dialAddresses[0]', 'socks5.listen[0]', 'socks5.nodeSuffix'])
    expect(lines.find((l) => l.startsWith('socks5.listen[0]'))).toBe('socks5.listen[0]: expected host:port')
    expect(lines.find((l) => l.startsWith('socks5: '))).toMatch(/bogus/)
  })

  it('--set reaches the section (as the chart and operators use it)', async () => {
    const c = await loadConfig(AgentConfig, { file: await file(`${BASE}socks5: {}\n`), overrides: [['socks5.enabled', 'false'], ['socks5.nodeSuffix', 'mesh']] })
    expect(c.socks5).toMatchObject({ enabled: false, nodeSuffix: 'mesh' })
  })
})

describe('socks5 credentials', () => {
  it('come from files, one trailing newline dropped; unreadable or empty files name the field', async () => {
    const c = await loadCredentials({ usernameFile: await file('ops\n'), passwordFile: await file('pa ss\r\n') })
    expect(Buffer.from(c.username).toString()).toBe('ops')
    expect(Buffer.from(c.password).toString()).toBe('pa ss')
    expect(await errorOf(async () => await loadCredentials({ usernameFile: join(dir, 'missing'), passwordFile: await file('x') }))).toMatch(/^socks5\.auth\.usernameFile: cannot read .*missing/)
    expect(await errorOf(async () => await loadCredentials({ usernameFile: await file('u'), passwordFile: await file('\n') }))).toMatch(/^socks5\.auth\.passwordFile: .* must hold 1-255 bytes \(RFC 1929\), it holds 0$/)
    expect(await errorOf(async () => await loadCredentials({ usernameFile: await file('u'.repeat(256)), passwordFile: await file('p') }))).toMatch(/^socks5\.auth\.usernameFile: .*it holds 256$/)
  })

  it('the verifier accepts exactly the pair, whatever the lengths sent', () => {
    const verify = credentialVerifier({ username: Buffer.from('ops'), password: Buffer.from('s3cret') })
    expect(verify(Buffer.from('ops'), Buffer.from('s3cret'))).toBe(true)
    for (const [u, p] of [['ops', 's3cre'], ['ops', 's3cret!'], ['op', 's3cret'], ['s3cret', 'ops'], ['x'.repeat(255), 'y'.repeat(255)]]) expect(verify(Buffer.from(u!), Buffer.from(p!))).toBe(false)
  })
})

describe('socks5 node side helpers', () => {
  it('dialAddresses must be this node\'s own', () => {
    expect(() => { checkDialAddresses(['127.0.0.1', '::1', '10.0.0.5'], new Set(['10.0.0.5'])) }).not.toThrow()
    expect(() => { checkDialAddresses(['127.0.0.1', '192.0.2.1'], new Set(['10.0.0.5'])) }).toThrow(/^socks5\.dialAddresses\[1\]: 192\.0\.2\.1 is not an address of this node/)
  })

  it('dial errors map to node statuses', () => {
    const e = (code: string, message = code): Error & { code: string } => Object.assign(new Error(message), { code })
    expect(statusOfDialError(e('ECONNREFUSED'))).toBe(NodeStatus.REFUSED)
    expect(statusOfDialError(new Error('connect 127.0.0.1:22 timed out after 15000 ms'))).toBe(NodeStatus.TIMEOUT)
    expect(statusOfDialError(e('EHOSTUNREACH'))).toBe(NodeStatus.UNREACHABLE)
    expect(statusOfDialError(e('EMFILE'))).toBe(NodeStatus.FAILED)
  })

  it('node requests round-trip and malformed ones are named', () => {
    const b = encodeNodeRequest({ node: 'edge-7', port: 22 })
    expect(decodeNodeRequest(b)).toEqual({ value: { node: 'edge-7', port: 22 }, length: b.length })
    for (let i = 0; i < b.length; i++) expect(decodeNodeRequest(b.subarray(0, i))).toBe('short')
    expect(decodeNodeRequest(Uint8Array.of(2, 0, 22, 1, 0x61))).toMatch(/version/)
    expect(decodeNodeRequest(Uint8Array.of(1, 0, 0, 1, 0x61))).toBe('port 0')
    expect(decodeNodeRequest(Uint8Array.of(1, 0, 22, 0))).toBe('empty node name')
  })
})

describe('socks5 targets', () => {
  const ctx: TargetContext = {
    nodeSuffix: 'edge', clusterDomain: 'cluster.local', services: true,
    isNode: (n) => ['edge-7', 'a.b', 'node.example.com'].includes(n),
    isService: (ns, name) => `${ns}/${name}` === 'shop/web' || `${ns}/${name}` === 'b/a'
  }
  it('node names, with and without the suffix, any case, a trailing dot', () => {
    for (const host of ['edge-7', 'edge-7.edge', 'EDGE-7.Edge.', 'node.example.com', 'node.example.com.edge']) expect(resolveTarget(host, 22, ctx)).toMatchObject({ kind: 'node', port: 22 })
    expect(resolveTarget('edge-7.edge', 22, ctx)).toEqual({ kind: 'node', node: 'edge-7', port: 22 })
    expect(resolveTarget('edge-7.edge', 22, { ...ctx, nodeSuffix: '' })).toMatchObject({ kind: 'refused', reason: 'unknown-target' })
  })

  it('Service names: svc.ns, svc.ns.svc, svc.ns.svc.<domain>; a node of the same name wins', () => {
    for (const host of ['web.shop', 'web.shop.svc', 'web.shop.svc.cluster.local', 'web.shop.svc.cluster.local.']) expect(resolveTarget(host, 80, ctx)).toEqual({ kind: 'service', namespace: 'shop', name: 'web', port: 80 })
    expect(resolveTarget('a.b', 22, ctx)).toEqual({ kind: 'node', node: 'a.b', port: 22 })
    expect(resolveTarget('web.shop', 80, { ...ctx, services: false })).toMatchObject({ kind: 'refused', reason: 'unknown-target' })
    expect(resolveTarget('web.shop.svc.other.domain', 80, ctx)).toMatchObject({ kind: 'refused', reason: 'unknown-target' })
    expect(serviceName('web.shop.extra', 'cluster.local')).toBeUndefined()
  })

  it('IP addresses and unknown names are refused', () => {
    for (const host of ['10.0.0.1', '::1', '[::1]', 'fe80::1']) expect(resolveTarget(host, 22, ctx)).toMatchObject({ kind: 'refused', reason: 'address-type-not-supported' })
    for (const host of ['edge-8', 'edge', '.edge', 'web.nowhere', '']) expect(resolveTarget(host, 22, ctx)).toMatchObject({ kind: 'refused', reason: 'unknown-target' })
  })
})
