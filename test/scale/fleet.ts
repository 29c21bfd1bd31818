// The scale harness's environment: a real etcd + kube-apiserver (test/controlplane/harness.ts)
// with the chart's RBAC and peer-record policy, a real edgemesh-server process (bin/, runs dist/;
// started by test/scale/relay-load.ts with the manifests' runtime flags, a fresh key and PSK),
// and a fleet of simulated agents (sim-agent.ts) spread over worker processes (worker.ts).
// Each simulated agent has its own Node, its own pod-bound token (the admission policy applies),
// its own loopback address (127.20.x.y) for its UDP socket and TCP listener.
// stop() ends the workers, the relay and the control plane (by PID) and removes the temp dir.
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startControlPlane, type ControlPlane } from '../controlplane/harness.ts'
import { agentToken, installMeshRbac } from '../controlplane/cluster.ts'
import { startRelay, type RelayUnderTest } from './relay-load.ts'
import { AgentConfigFields } from '../../shared/config.ts'
import type { SimRelay } from './sim-agent.ts'
import type { WorkerCommon, WorkerRequest, WorkerStats } from './protocol.ts'

const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url))
export const MESH_NAMESPACE = 'edgemesh'

export interface ScaleEnvOptions {
  workers: number
  /** run each agent's catalog and peer-record publisher (default true) */
  catalog?: boolean
  /** hold a circuit reservation per agent (default true) */
  reservation?: boolean
  /** 'pod-bound': a TokenRequest per agent bound to its Pod on its Node; 'admin': one admin token (no admission policy) */
  tokens?: 'pod-bound' | 'admin'
  /** extra relay config (merged over the harness's) */
  relayConfig?: Record<string, unknown>
  log?: (s: string) => void
}

export interface FleetAgent { index: number, nodeName: string, peerId: string, worker: number }

export type RelayProcess = RelayUnderTest

/** Loopback address of simulated agent i: 127.20.0.1 .. (250 per /24, never .0 or .255). */
export const simAddress = (i: number): string => `127.20.${Math.floor(i / 250)}.${(i % 250) + 1}`
export const simNodeName = (i: number): string => `sim-${String(i).padStart(4, '0')}`

class Worker {
  readonly child: ChildProcess
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (v: any) => void, reject: (e: Error) => void }>()
  readonly ready: Promise<void>
  stderrTail = ''

  constructor () {
    this.child = fork(WORKER, [], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], serialization: 'advanced' })
    const keep = (c: Buffer): void => { this.stderrTail = (this.stderrTail + c.toString()).slice(-20_000) }
    this.child.stdout?.on('data', keep)
    this.child.stderr?.on('data', keep)
    this.ready = new Promise((resolve, reject) => {
      this.pending.set(0, { resolve: () => { resolve() }, reject })
    })
    this.child.on('message', (m: { id: number, ok: boolean, result?: unknown, error?: string }) => {
      const p = this.pending.get(m.id)
      if (p == null) return
      this.pending.delete(m.id)
      if (m.ok) p.resolve(m.result)
      else p.reject(new Error(m.error))
    })
    this.child.on('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`scale worker ${this.child.pid} exited (${code ?? signal}): ${this.stderrTail.slice(-2000)}`))
      this.pending.clear()
    })
  }

  async call<T> (req: WorkerRequest): Promise<T> {
    const id = this.nextId++
    return await new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.child.send({ id, req })
    })
  }

  async kill (): Promise<void> {
    if (this.child.exitCode != null || this.child.signalCode != null) return
    const exited = new Promise((resolve) => { this.child.once('exit', resolve) })
    this.child.kill('SIGKILL')
    await exited
  }
}

/** The relay's CPU time (ticks) and RSS from /proc/<pid>. */
export async function procUsage (pid: number): Promise<{ cpuTicks: number, rssBytes: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const cpuTicks = Number(rest[11]) + Number(rest[12]) // utime + stime
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
  return { cpuTicks, rssBytes: rssKb * 1024 }
}
/** USER_HZ: 100 on Linux */
export const TICKS_PER_SECOND = 100

