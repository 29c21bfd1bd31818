// A worker process of the scale harness: holds many simulated agents (sim-agent.ts) and answers
// the fleet's requests over the IPC channel (fleet.ts forks it). Exits when the channel closes,
// so a dead parent leaves no worker behind.
import { peerIdFromString } from '@libp2p/peer-id'
import { createLogger } from '../../shared/logging.ts'
import { SimAgent, type SimRelay } from './sim-agent.ts'
import type { WorkerCommon, WorkerRequest, WorkerStats } from './protocol.ts'

let common: WorkerCommon | undefined
const agents = new Map<string, SimAgent>()
const list: SimAgent[] = []
/** peer-info the relay sent us for someone else's connect: session -> when (ms, wall clock) */
let incoming: Array<[string, number]> = []
const log = createLogger({ name: 'edgemesh-sim', level: (process.env.EDGEMESH_SIM_LOG_LEVEL as any) ?? 'warn' })
const now = (): number => performance.timeOrigin + performance.now()

let pickHome: (peerId: string, relays: SimRelay[]) => SimRelay = (_p, relays) => relays[0]!
async function loadHomeRelay (): Promise<void> {
  // agent/tunnel/home-relay.ts (lane D): the agent's own choice of home relay, when it exists
  const path = '../../agent/tunnel/home-relay.ts'
  try {
    const m = await import(path) as { homeRelay?: (id: string, relays: readonly SimRelay[]) => SimRelay | undefined }
    if (typeof m.homeRelay === 'function') { const f = m.homeRelay; pickHome = (id, relays) => f(id, relays) ?? relays[0]! }
  } catch { /* not there yet: one relay anyway */ }
}

async function startAgents (specs: Array<{ nodeName: string, bindHost: string, token: string }>, concurrency: number): Promise<Array<{ nodeName: string, peerId: string }>> {
  const c = common!
  const psk = c.pskHex != null ? new Uint8Array(Buffer.from(c.pskHex, 'hex')) : undefined
  const out: Array<{ nodeName: string, peerId: string }> = []
  let next = 0
  const one = async (): Promise<void> => {
    while (next < specs.length) {
      const s = specs[next++]!
      const a = await SimAgent.create({
        nodeName: s.nodeName, bindHost: s.bindHost, namespace: c.namespace, relays: c.relays, pickHome,
        kube: { server: c.kubeServer, caPem: c.caPem, token: s.token },
        ...(psk != null ? { psk } : {}),
        keepaliveMs: c.keepaliveMs, leaseDurationSeconds: c.leaseDurationSeconds,
        catalog: c.catalog, reservation: c.reservation,
        log: log.child({ node: s.nodeName }),
        onIncoming: (info) => { incoming.push([info.session.toString(), now()]) }
      })
      await a.start()
      agents.set(a.nodeName, a)
      list.push(a)
      out.push({ nodeName: a.nodeName, peerId: a.peerId.toString() })
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, one))
  return out
}

async function stats (): Promise<WorkerStats> {
  let watchEvents = 0; let watchBytesMetric: number | undefined; let watchBytesCounted = 0; let kubeWrites = 0
  let peerRecordWrites: number | undefined
  let registered = 0; let synced = 0; let reserved = 0; let dropped = 0
  let minPeers = Infinity
  const watchEventsByResource: Record<string, number> = {}
  for (const a of list) {
    for (const [r, v] of Object.entries(await a.counterBy('edgemesh_catalog_watch_events_total', 'resource'))) {
      watchEventsByResource[r] = (watchEventsByResource[r] ?? 0) + v
      watchEvents += v
    }
    const wb = await a.counter('edgemesh_catalog_watch_bytes_total')
    if (wb !== undefined) watchBytesMetric = (watchBytesMetric ?? 0) + wb
    const pw = await a.counter('edgemesh_peer_record_writes_total')
    if (pw !== undefined) peerRecordWrites = (peerRecordWrites ?? 0) + pw
    watchBytesCounted += a.countedWatchBytes
    kubeWrites += a.kubeWrites
    if (a.registered) registered++
    if (a.catalogSynced) synced++
    if (a.reserved) reserved++
    dropped += a.dropped
    minPeers = Math.min(minPeers, a.peersSeen)
  }
  const cpu = process.cpuUsage()
  return {
    agents: list.length, registered, synced, reserved, dropped,
    minPeers: list.length === 0 ? 0 : minPeers,
    watchEvents, watchEventsByResource, watchBytesMetric, watchBytesCounted, kubeWrites, peerRecordWrites,
    rssBytes: process.memoryUsage.rss(), heapUsedBytes: process.memoryUsage().heapUsed, cpuMicros: cpu.user + cpu.system, at: now()
  }
}

async function connect (from: string, target: string, timeoutMs: number): Promise<{ session: string, startedAt: number, doneAt: number }> {
  const a = agents.get(from)
  if (a == null) throw new Error(`no agent ${from} in this worker`)
  const startedAt = now()
  const info = await a.connect(peerIdFromString(target).toMultihash().bytes, timeoutMs)
  return { session: info.session.toString(), startedAt, doneAt: now() }
}

/** Closed loop: `concurrency` connects in flight from random local agents to random targets for durationMs. */
async function saturate (durationMs: number, concurrency: number, targets: string[], timeoutMs: number): Promise<{ sessions: string[], failed: number, refused: number, startedAt: number, endedAt: number }> {
  const targetBytes = targets.map((t) => ({ id: t, bytes: peerIdFromString(t).toMultihash().bytes }))
  const sessions: string[] = []
  let failed = 0; let refused = 0
  const startedAt = now()
  const end = startedAt + durationMs
  const loop = async (): Promise<void> => {
    while (now() < end) {
      const a = list[Math.floor(Math.random() * list.length)]!
      let t = targetBytes[Math.floor(Math.random() * targetBytes.length)]!
      if (t.id === a.peerId.toString()) t = targetBytes[(targetBytes.indexOf(t) + 1) % targetBytes.length]!
      try {
        sessions.push((await a.connect(t.bytes, timeoutMs)).session.toString())
      } catch (err) {
        if ((err as Error).name === 'ConnectRefusedError') refused++
        else failed++
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop))
  return { sessions, failed, refused, startedAt, endedAt: now() }
}

async function handle (req: WorkerRequest): Promise<unknown> {
  switch (req.op) {
    case 'init': common = req.common; await loadHomeRelay(); return { pid: process.pid }
    case 'start': return await startAgents(req.agents, req.concurrency)
    case 'stats': return await stats()
    case 'connect': return await connect(req.from, req.target, req.timeoutMs)
    case 'saturate': return await saturate(req.durationMs, req.concurrency, req.targets, req.timeoutMs)
    case 'takeIncoming': { const out = incoming; incoming = []; return out }
    case 'stop': await Promise.allSettled(list.map(async (a) => { await a.stop() })); return { stopped: list.length }
  }
}

process.on('message', (msg: { id: number, req: WorkerRequest }) => {
  handle(msg.req).then(
    (result) => { process.send?.({ id: msg.id, ok: true, result }) },
    (err: Error) => { process.send?.({ id: msg.id, ok: false, error: err.message }) })
})
process.on('disconnect', () => { process.exit(0) })
process.send?.({ id: 0, ok: true, result: 'ready' })
