// Start-up fails whole or not at all: the real edgemesh-agent (bin/, runs dist/) in a network
// namespace of its own. A config whose parts contradict each other is refused before anything
// starts (exit 2, one line); a capability that fails to start (DNS's port taken, the proxy's
// iptables missing from PATH, the metrics port taken after the proxy wrote its rules) makes the
// agent stop what it had started and remove what it created (the bridge device, the proxy's
// chains, the control socket), then exit 1 with one line. A SIGTERM during start-up stops the
// agent cleanly once started; a normal stop (SIGTERM) removes the same things: the positive
// control that the checks below see what they look for.
import { spawn, type ChildProcess } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { stringify } from 'yaml'

const AGENT_BIN = resolve(import.meta.dirname, '../../bin/edgemesh-agent.js')
const PEER = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
const IP = execFileSync('sh', ['-c', 'command -v ip']).toString().trim()
const ID = randomBytes(3).toString('hex')
const NS = `emst-${ID}`
const DEVICE = `em${ID}0`
const CHAINS = `EMT${ID.toUpperCase()}`

let dir: string
/** a directory holding only an `ip` that logs its arguments (so a test can see the device being created and deleted) */
let shimDir: string
let ipLog: string
const started: ChildProcess[] = []

function nsRun (argv: string[]): string {
  return execFileSync(IP, ['netns', 'exec', NS, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

interface Exit { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }
interface Running { proc: ChildProcess, stdout: () => string, exited: Promise<Exit> }

function startInNs (argv: string[], env: Record<string, string> = {}): Running {
  const proc = spawn(IP, ['netns', 'exec', NS, ...argv], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  started.push(proc)
  let stdout = ''
  let stderr = ''
  proc.stdout!.on('data', (b: Buffer) => { stdout += b.toString() })
  proc.stderr!.on('data', (b: Buffer) => { stderr += b.toString() })
  const exited = new Promise<Exit>((resolve) => { proc.on('exit', (code, signal) => { resolve({ code, signal, stdout, stderr }) }) })
  return { proc, stdout: () => stdout, exited }
}

async function waitFor (what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function runAgent (config: Record<string, unknown>, env: Record<string, string> = {}): Promise<Exit> {
  const file = join(dir, `agent-${randomBytes(3).toString('hex')}.yaml`)
  await writeFile(file, stringify(config))
  const agent = startInNs([process.execPath, AGENT_BIN, '--config', file], env)
  const timer = setTimeout(() => { agent.proc.kill('SIGKILL') }, 90_000)
  try { return await agent.exited } finally { clearTimeout(timer) }
}

/** exit `code`, stderr one `error: ...` line matching `line`, no stack frame */
function expectOneLine (r: Exit, code: number, line: RegExp): void {
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code, stderr: expect.stringMatching(/^error: [^\n]+\n$/) })
  expect(r.stderr).toMatch(line)
  expect(r.stderr + r.stdout).not.toMatch(/^\s+at /m)
}

const deviceExists = (): boolean => nsRun(['ip', '-o', 'link', 'show']).split('\n').some((l) => l.includes(` ${DEVICE}:`))
/** our chains in nat and filter, in both iptables backends */
function ourChains (): string[] {
  const found: string[] = []
  for (const save of ['iptables-nft-save', 'iptables-legacy-save']) {
    for (const table of ['nat', 'filter']) {
      let text = ''
      try { text = nsRun([save, '-t', table]) } catch { continue } // a backend this kernel lacks
      found.push(...text.split('\n').filter((l) => l.includes(CHAINS)).map((l) => `${save} ${table}: ${l}`))
    }
  }
  return found
}
const exists = async (path: string): Promise<boolean> => await stat(path).then(() => true, () => false)
const ipCalls = async (): Promise<string[]> => (await readFile(ipLog, 'utf8').catch(() => '')).split('\n').filter((l) => l !== '')

function baseConfig (name: string): { controlSocket: string, [key: string]: unknown } {
  return {
    nodeName: 'edge-1',
    identityFile: join(dir, `${name}.key`),
    controlSocket: join(dir, `${name}.sock`),
    listen: { host: '127.0.0.1', udpPort: 0, tcpPort: 0 },
    relays: [{ host: '203.0.113.10', peerId: PEER }],
    logLevel: 'info'
  }
}
const dnsSection = { listen: '169.254.96.16:53', device: DEVICE, upstreams: ['127.0.0.1:5353'] }
const kubernetesSection = async (): Promise<Record<string, unknown>> => {
  // an API that refuses at once: the catalog serves an empty one (syncTimeoutMs) and the agent goes on
  const kubeconfig = join(dir, 'kubeconfig')
  await writeFile(kubeconfig, stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
    clusters: [{ name: 'k', cluster: { server: 'http://127.0.0.1:1' } }],
    users: [{ name: 'u', user: { token: 'x' } }],
    contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }]
  }))
  return { kubeconfig, snapshotFile: join(dir, 'catalog.json'), syncTimeoutMs: 100 }
}
const proxySection = { listen: '169.254.96.16', device: DEVICE, iptables: 'auto', chainPrefix: CHAINS, destinationRules: false }

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-startup-'))
  shimDir = join(dir, 'bin')
  ipLog = join(dir, 'ip.log')
  execFileSync('mkdir', ['-p', shimDir])
  await writeFile(join(shimDir, 'ip'), `#!/bin/sh\necho "$*" >> '${ipLog}'\nexec '${IP}' "$@"\n`)
  await chmod(join(shimDir, 'ip'), 0o755)
  execFileSync(IP, ['netns', 'add', NS])
  nsRun(['ip', 'link', 'set', 'lo', 'up'])
})