/** PID of the process whose command line has all the parts (the apiserver of this harness, say). */
export async function findPid (parts: string[]): Promise<number | undefined> {
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const cmd = (await readFile(`/proc/${d}/cmdline`, 'utf8')).split('\0')
      if (parts.every((p) => cmd.some((c) => c.includes(p)))) return Number(d)
    } catch { /* gone */ }
  }
  return undefined
}

/** Prometheus text -> sum of the samples of `name` whose labels match every `want` pair. */
export function sumSamples (text: string, name: string, want: Record<string, string | RegExp> = {}): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line)
    if (m == null || m[1] !== name) continue
    const labels: Record<string, string> = {}
    for (const lm of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]!] = lm[2]!
    const ok = Object.entries(want).every(([k, v]) => typeof v === 'string' ? labels[k] === v : v.test(labels[k] ?? ''))
    if (ok) sum += Number(m[4])
  }
  return sum
}

export interface FleetStats extends Omit<WorkerStats, 'minPeers' | 'at'> {
  minPeers: number
  /** the workers' RSS and CPU, each */
  workers: Array<{ pid: number, agents: number, rssBytes: number, heapUsedBytes: number, cpuMicros: number }>
}

export class ScaleEnv {
  readonly cp: ControlPlane
  readonly relay: RelayProcess
  readonly dir: string
  readonly apiserverPid: number | undefined
  readonly agents: FleetAgent[] = []
  /** ms spent minting pod-bound tokens (and creating Nodes and Pods), per agent */
  readonly tokenMs: number[] = []
  private readonly minted = new Map<number, string>()
  private readonly workers: Worker[]
  private readonly opts: ScaleEnvOptions
  private readonly common: WorkerCommon

  private constructor (cp: ControlPlane, relay: RelayProcess, dir: string, apiserverPid: number | undefined, workers: Worker[], opts: ScaleEnvOptions, common: WorkerCommon) {
    this.cp = cp; this.relay = relay; this.dir = dir; this.apiserverPid = apiserverPid; this.workers = workers; this.opts = opts; this.common = common
  }

  static async start (opts: ScaleEnvOptions): Promise<ScaleEnv> {
    const log = opts.log ?? (() => {})
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-scale-'))
    let cp: ControlPlane | undefined
    let relay: RelayProcess | undefined
    const workers: Worker[] = []
    try {
      log('control plane (etcd + kube-apiserver) and the chart\'s RBAC + peer-record policy')
      cp = await startControlPlane()
      await installMeshRbac(cp, { namespace: MESH_NAMESPACE })
      const apiserverPid = await findPid(['kube-apiserver', `--secure-port=${cp.port}`])
      log('relay (edgemesh-server, as the manifests run it: test/scale/relay-load.ts startRelay)')
      relay = await startRelay({ ...(opts.relayConfig != null ? { config: opts.relayConfig } : {}) })
      const kubeDefaults = AgentConfigFields.shape.kubernetes.unwrap().parse({})
      const tunnelDefaults = AgentConfigFields.shape.tunnel.parse(undefined)
      const common: WorkerCommon = {
        kubeServer: cp.url, caPem: cp.caPem, namespace: MESH_NAMESPACE,
        relays: [{ host: '127.0.0.1', peerId: relay.peerId, tcpPort: relay.tcpPort, udpPort: relay.udpPort }] satisfies SimRelay[],
        // the psk file's bytes, as the agent's loadPsk returns them
        pskHex: Buffer.from(await readFile(relay.pskFile)).toString('hex'),
        keepaliveMs: tunnelDefaults.keepaliveMs,
        leaseDurationSeconds: kubeDefaults.leaseDurationSeconds,
        catalog: opts.catalog ?? true,
        reservation: opts.reservation ?? true
      }
      for (let i = 0; i < opts.workers; i++) workers.push(new Worker())
      await Promise.all(workers.map(async (w) => { await w.ready; await w.call({ op: 'init', common }) }))
      return new ScaleEnv(cp, relay, dir, apiserverPid, workers, opts, common)
    } catch (err) {
      await Promise.allSettled(workers.map(async (w) => { await w.kill() }))
      await relay?.stop().catch(() => {})
      await cp?.stop().catch(() => {})
      await rm(dir, { recursive: true, force: true })
      throw err
    }
  }

