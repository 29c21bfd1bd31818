// Load on one relay: N simulated agents running the agent's own code (RendezvousClient over a
// UDX socket each, and a libp2p node from agent/tunnel/node.ts holding a circuit reservation),
// spread over worker processes, against a real edgemesh-server process. Every agent comes from
// 127.0.0.1: one source IP, as a big site behind one NAT looks to the relay.
// Measures the relay's RSS idle and with N agents, how many registered and reserved, the
// refusals the relay counted, and punch coordination (A asks to reach B: until both sides hold
// the peer-info) p50/p99 at a target rate.
//   node test/scale/relay-load.ts [--agents 100,300,1000] [--workers 4] [--rate 100] [--seconds 10] [--rest 0]
//     [--relay-config '{"limits":{...}}'] [--relay-node-flags '--heapsnapshot-signal=SIGUSR2']
// Last stdout line: {"runs": [{ "n", "relay_rss_mb", "relay_rss_per_agent_kb", ... }]}.
// Used by test/e2e/relay-capacity.test.ts and by bench:scale (lane C) for the relay half.
// Needs dist/ (npm run build): the relay runs as it ships.
import { fork, type ChildProcess } from 'node:child_process'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { randomBytes } from 'node:crypto'
import { stringify } from 'yaml'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { startProcess, type LabProcess } from '../lab/proc.ts'
import { settledMem } from '../lab/rss.ts'
import { createUdx, type Udx } from '../../shared/udx.ts'
import { createLogger } from '../../shared/logging.ts'
import { Metrics } from '../../shared/metrics.ts'
import { ed25519Verifier } from '../../shared/ed25519.ts'
import { parsePeerId } from '../../shared/peer-id.ts'
import { decodeMessage, isRelayMessage, looksLikeRendezvous, type PeerInfoMessage } from '../../shared/wire/rendezvous.ts'
import { RendezvousClient } from '../../agent/tunnel/rendezvous-client.ts'
import { createAgentNode, type AgentNode } from '../../agent/tunnel/node.ts'

