// Runs the real binaries in a lab: edgemesh-server on the relay hosts, edgemesh-agent on site
// hosts, with generated configs, random persisted keys and a static peers file. Shared by the
// end-to-end tests, the benchmarks and the demo.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { randomBytes } from 'node:crypto'
import { stringify } from 'yaml'
import type { Lab, LabProcess } from './lab.ts'
import { callAgent } from '../../agent/control/cli.ts'

const execFileP = promisify(execFile)
const ROOT = resolve(import.meta.dirname, '../..')
const NODE = process.execPath
/** the runtime flags the manifests use (a small young generation keeps RSS down) */
export const NODE_FLAGS = ['--max-semi-space-size=2']
/** the agent also compacts its heap once after bulk catalog loads (see agent/main.ts) */
export const AGENT_NODE_FLAGS = [...NODE_FLAGS, '--expose-gc']
/** the relay's, as the manifests give them (test/scale/relay-load.ts measures with the same) */
export const RELAY_NODE_FLAGS = [...NODE_FLAGS, '--heap-growing-percent=25']
/**
 * the environment the manifests give the agent: glibc's mmap threshold fixed low, so freed
 * buffers of 16 KiB and more go back to the OS at once instead of staying in the malloc heap
 * (see bin/edgemesh-agent.js)
 */