  get workerPids (): number[] { return this.workers.map((w) => w.child.pid!) }
  get settings (): Pick<WorkerCommon, 'keepaliveMs' | 'leaseDurationSeconds'> { return { keepaliveMs: this.common.keepaliveMs, leaseDurationSeconds: this.common.leaseDurationSeconds } }

  /**
   * Mints the Node, Pod and pod-bound token of agents [from, to) ahead of their start (8 at a
   * time), the way the kubelet has a pod's token before the agent runs.
   */
  async mintTokens (to: number, from = this.agents.length): Promise<void> {
    if (this.opts.tokens === 'admin') return
    let next = from
    const one = async (): Promise<void> => {
      while (next < to) {
        const i = next++
        if (this.minted.has(i)) continue
        const t0 = performance.now()
        this.minted.set(i, await agentToken(this.cp, { namespace: MESH_NAMESPACE, nodeName: simNodeName(i), expirationSeconds: 7200 }))
        this.tokenMs.push(performance.now() - t0)
      }
    }
    await Promise.all(Array.from({ length: 8 }, one))
  }

  private async tokens (from: number, to: number): Promise<string[]> {
    if (this.opts.tokens === 'admin') return new Array<string>(to - from).fill(this.cp.adminToken)
    await this.mintTokens(to, from)
    return Array.from({ length: to - from }, (_, k) => this.minted.get(from + k)!)
  }

  /** Adds simulated agents until there are n (round-robin over the workers); returns the new ones. */
  async grow (n: number, concurrencyPerWorker = 8): Promise<FleetAgent[]> {
    const from = this.agents.length
    if (n <= from) return []
    const tokens = await this.tokens(from, n)
    const byWorker: Array<Array<{ nodeName: string, bindHost: string, token: string, index: number }>> = this.workers.map(() => [])
    for (let i = from; i < n; i++) byWorker[i % this.workers.length]!.push({ nodeName: simNodeName(i), bindHost: simAddress(i), token: tokens[i - from]!, index: i })
    const started = await Promise.all(byWorker.map(async (specs, w) => {
      if (specs.length === 0) return []
      const ids = await this.workers[w]!.call<Array<{ nodeName: string, peerId: string }>>({ op: 'start', agents: specs.map(({ index: _i, ...s }) => s), concurrency: concurrencyPerWorker })
      return ids.map((id, k) => ({ index: specs[k]!.index, nodeName: id.nodeName, peerId: id.peerId, worker: w }))
    }))
    const added = started.flat().sort((a, b) => a.index - b.index)
    this.agents.push(...added)
    return added
  }