const ROOT = resolve(import.meta.dirname, '../..')
const SERVER_BIN = join(ROOT, 'bin/edgemesh-server.js')
/** the runtime flags and malloc tunable the manifests give the relay (test/lab/mesh.ts) */
const RELAY_NODE_FLAGS = ['--max-semi-space-size=2', '--heap-growing-percent=25']
const RELAY_ENV = { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=16384' }
/** the agent's default tunnel.keepaliveMs (the relay may ask for less) */
const AGENT_KEEPALIVE_MS = 5_000
/** how long one simulated agent waits for its first `registered` before going on to its reservation */
const REGISTER_WAIT_MS = 20_000

// ------------------------------------------------------------------------------------ relay

export interface RelayUnderTest {
  pid: number
  peerId: string
  host: string
  udpPort: number
  tcpPort: number
  /** host:port of /metrics and /healthz */
  http: string
  pskFile: string
  proc: LabProcess
  stop: () => Promise<void>
}

/** Starts edgemesh-server on loopback (free ports, a fresh key and PSK); `config` is merged over. */
export async function startRelay (opts: { config?: Record<string, unknown>, logLevel?: string, nodeFlags?: string[] } = {}): Promise<RelayUnderTest> {
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-relay-load-'))
  const pskFile = join(dir, 'swarm.key')
  await writeFile(pskFile, `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}\n`)
  const configFile = join(dir, 'relay.yaml')
  await writeFile(configFile, stringify({
    identityFile: join(dir, 'relay.key'),
    pskFile,
    listen: { host: '127.0.0.1', tcpPort: 0, udpPort: 0, http: '127.0.0.1:0' },
    logLevel: opts.logLevel ?? 'warn',
    ...(opts.config ?? {})
  }))
  // the ready line is info: print it whatever the configured level, then quieten
  const proc = startProcess([process.execPath, ...RELAY_NODE_FLAGS, ...(opts.nodeFlags ?? []), SERVER_BIN, '--config', configFile, '--set', 'logLevel=info'], { env: RELAY_ENV, logFile: join(dir, 'relay.log') })
  const stop = async (): Promise<void> => { await proc.kill('SIGTERM', 5_000); await rm(dir, { recursive: true, force: true }) }
  try {
    const ready = JSON.parse(await proc.waitForLine(/edgemesh-server ready/, 30_000)) as { peerId: string, udp: string, tcp: string[], http: string }
    const tcpPort = Number(/\/tcp\/(\d+)/.exec(ready.tcp[0] ?? '')?.[1])
    return { pid: proc.pid, peerId: ready.peerId, host: '127.0.0.1', udpPort: Number(ready.udp.split(':').at(-1)), tcpPort, http: ready.http, pskFile, proc, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

export async function relayMetrics (relay: Pick<RelayUnderTest, 'http'>): Promise<string> {
  const res = await fetch(`http://${relay.http}/metrics`)
  return await res.text()
}

/** Sum of every sample of `name` whose labels contain `labels`. */
export function metricSum (text: string, name: string, labels = ''): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== ' ' && line[name.length] !== '{')) continue
    if (labels !== '' && !line.includes(labels)) continue
    sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

/** Refusals the relay counted, by reason. */
export function refusalsOf (text: string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^edgemesh_relay_refusals_total\{reason="([^"]+)"\} (\S+)$/gm)) out[m[1]!] = Number(m[2])
  return out
}

// ------------------------------------------------------------------------------------ fleet

export interface FleetStats {
  agents: number
  /** RendezvousClient up (the relay answered its latest registers) */
  registered: number
  /** holding a circuit reservation on the relay */
  reserved: number
  /** register-refused answers the agents received */
  registerRefusals: number
  /** failed reservation attempts (each retried) */
  reservationFailures: number
}

export interface PunchStats {
  attempted: number
  completed: number
  failed: number
  /** ms from A's connect until both A and B hold the peer-info */
  p50Ms: number
  p99Ms: number
  maxMs: number
  /** coordinations completed per second over the run */
  ratePerS: number
  /** the workers' own event loop delay p99 during the run (the highest): a loaded worker delays what it measures */
  workerLagP99Ms: number
}

export interface Fleet {
  /** Starts agents until `total` run (spread over the workers); resolves when each registered and reserved, or gave up. */
  grow: (total: number, timeoutMs?: number) => Promise<FleetStats>
  stats: () => Promise<FleetStats>
  /** Punch coordinations between random pairs at `ratePerS` for `seconds`. */
  punch: (ratePerS: number, seconds: number) => Promise<PunchStats>
  stop: () => Promise<void>
}

interface WorkerInit {
  relay: { host: string, udpPort: number, tcpPort: number, peerId: string, pskFile: string }
  index: number
  reserve: boolean
  /** agents starting at once per worker */
  concurrency: number
}

type Request = { op: 'grow', total: number, timeoutMs: number } | { op: 'stats' } | { op: 'punch', ratePerS: number, seconds: number } | { op: 'stop' }

/** N agents over `workers` processes (the same file, run as a worker). */
export async function startFleet (relay: RelayUnderTest, opts: { workers?: number, reserve?: boolean, concurrency?: number } = {}): Promise<Fleet> {
  const workers: Array<{ child: ChildProcess, call: (r: Request) => Promise<any> }> = []
  const count = opts.workers ?? 4
  for (let index = 0; index < count; index++) {
    const init: WorkerInit = {
      relay: { host: relay.host, udpPort: relay.udpPort, tcpPort: relay.tcpPort, peerId: relay.peerId, pskFile: relay.pskFile },
      index,
      reserve: opts.reserve ?? true,
      concurrency: opts.concurrency ?? 8
    }
    const child = fork(import.meta.filename, ['--worker', JSON.stringify(init)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: ['--max-semi-space-size=8'] })
    const waiting = new Map<number, { resolve: (v: any) => void, reject: (e: Error) => void }>()
    let next = 0
    child.on('message', (m: { id: number, result?: unknown, error?: string }) => {
      const w = waiting.get(m.id)
      waiting.delete(m.id)
      if (m.error != null) w?.reject(new Error(`relay-load worker ${index}: ${m.error}`))
      else w?.resolve(m.result)
    })
    child.on('exit', (code) => { for (const w of waiting.values()) w.reject(new Error(`relay-load worker ${index} exited (${code})`)); waiting.clear() })
    workers.push({
      child,
      call: async (r) => await new Promise((resolve, reject) => {
        const id = ++next
        waiting.set(id, { resolve, reject })
        child.send({ id, ...r })
      })
    })
  }
  const sum = (all: FleetStats[]): FleetStats => all.reduce((a, s) => ({
    agents: a.agents + s.agents, registered: a.registered + s.registered, reserved: a.reserved + s.reserved,
    registerRefusals: a.registerRefusals + s.registerRefusals, reservationFailures: a.reservationFailures + s.reservationFailures
  }), { agents: 0, registered: 0, reserved: 0, registerRefusals: 0, reservationFailures: 0 })
  return {
    grow: async (total, timeoutMs = 300_000) => sum(await Promise.all(workers.map(async (w, i) =>
      await w.call({ op: 'grow', total: Math.floor(total / count) + (i < total % count ? 1 : 0), timeoutMs })))),
    stats: async () => sum(await Promise.all(workers.map(async (w) => await w.call({ op: 'stats' })))),
    punch: async (ratePerS, seconds) => {
      const parts: Array<{ latencies: number[], attempted: number, failed: number, lagP99Ms: number }> = await Promise.all(workers.map(async (w) => await w.call({ op: 'punch', ratePerS: ratePerS / count, seconds })))
      const latencies = parts.flatMap((p) => p.latencies).sort((a, b) => a - b)
      const q = (p: number): number => latencies.length === 0 ? NaN : latencies[Math.min(latencies.length - 1, Math.ceil(p * latencies.length) - 1)]!
      const round = (v: number): number => Math.round(v * 10) / 10
      return {
        attempted: parts.reduce((a, p) => a + p.attempted, 0),
        completed: latencies.length,
        failed: parts.reduce((a, p) => a + p.failed, 0),
        p50Ms: round(q(0.5)),
        p99Ms: round(q(0.99)),
        maxMs: round(latencies.at(-1) ?? NaN),
        ratePerS: round(latencies.length / seconds),
        workerLagP99Ms: round(Math.max(...parts.map((p) => p.lagP99Ms)))
      }
    },
    stop: async () => {
      await Promise.all(workers.map(async (w) => {
        await Promise.race([w.call({ op: 'stop' }).catch(() => {}), new Promise((resolve) => setTimeout(resolve, 10_000))])
        if (w.child.exitCode == null && w.child.signalCode == null) w.child.kill('SIGKILL')
      }))
    }
  }
}

// ------------------------------------------------------------------------------------ worker

interface SimAgent {
  index: number
  peerIdBytes: Uint8Array
  client: RendezvousClient
  node?: AgentNode
  reserved: boolean
  stop: () => Promise<void>
}

class Worker {
  private readonly agents: SimAgent[] = []
  private readonly udx: Udx = createUdx()
  private readonly log = createLogger({ name: 'relay-load', level: 'error' })
  private readonly metrics = new Metrics({ processMetrics: false })
  private readonly psk: Uint8Array
  private readonly verifyRelay: (data: Uint8Array, signature: Uint8Array) => boolean
  /** punch sessions the responder side saw: session -> when */
  private readonly incoming = new Map<bigint, number>()
  private readonly incomingWaiters = new Map<bigint, (at: number) => void>()
  private registerRefusals = 0
  private reservationFailures = 0

  private readonly init: WorkerInit

  constructor (init: WorkerInit) {
    this.init = init
    this.psk = new Uint8Array(readFileSync(init.relay.pskFile))
    this.verifyRelay = ed25519Verifier(parsePeerId(init.relay.peerId, 'relay.peerId'))
  }

  async handle (r: Request): Promise<unknown> {
    switch (r.op) {
      case 'grow': return await this.grow(r.total, r.timeoutMs)
      case 'stats': return this.stats()
      case 'punch': return await this.punch(r.ratePerS, r.seconds)
      case 'stop':
        await Promise.all(this.agents.map(async (a) => { await a.stop() }))
        return {}
    }
  }

  private stats (): FleetStats {
    return {
      agents: this.agents.length,
      registered: this.agents.filter((a) => a.client.up).length,
      reserved: this.agents.filter((a) => a.reserved).length,
      registerRefusals: this.registerRefusals,
      reservationFailures: this.reservationFailures
    }
  }

  private async grow (total: number, timeoutMs: number): Promise<FleetStats> {
    const deadline = Date.now() + timeoutMs
    const todo: number[] = []
    for (let i = this.agents.length; i < total; i++) todo.push(i)
    const run = async (): Promise<void> => {
      for (let i = todo.shift(); i != null; i = todo.shift()) {
        const agent = await this.startAgent(this.init.index * 1_000_000 + i, deadline)
        this.agents.push(agent)
      }
    }
    await Promise.all(Array.from({ length: this.init.concurrency }, run))
    return this.stats()
  }

  private async startAgent (index: number, deadline: number): Promise<SimAgent> {
    const { relay } = this.init
    const privateKey = await generateKeyPair('Ed25519')
    const peerId = peerIdFromPrivateKey(privateKey)
    const peerIdBytes = peerId.toMultihash().bytes
    const socket = this.udx.createSocket()
    socket.bind(0, '127.0.0.1')
    const udpPort = socket.address().port
    const client = new RendezvousClient({
      relay: { host: relay.host, peerId: relay.peerId, tcpPort: relay.tcpPort, udpPort: relay.udpPort },
      endpoint: { host: relay.host, port: relay.udpPort },
      socket,
      privateKey,
      peerIdBytes,
      nodeName: `sim-${index}`,
      candidates: () => [{ host: '127.0.0.1', port: udpPort, proto: 'udp' }],
      psk: this.psk,
      keepaliveMs: AGENT_KEEPALIVE_MS,
      verifyRelay: this.verifyRelay,
      log: this.log
    })
    socket.on('message', (buf, from) => {
      if (from.port !== relay.udpPort || !looksLikeRendezvous(buf)) return
      let decoded
      try { decoded = decodeMessage(buf) } catch { return }
      const m = decoded.message
      if (!isRelayMessage(m) || decoded.signed == null) return
      if (m.type === 'register-refused') this.registerRefusals++
      client.onMessage(m, decoded.signed)
    })
    client.on('incoming', (info: PeerInfoMessage) => { this.onIncoming(info) })
    client.start()
    const agent: SimAgent = {
      index,
      peerIdBytes,
      client,
      reserved: false,
      stop: async () => {
        client.stop()
        await Promise.resolve(agent.node?.stop()).catch(() => {})
        await Promise.resolve(socket.close()).catch(() => {})
      }
    }
    // a refused agent (limits) does not hold up the rest: it keeps re-registering meanwhile
    await client.waitUp(Math.max(0, Math.min(REGISTER_WAIT_MS, deadline - Date.now())))
    if (!this.init.reserve) return agent
    agent.node = await createAgentNode({ privateKey, listenHost: '127.0.0.1', tcpPort: 0, psk: this.psk, isAllowedPeer: () => true, log: this.log, metrics: this.metrics })
    const circuit = multiaddr(`/ip4/${relay.host}/tcp/${relay.tcpPort}/p2p/${relay.peerId}/p2p-circuit`)
    const tm = (agent.node as any).components.transportManager
    // as agent/tunnel/tunnel.ts ensureCircuitReservations: listen on the circuit address, retried every second
    while (Date.now() < deadline) {
      try {
        await Promise.race([tm.listen([circuit]), new Promise((_resolve, reject) => setTimeout(() => { reject(new Error('timeout')) }, 10_000))])
        if (agent.node.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit'))) { agent.reserved = true; break }
      } catch {}
      this.reservationFailures++
      await new Promise((resolve) => setTimeout(resolve, 1_000))
    }
    return agent
  }

  private onIncoming (info: PeerInfoMessage): void {
    const at = performance.now()
    const w = this.incomingWaiters.get(info.session)
    if (w != null) { this.incomingWaiters.delete(info.session); w(at); return }
    this.incoming.set(info.session, at)
  }

  private async responderSaw (session: bigint, timeoutMs: number): Promise<number> {
    const at = this.incoming.get(session)
    if (at != null) { this.incoming.delete(session); return at }
    return await new Promise((resolve, reject) => {
      const t = setTimeout(() => { this.incomingWaiters.delete(session); reject(new Error('responder never got the peer-info')) }, timeoutMs)
      this.incomingWaiters.set(session, (v) => { clearTimeout(t); resolve(v) })
    })
  }

  /** One coordination between two random agents of this worker: ms until both hold the peer-info. */
  private async coordinate (): Promise<number> {
    const ready = this.agents.filter((a) => a.client.up)
    if (ready.length < 2) throw new Error('fewer than 2 registered agents')
    const ai = Math.floor(Math.random() * ready.length)
    let bi = Math.floor(Math.random() * (ready.length - 1))
    if (bi >= ai) bi++
    const a = ready[ai]!; const b = ready[bi]!
    const t0 = performance.now()
    const info = await a.client.connect(b.peerIdBytes, true, 2_000)
    const tA = performance.now()
    const tB = await this.responderSaw(info.session, 2_000)
    return Math.max(tA, tB) - t0
  }

  private async punch (ratePerS: number, seconds: number): Promise<{ latencies: number[], attempted: number, failed: number, lagP99Ms: number }> {
    const lag = monitorEventLoopDelay({ resolution: 10 })
    lag.enable()
    const latencies: number[] = []
    let attempted = 0; let failed = 0
    const started = performance.now()
    const runs: Array<Promise<void>> = []
    const total = Math.round(ratePerS * seconds)
    // open loop: coordination k starts at k / rate, whatever the earlier ones are doing
    while (attempted < total) {
      const due = started + attempted * 1000 / ratePerS
      const wait = due - performance.now()
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
      attempted++
      runs.push(this.coordinate().then((ms) => { latencies.push(ms) }, () => { failed++ }))
    }
    await Promise.all(runs)
    lag.disable()
    this.incoming.clear()
    return { latencies, attempted, failed, lagP99Ms: lag.percentile(99) / 1e6 }
  }
}

async function runWorker (init: WorkerInit): Promise<void> {
  const worker = new Worker(init)
  process.on('message', (m: Request & { id: number }) => {
    worker.handle(m).then((result) => {
      process.send!({ id: m.id, result })
      if (m.op === 'stop') setTimeout(() => process.exit(0), 100)
    }, (err: Error) => { process.send!({ id: m.id, error: err.stack ?? err.message }) })
  })
  process.on('disconnect', () => { process.exit(0) })
}

// ------------------------------------------------------------------------------------ runs

export interface RelayRun {
  n: number
  registered: number
  reserved: number
  register_refusals: number
  reservation_failures: number
  join_s: number
  relay_rss_idle_mb: number
  relay_rss_mb: number
  relay_rss_per_agent_kb: number
  relay_heap_used_mb: number
  /** the V8 heap's committed size (used + garbage not yet collected + free pages kept) */
  relay_heap_total_mb: number
  /** ArrayBuffers and other memory outside the V8 heap that V8 knows of */
  relay_external_mb: number
  relay_cpu_pct: number
  /** the relay's event loop delay p99 (prom-client's default metric) after the punch phase */
  relay_loop_lag_p99_ms: number
  worker_loop_lag_p99_ms: number
  punch_target_per_s: number
  punch_coordinations_per_s: number
  punch_completed: number
  punch_failed: number
  punch_p50_ms: number
  punch_p99_ms: number
  refusals: Record<string, number>
}

/** CPU seconds (user + system) the process used so far. */
function cpuSeconds (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').at(-1)!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/**
 * One relay, agents added in steps (each of `ns` is a total): the relay's RSS idle, and at each
 * step the RSS once settled, the relay's CPU over the punch phase, and punch coordination.
 */
export async function measureRelay (opts: {
  ns: number[], workers?: number, punchRate?: number, punchSeconds?: number, relayConfig?: Record<string, unknown>, relayNodeFlags?: string[]
  /** rest this long after each step's join before reading the RSS (the join's garbage is collected and given back meanwhile) */
  restSeconds?: number
  log?: (s: string) => void, signal?: AbortSignal
}): Promise<RelayRun[]> {
  const log = opts.log ?? ((s: string) => { process.stderr.write(`${s}\n`) })
  const relay = await startRelay({ ...(opts.relayConfig != null ? { config: opts.relayConfig } : {}), ...(opts.relayNodeFlags != null ? { nodeFlags: opts.relayNodeFlags } : {}) })
  let fleet: Fleet | undefined
  const runs: RelayRun[] = []
  const onAbort = (): void => { void fleet?.stop(); void relay.stop() }
  opts.signal?.addEventListener('abort', onAbort)
  try {
    const idle = await settledMem(relay.pid)
    const idleMetrics = await relayMetrics(relay)
    log(`[relay-load] relay idle RSS ${idle.rssMb} MiB, heap used ${(metricSum(idleMetrics, 'nodejs_heap_size_used_bytes') / 2 ** 20).toFixed(1)} MiB, external ${(metricSum(idleMetrics, 'nodejs_external_memory_bytes') / 2 ** 20).toFixed(1)} MiB`)
    fleet = await startFleet(relay, { ...(opts.workers != null ? { workers: opts.workers } : {}) })
    for (const n of opts.ns) {
      const t0 = performance.now()
      const s = await fleet.grow(n)
      const joinS = (performance.now() - t0) / 1000
      log(`[relay-load] ${s.agents} agents: ${s.registered} registered, ${s.reserved} reserved in ${joinS.toFixed(1)} s (${s.registerRefusals} register refusals, ${s.reservationFailures} reservation failures)`)
      if ((opts.restSeconds ?? 0) > 0) await new Promise((resolve) => setTimeout(resolve, opts.restSeconds! * 1000))
      const mem = await settledMem(relay.pid, { timeoutMs: 20_000 })
      const before = await relayMetrics(relay)
      const heap = metricSum(before, 'nodejs_heap_size_used_bytes') / 2 ** 20
      const external = metricSum(before, 'nodejs_external_memory_bytes') / 2 ** 20
      const heapTotal = metricSum(before, 'nodejs_heap_size_total_bytes') / 2 ** 20
      const rate = opts.punchRate ?? 100
      const cpu0 = cpuSeconds(relay.pid); const wall0 = performance.now()
      const p = await fleet.punch(rate, opts.punchSeconds ?? 10)
      const cpuPct = (cpuSeconds(relay.pid) - cpu0) / ((performance.now() - wall0) / 1000) * 100
      const after = await fleet.stats()
      const metrics = await relayMetrics(relay)
      const run: RelayRun = {
        n,
        registered: after.registered,
        reserved: after.reserved,
        register_refusals: after.registerRefusals,
        reservation_failures: after.reservationFailures,
        join_s: Math.round(joinS * 10) / 10,
        relay_rss_idle_mb: idle.rssMb,
        relay_rss_mb: mem.rssMb,
        relay_rss_per_agent_kb: Math.round((mem.rssMb - idle.rssMb) * 1024 / n * 10) / 10,
        relay_heap_used_mb: Math.round(heap * 10) / 10,
        relay_heap_total_mb: Math.round(heapTotal * 10) / 10,
        relay_external_mb: Math.round(external * 10) / 10,
        relay_cpu_pct: Math.round(cpuPct * 10) / 10,
        relay_loop_lag_p99_ms: Math.round(metricSum(metrics, 'nodejs_eventloop_lag_p99_seconds') * 1e4) / 10,
        worker_loop_lag_p99_ms: p.workerLagP99Ms,
        punch_target_per_s: rate,
        punch_coordinations_per_s: p.ratePerS,
        punch_completed: p.completed,
        punch_failed: p.failed,
        punch_p50_ms: p.p50Ms,
        punch_p99_ms: p.p99Ms,
        refusals: refusalsOf(metrics)
      }
      log(`[relay-load] ${JSON.stringify(run)}`)
      runs.push(run)
    }
    return runs
  } finally {
    opts.signal?.removeEventListener('abort', onAbort)
    await fleet?.stop()
    await relay.stop()
  }
}

function arg (name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}

if (process.argv[2] === '--worker') {
  await runWorker(JSON.parse(process.argv[3]!) as WorkerInit)
} else if (import.meta.main) {
  const ns = (arg('agents') ?? '100,300,1000').split(',').map(Number)
  // a signal stops the relay (its own process group) and the workers before exiting
  const stop = new AbortController()
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { stop.abort(); setTimeout(() => process.exit(1), 6_000) })
  const runs = await measureRelay({
    signal: stop.signal,
    ...(arg('relay-node-flags') != null ? { relayNodeFlags: arg('relay-node-flags')!.split(' ') } : {}),
    ns,
    workers: Number(arg('workers') ?? 4),
    punchRate: Number(arg('rate') ?? 100),
    punchSeconds: Number(arg('seconds') ?? 10),
    restSeconds: Number(arg('rest') ?? 0),
    ...(arg('relay-config') != null ? { relayConfig: JSON.parse(arg('relay-config')!) } : {})
  })
  process.stdout.write(`${JSON.stringify({ runs })}\n`)
  process.exit(0)
}