export const AGENT_ENV: Record<string, string> = { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=16384' }

export const SERVER_BIN = join(ROOT, 'bin/edgemesh-server.js')
export const AGENT_BIN = join(ROOT, 'bin/edgemesh-agent.js')
export const CLI_BIN = join(ROOT, 'bin/edgemesh.js')

export interface MeshOptions {
  /** lab host names that run an agent (node name: `edge-<host>`) */
  agents: string[]
  /** how many of the lab's relays run edgemesh-server (default: all) */
  relays?: number
  psk?: boolean
  diagnostics?: boolean
  logLevel?: string
  /** extra agent config per host (merged over the generated one); relays: the mesh's relays, started */
  agentConfig?: (host: string, relays: readonly MeshRelay[]) => Record<string, unknown>
  /** extra relay config (merged over the generated one), e.g. { limits: { maxAgentsPerIp: 3 } } */
  relayConfig?: Record<string, unknown>
  /** environment for agent processes (e.g. NODE_OPTIONS for profiling) */
  agentEnv?: Record<string, string>
  /** false: agents get no peers file (they find peers through the Kubernetes registry) */
  peersFile?: boolean
  /** a peers file that lists more than the running agents (e.g. a foreign key) */
  extraPeers?: Array<{ name: string, peerId: string }>
}

export interface MeshRelay { host: string, ip: string, peerId: string, proc: LabProcess, configFile: string }
export interface MeshAgent { host: string, nodeName: string, peerId: string, socket: string, configFile: string, proc: LabProcess, extra?: boolean }

export class Mesh {
  readonly lab: Lab
  readonly dir: string
  readonly relays: MeshRelay[] = []
  readonly agents = new Map<string, MeshAgent>()
  readonly peersFile: string
  psk: Buffer | undefined
  private readonly opts: MeshOptions

  private constructor (lab: Lab, dir: string, opts: MeshOptions) {
    this.lab = lab
    this.dir = dir
    this.opts = opts
    this.peersFile = join(dir, 'peers.yaml')
  }

  static async start (lab: Lab, opts: MeshOptions): Promise<Mesh> {
    const dir = await mkdtemp(join(tmpdir(), `edgemesh-${lab.prefix}`))
    const mesh = new Mesh(lab, dir, opts)
    try {
      await mesh.boot()
    } catch (err) {
      await mesh.stop()
      throw err
    }
    return mesh
  }

  nodeName (host: string): string { return `edge-${host}` }

  agent (host: string): MeshAgent {
    const a = this.agents.get(host)
    if (a == null) throw new Error(`no agent on ${host}`)
    return a
  }

  private async printPeerId (bin: string, config: string): Promise<string> {
    const { stdout } = await execFileP(NODE, [bin, '--config', config, '--print-peer-id'])
    return stdout.trim()
  }

  private async boot (): Promise<void> {
    const { lab, opts } = this
    if (opts.psk === true) {
      this.psk = Buffer.from(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}`)
      await writeFile(join(this.dir, 'swarm.key'), this.psk)
    }
    const pskFile = this.psk != null ? { pskFile: join(this.dir, 'swarm.key') } : {}
    const relayHosts = lab.relays.slice(0, opts.relays ?? lab.relays.length)
    for (const [i, r] of relayHosts.entries()) {
      const configFile = join(this.dir, `relay${i}.yaml`)
      await writeFile(configFile, stringify({
        identityFile: join(this.dir, `relay${i}.key`),
        listen: { host: '0.0.0.0', tcpPort: 4001, udpPort: 4002, http: '0.0.0.0:9090' },
        announce: [r.ip],
        logLevel: opts.logLevel ?? 'info',
        ...pskFile,
        ...(opts.relayConfig ?? {})
      }))
      const peerId = await this.printPeerId(SERVER_BIN, configFile)
      this.relays.push({ host: r.name, ip: r.ip, peerId, configFile, proc: undefined as unknown as LabProcess })
    }
    await Promise.all(this.relays.map(async (r) => { await this.startRelay(r) }))

    const relaysConf = this.relays.map((r) => ({ host: r.ip, peerId: r.peerId, tcpPort: 4001, udpPort: 4002 }))
    for (const host of opts.agents) {
      const configFile = join(this.dir, `${host}.yaml`)
      const socket = join(this.dir, `${host}.sock`)
      await writeFile(configFile, stringify({
        nodeName: this.nodeName(host),
        identityFile: join(this.dir, `${host}.key`),
        listen: { host: '0.0.0.0', udpPort: 4003, tcpPort: 4004 },
        controlSocket: socket,
        relays: relaysConf,
        ...(opts.peersFile === false ? {} : { peersFile: this.peersFile }),
        diagnostics: opts.diagnostics ?? true,
        logLevel: opts.logLevel ?? 'info',
        ...pskFile,
        ...(opts.agentConfig?.(host, this.relays) ?? {})
      }))
      const peerId = await this.printPeerId(AGENT_BIN, configFile)
      this.agents.set(host, { host, nodeName: this.nodeName(host), peerId, socket, configFile, proc: undefined as unknown as LabProcess })
    }
    await this.writePeersFile()
    await Promise.all([...this.agents.values()].map(async (a) => { await this.startAgent(a) }))
  }

  async writePeersFile (extra: Array<{ name: string, peerId: string }> = []): Promise<void> {
    const peers = [...this.agents.values()].filter((a) => a.extra !== true).map((a) => ({ name: a.nodeName, peerId: a.peerId }))
    await writeFile(this.peersFile, stringify({ peers: [...peers, ...(this.opts.extraPeers ?? []), ...extra] }))
  }

  async startRelay (r: MeshRelay): Promise<void> {
    // the image sets the agent's malloc tunable for every process, the relay's too (manifests/Dockerfile)
    r.proc = this.lab.spawn(r.host, [NODE, ...RELAY_NODE_FLAGS, SERVER_BIN, '--config', r.configFile], { logFile: join(this.dir, `${r.host}.log`), env: AGENT_ENV })
    await r.proc.waitForLine(/edgemesh-server ready/, 20_000)
  }

  async startAgent (a: MeshAgent): Promise<void> {
    a.proc = this.lab.spawn(a.host, [NODE, ...AGENT_NODE_FLAGS, AGENT_BIN, '--config', a.configFile], { logFile: join(this.dir, `${a.host}.log`), env: { ...AGENT_ENV, ...this.opts.agentEnv } })
    await a.proc.waitForLine(/edgemesh-agent ready/, 20_000)
  }

  /**
   * Starts an agent outside the mesh's shared peers file, with its own peers list and PSK
   * choice: used to play an unknown peer or one with the wrong pre-shared key.
   */
  async startExtraAgent (host: string, opts: { psk: 'same' | 'wrong' | 'none', peers: Array<{ name: string, peerId: string, addresses?: string[] }> }): Promise<MeshAgent> {
    const configFile = join(this.dir, `${host}.yaml`)
    const peersFile = join(this.dir, `${host}-peers.yaml`)
    let pskFile: string | undefined
    if (opts.psk === 'same') pskFile = join(this.dir, 'swarm.key')
    if (opts.psk === 'wrong') {
      pskFile = join(this.dir, `${host}-wrong.key`)
      await writeFile(pskFile, `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}`)
    }
    const relays = this.relays.map((r) => ({ host: r.ip, peerId: r.peerId, tcpPort: 4001, udpPort: 4002 }))
    await writeFile(configFile, stringify({
      nodeName: this.nodeName(host),
      identityFile: join(this.dir, `${host}.key`),
      listen: { host: '0.0.0.0', udpPort: 4003, tcpPort: 4004 },
      controlSocket: join(this.dir, `${host}.sock`),
      relays,
      peersFile,
      diagnostics: true,
      logLevel: this.opts.logLevel ?? 'info',
      ...(pskFile != null ? { pskFile } : {})
    }))
    const peerId = await this.printPeerId(AGENT_BIN, configFile)
    await writeFile(peersFile, stringify({ peers: [...opts.peers, { name: this.nodeName(host), peerId }] }))
    const agent: MeshAgent = { host, nodeName: this.nodeName(host), peerId, socket: join(this.dir, `${host}.sock`), configFile, proc: undefined as unknown as LabProcess, extra: true }
    this.agents.set(host, agent)
    await this.startAgent(agent)
    return agent
  }

  /** SIGKILLs a relay and starts it again with the same identity and ports. */
  async restartRelay (index = 0, downMs = 0): Promise<void> {
    const r = this.relays[index]!
    await r.proc.kill('SIGKILL')
    if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs))
    await this.startRelay(r)
  }

  async call<T = any> (host: string, method: string, path: string, timeoutMs = 60_000): Promise<T> {
    return await callAgent<T>(this.agent(host).socket, method, path, timeoutMs)
  }

  async ping (from: string, to: string): Promise<{ path: string, rttMs: number, connectMs: number, remote: string }> {
    return await this.call(from, 'POST', `/ping?node=${this.nodeName(to)}&count=3`)
  }

  async status (host: string): Promise<any> { return await this.call(host, 'GET', '/status') }

  /** Runs the operator CLI against an agent's control socket. */
  async cli (host: string, args: string[]): Promise<string> {
    const { stdout } = await execFileP(NODE, [CLI_BIN, '--socket', this.agent(host).socket, ...args])
    return stdout
  }

  /** Fetches a relay's /metrics from inside the lab. */
  async relayMetrics (index = 0): Promise<string> {
    const r = this.relays[index]!
    const res = await this.lab.exec(r.host, [NODE, '-e', 'fetch("http://127.0.0.1:9090/metrics").then(r=>r.text()).then(t=>process.stdout.write(t))'])
    return res.stdout
  }

  async agentMetrics (host: string): Promise<string> {
    return await this.call<string>(host, 'GET', '/metrics')
  }

  async stop (): Promise<void> {
    await Promise.all([...this.agents.values()].map(async (a) => { await a.proc?.kill('SIGTERM') }))
    await Promise.all(this.relays.map(async (r) => { await r.proc?.kill('SIGTERM') }))
    if (process.env.EDGEMESH_KEEP_LOGS == null) await rm(this.dir, { recursive: true, force: true })
  }
}

/** Sums a Prometheus counter/gauge over all label sets matching `labels` (substring match). */
export function metricValue (text: string, name: string, labels = ''): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const rest = line.slice(name.length)
    if (rest[0] !== '{' && rest[0] !== ' ') continue
    if (labels !== '' && !rest.includes(labels)) continue
    sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}