  async stats (): Promise<FleetStats> {
    const all = await Promise.all(this.workers.map(async (w) => ({ pid: w.child.pid!, s: await w.call<WorkerStats>({ op: 'stats' }) })))
    const sum = (f: (s: WorkerStats) => number): number => all.reduce((acc, { s }) => acc + f(s), 0)
    const optSum = (f: (s: WorkerStats) => number | undefined): number | undefined => all.some(({ s }) => f(s) !== undefined) ? sum((s) => f(s) ?? 0) : undefined
    const populated = all.filter(({ s }) => s.agents > 0)
    return {
      agents: sum((s) => s.agents),
      registered: sum((s) => s.registered),
      synced: sum((s) => s.synced),
      reserved: sum((s) => s.reserved),
      dropped: sum((s) => s.dropped),
      minPeers: populated.length === 0 ? 0 : Math.min(...populated.map(({ s }) => s.minPeers)),
      watchEvents: sum((s) => s.watchEvents),
      watchEventsByResource: all.reduce<Record<string, number>>((acc, { s }) => {
        for (const [r, v] of Object.entries(s.watchEventsByResource)) acc[r] = (acc[r] ?? 0) + v
        return acc
      }, {}),
      watchBytesMetric: optSum((s) => s.watchBytesMetric),
      watchBytesCounted: sum((s) => s.watchBytesCounted),
      kubeWrites: sum((s) => s.kubeWrites),
      peerRecordWrites: optSum((s) => s.peerRecordWrites),
      rssBytes: sum((s) => s.rssBytes),
      heapUsedBytes: sum((s) => s.heapUsedBytes),
      cpuMicros: sum((s) => s.cpuMicros),
      workers: all.map(({ pid, s }) => ({ pid, agents: s.agents, rssBytes: s.rssBytes, heapUsedBytes: s.heapUsedBytes, cpuMicros: s.cpuMicros }))
    }
  }

  /** Agent `from` asks the relay to introduce it to agent `to`. */
  async connect (from: FleetAgent, to: FleetAgent, timeoutMs = 5_000): Promise<{ session: string, startedAt: number, doneAt: number }> {
    return await this.workers[from.worker]!.call({ op: 'connect', from: from.nodeName, target: to.peerId, timeoutMs })
  }

  /** Every worker runs a closed loop of connects between random pairs. */
  async saturate (durationMs: number, concurrencyPerWorker: number, timeoutMs = 5_000): Promise<Array<{ sessions: string[], failed: number, refused: number, startedAt: number, endedAt: number }>> {
    const targets = this.agents.map((a) => a.peerId)
    return await Promise.all(this.workers.map(async (w) => await w.call({ op: 'saturate', durationMs, concurrency: concurrencyPerWorker, targets, timeoutMs })))
  }

  /** peer-info the agents received as targets since the last call: [session, at ms]. */
  async takeIncoming (): Promise<Array<[string, number]>> {
    return (await Promise.all(this.workers.map(async (w) => await w.call<Array<[string, number]>>({ op: 'takeIncoming' })))).flat()
  }

  async relayMetrics (): Promise<string> {
    return await (await fetch(`http://${this.relay.http}/metrics`)).text()
  }

  async apiserverMetrics (): Promise<string> {
    return await new Promise((resolve, reject) => {
      import('node:https').then(({ request }) => {
        const req = request(`${this.cp.url}/metrics`, { ca: this.cp.caPem, headers: { authorization: `Bearer ${this.cp.adminToken}` } }, (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => { resolve(Buffer.concat(chunks).toString('utf8')) })
          res.on('error', reject)
        })
        req.on('error', reject)
        req.end()
      }, reject)
    })
  }

  workerLogTail (): string { return this.workers.map((w) => `--- worker ${w.child.pid}\n${w.stderrTail.slice(-3000)}`).join('\n') }

  /** Ends everything this environment started; returns what could not be stopped (empty when clean). */
  async stop (): Promise<string[]> {
    const left: string[] = []
    await Promise.allSettled(this.workers.map(async (w) => {
      try { await Promise.race([w.call({ op: 'stop' }), new Promise((resolve) => setTimeout(resolve, 10_000))]) } catch { /* killed below */ }
      await w.kill()
    }))
    for (const w of this.workers) if (w.child.exitCode == null && w.child.signalCode == null) left.push(`worker ${w.child.pid}`)
    await this.relay.stop().catch((err: Error) => { left.push(`relay ${this.relay.pid}: ${err.message}`) })
    await this.cp.stop().catch((err: Error) => { left.push(`control plane: ${err.message}`) })
    await rm(this.dir, { recursive: true, force: true }).catch((err: Error) => { left.push(`${this.dir}: ${err.message}`) })
    return left
  }
}