afterAll(async () => {
  for (const p of started) if (p.exitCode == null && p.signalCode == null) p.kill('SIGKILL')
  try { execFileSync(IP, ['netns', 'del', NS]) } catch { /* not created */ }
  await rm(dir, { recursive: true, force: true })
})

describe('agent start-up', () => {
  it('proxy without kubernetes is refused before anything starts: exit 2, one line, nothing created', async () => {
    await rm(ipLog, { force: true })
    const config = { ...baseConfig('refused'), dns: dnsSection, proxy: proxySection }
    const r = await runAgent(config, { PATH: `${shimDir}:${process.env.PATH ?? ''}` })
    expectOneLine(r, 2, /^error: invalid configuration in \S+: proxy: needs kubernetes \(the proxy learns Services and endpoints from the Kubernetes API\): add a kubernetes section or remove proxy\n$/)
    expect(await ipCalls()).toEqual([])
    expect(deviceExists()).toBe(false)
    expect(await exists(config.controlSocket)).toBe(false)
  })

  it('DNS port taken after the bridge was created: the bridge is removed, exit 1, one line', async () => {
    await rm(ipLog, { force: true })
    const holder = startInNs([process.execPath, '-e', "require('node:dgram').createSocket('udp4').bind(53, '0.0.0.0', () => console.log('bound'))"])
    try {
      await waitFor('the port holder', () => holder.stdout().includes('bound'))
      const config = { ...baseConfig('dns-taken'), dns: dnsSection }
      const r = await runAgent(config, { PATH: `${shimDir}:${process.env.PATH ?? ''}` })
      expectOneLine(r, 1, /^error: dns: cannot listen on udp 169\.254\.96\.16:53: address already in use\n$/)
      const calls = await ipCalls()
      expect(calls).toContain(`link add ${DEVICE} type bridge`)
      expect(calls.at(-1)).toBe(`link del dev ${DEVICE}`)
      expect(deviceExists()).toBe(false)
      expect(await exists(config.controlSocket)).toBe(false)
    } finally {
      holder.proc.kill('SIGKILL')
      await holder.exited
    }
  })

  it('no iptables in PATH: the proxy fails after DNS created the bridge; everything is undone, exit 1, one line', async () => {
    await rm(ipLog, { force: true })
    const config = { ...baseConfig('no-iptables'), kubernetes: await kubernetesSection(), dns: dnsSection, proxy: proxySection }
    const r = await runAgent(config, { PATH: shimDir }) // only the logging `ip`: no iptables, no conntrack
    expectOneLine(r, 1, /^error: proxy: no iptables found \(need iptables-nft or iptables-legacy\)\n$/)
    expect(r.stdout).toContain('DNS ready')
    const calls = await ipCalls()
    expect(calls).toContain(`link add ${DEVICE} type bridge`)
    expect(calls.at(-1)).toBe(`link del dev ${DEVICE}`)
    expect(deviceExists()).toBe(false)
    expect(ourChains()).toEqual([])
    expect(await exists(config.controlSocket)).toBe(false)
  })

  it('metrics port taken after the proxy wrote its chains: chains, bridge and control socket are removed, exit 1, one line', async () => {
    await rm(ipLog, { force: true })
    const holder = startInNs([process.execPath, '-e', "const s = require('node:net').createServer().listen(0, '127.0.0.1', () => console.log('port ' + s.address().port))"])
    try {
      await waitFor('the port holder', () => /port \d+/.test(holder.stdout()))
      const port = Number(/port (\d+)/.exec(holder.stdout())![1])
      const config = { ...baseConfig('metrics-taken'), kubernetes: await kubernetesSection(), dns: dnsSection, proxy: proxySection, metrics: `127.0.0.1:${port}` }
      const r = await runAgent(config, { PATH: `${shimDir}:${process.env.PATH ?? ''}` })
      expectOneLine(r, 1, new RegExp(`^error: metrics: listen EADDRINUSE: address already in use 127\\.0\\.0\\.1:${port}\\n$`))
      expect(r.stdout).toContain('service proxy ready') // the proxy had started (and synced its chains)
      expect(r.stdout).toContain('proxy rules removed')
      expect(deviceExists()).toBe(false)
      expect(ourChains()).toEqual([])
      expect(await exists(config.controlSocket)).toBe(false)
      expect((await ipCalls()).at(-1)).toBe(`link del dev ${DEVICE}`)
    } finally {
      holder.proc.kill('SIGKILL')
      await holder.exited
    }
  })

  it('SIGTERM in the middle of start-up (DNS up, the tunnel still loading): the agent finishes starting, then stops cleanly', async () => {
    const config = { ...baseConfig('early-term'), dns: dnsSection }
    const file = join(dir, 'early-term.yaml')
    await writeFile(file, stringify(config))
    const agent = startInNs([process.execPath, AGENT_BIN, '--config', file], { PATH: `${shimDir}:${process.env.PATH ?? ''}` })
    await waitFor('DNS ready', () => agent.stdout().includes('DNS ready') || agent.proc.exitCode != null)
    agent.proc.kill('SIGTERM')
    const r = await agent.exited
    expect({ code: r.code, signal: r.signal, stderr: r.stderr }).toEqual({ code: 0, signal: null, stderr: '' })
    expect(deviceExists()).toBe(false)
    expect(await exists(config.controlSocket)).toBe(false)
  })

  it('a normal stop (SIGTERM) removes the same things; while running they exist', async () => {
    const config = { ...baseConfig('normal'), kubernetes: await kubernetesSection(), dns: dnsSection, proxy: proxySection }
    const file = join(dir, 'normal.yaml')
    await writeFile(file, stringify(config))
    const agent = startInNs([process.execPath, AGENT_BIN, '--config', file], { PATH: `${shimDir}:${process.env.PATH ?? ''}` })
    await waitFor('edgemesh-agent ready', () => agent.stdout().includes('edgemesh-agent ready') || agent.proc.exitCode != null)
    expect(deviceExists()).toBe(true)
    expect(ourChains().length).toBeGreaterThan(0)
    expect(await exists(config.controlSocket)).toBe(true)
    agent.proc.kill('SIGTERM') // `ip netns exec` passes it on to the agent
    const r = await agent.exited
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' })
    expect(deviceExists()).toBe(false)
    expect(ourChains()).toEqual([])
    expect(await exists(config.controlSocket)).toBe(false)
  })
})
