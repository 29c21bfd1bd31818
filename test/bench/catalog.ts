// npm run bench:catalog — the agent's catalog at scale against a real etcd + kube-apiserver,
// each number next to its floor measured in the same run:
//   raw_list_ms       a minimal client (node:https keep-alive + JSON.parse) LISTs what the agent
//                     lists (Services, EndpointSlices, peer Leases; limit=500, the three
//                     resources concurrently, like the agent; the seeded Nodes it does not watch)
//   initial_sync_ms   agent process spawn -> "catalog synced from the API" (no disk snapshot)
//   raw_watch_p99_ms  write -> event on a bare WATCH of Services by the minimal client
//   update_p99_ms     the same write -> the agent's /catalog/events line naming that Service
//   agent_rss_mb      VmRSS of the agent after the sync and the updates
// Raw lists and agent syncs alternate (median of RUNS each), and every update is observed by
// both the bare watch and the agent, so machine noise lands on floor and agent alike.
// Env: EDGEMESH_BENCH_SERVICES (10000), EDGEMESH_BENCH_ENDPOINTS_PER_SERVICE (5),
// EDGEMESH_BENCH_NAMESPACES (20), EDGEMESH_BENCH_NODES (50), EDGEMESH_BENCH_UPDATES (300),
// EDGEMESH_BENCH_RUNS (3), EDGEMESH_BENCH_AGENT_NODE_OPTIONS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"),
// EDGEMESH_BENCH_HEADLESS=1 (seed headless Services: ~10x faster, since kube-apiserver's ClusterIP
// allocator costs O(allocated) per Service; the agent sees objects of the same shape and size).
// Prints progress on stderr, a table, then one JSON line (last line).
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startControlPlane, type ControlPlane } from '../controlplane/harness.ts'
import { catalogEvents, startCatalogAgent, type CatalogAgent } from '../controlplane/catalog-agent.ts'
import { renderTable } from '../../shared/table.ts'
import { sleep } from '../lab/wait.ts'

const env = (name: string, dflt: number): number => {
  const v = Number(process.env[name] ?? dflt)
  if (!Number.isInteger(v) || v < 0) throw new Error(`${name} must be a non-negative integer`)
  return v
}
const SERVICES = env('EDGEMESH_BENCH_SERVICES', 10_000)
const EPS_PER_SERVICE = env('EDGEMESH_BENCH_ENDPOINTS_PER_SERVICE', 5)
const NAMESPACES = Math.max(1, env('EDGEMESH_BENCH_NAMESPACES', 20))
const NODES = Math.max(1, env('EDGEMESH_BENCH_NODES', 50))
const UPDATES = Math.max(1, env('EDGEMESH_BENCH_UPDATES', 300))
const WARMUP_UPDATES = 20
const RUNS = Math.max(1, env('EDGEMESH_BENCH_RUNS', 3))
const SEED_CONCURRENCY = 32
/** of SEED_CONCURRENCY, how many requests create Services (ClusterIP allocation serializes them) */
const SEED_SERVICE_CONCURRENCY = 8
const AGENT_NODE_OPTIONS = process.env.EDGEMESH_BENCH_AGENT_NODE_OPTIONS
const HEADLESS = process.env.EDGEMESH_BENCH_HEADLESS === '1'
const MESH_NAMESPACE = 'edgemesh'
const NODE_NAME = 'bench-agent'
const TARGET_SYNC_RATIO = 2
const TARGET_UPDATE_RATIO = 2
const TARGET_RSS_MB = 150

const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`) }
const now = (): number => performance.now() + performance.timeOrigin
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }
/** nearest-rank percentile */
const pct = (xs: number[], p: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)]! }
const r1 = (x: number): number => Math.round(x * 10) / 10

// ---- a minimal Kubernetes client: the floor the agent is compared with ----

class MiniClient {
  readonly cp: ControlPlane
  readonly agent: HttpsAgent

  constructor (cp: ControlPlane, maxSockets: number) {
    this.cp = cp
    this.agent = new HttpsAgent({ keepAlive: true, maxSockets, ca: cp.caPem })
  }

  /** Sends a request; resolves with status and body text. */
  async send (method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number, text: string }> {
    const data = body === undefined ? undefined : JSON.stringify(body)
    const headers: Record<string, string> = { authorization: `Bearer ${this.cp.adminToken}`, accept: 'application/json' }
    if (data != null) { headers['content-type'] = contentType; headers['content-length'] = String(Buffer.byteLength(data)) }
    return await new Promise((resolve, reject) => {
      const req = httpsRequest(`${this.cp.url}${path}`, { method, headers, agent: this.agent }, (res) => {
        res.setEncoding('utf8')
        let text = ''
        res.on('data', (c: string) => { text += c })
        res.on('end', () => { resolve({ status: res.statusCode ?? 0, text }) })
        res.on('error', reject)
      })
      req.on('error', reject)
      req.end(data)
    })
  }

  async json (method: string, path: string, body?: unknown, contentType?: string): Promise<any> {
    const r = await this.send(method, path, body, contentType)
    if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 300)}`)
    return JSON.parse(r.text)
  }

  /** Creates an object; an AlreadyExists answer counts as done. */
  async create (path: string, body: unknown): Promise<void> {
    const r = await this.send('POST', path, body)
    if (r.status === 409) return
    if (r.status < 200 || r.status > 299) throw new Error(`POST ${path}: ${r.status} ${r.text.slice(0, 300)}`)
  }

  /** Paginated LIST (limit=500): every item, parsed, and the list's resourceVersion. */
  async list (path: string, labelSelector?: string): Promise<{ items: any[], resourceVersion: string }> {
    const items: any[] = []
    let cont = ''
    for (;;) {
      const q = new URLSearchParams({ limit: '500' })
      if (labelSelector != null) q.set('labelSelector', labelSelector)
      if (cont !== '') q.set('continue', cont)
      const page = await this.json('GET', `${path}?${q}`)
      for (const it of page.items ?? []) items.push(it)
      cont = page.metadata?.continue ?? ''
      if (cont === '') return { items, resourceVersion: String(page.metadata?.resourceVersion ?? '') }
    }
  }

  /** A bare WATCH; onEvent gets each parsed event with the time its chunk arrived. */
  watch (path: string, resourceVersion: string, onEvent: (ev: any, receivedAt: number) => void): { ready: Promise<void>, close: () => void } {
    const q = new URLSearchParams({ watch: '1', resourceVersion, allowWatchBookmarks: 'true', timeoutSeconds: '3600' })
    let req: ReturnType<typeof httpsRequest> | undefined
    const ready = new Promise<void>((resolve, reject) => {
      req = httpsRequest(`${this.cp.url}${path}?${q}`, { headers: { authorization: `Bearer ${this.cp.adminToken}`, accept: 'application/json' }, agent: this.agent }, (res) => {
        if (res.statusCode !== 200) { reject(new Error(`WATCH ${path}: ${res.statusCode}`)); res.resume(); return }
        resolve()
        res.setEncoding('utf8')
        let partial = ''
        res.on('data', (chunk: string) => {
          const at = now()
          const lines = (partial + chunk).split('\n')
          partial = lines.pop() ?? ''
          for (const line of lines) if (line !== '') onEvent(JSON.parse(line), at)
        })
      })
      req.on('error', (err) => { reject(err) })
      req.end()
    })
    return { ready, close: () => { req?.destroy() } }
  }

  close (): void { this.agent.destroy() }
}

// ---- seeding ----

const nsOf = (i: number): string => `bench-${i % NAMESPACES}`
const svcName = (i: number): string => `svc-${i}`
const nodeName = (n: number): string => `node-${n}`
/** 10.100.0.0 upwards: one unique address per endpoint */
const podIp = (j: number): string => `10.${100 + (j >> 16)}.${(j >> 8) & 255}.${j & 255}`

function serviceBody (i: number): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: svcName(i), namespace: nsOf(i), labels: { app: svcName(i), 'app.kubernetes.io/part-of': 'bench' } },
    spec: {
      ...(HEADLESS ? { clusterIP: 'None' } : {}),
      selector: { app: svcName(i) },
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }, { name: 'grpc', port: 9090, targetPort: 9090, protocol: 'TCP' }]
    }
  }
}

function sliceBody (i: number): object {
  const endpoints = []
  for (let k = 0; k < EPS_PER_SERVICE; k++) {
    const j = i * EPS_PER_SERVICE + k
    endpoints.push({
      addresses: [podIp(j)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: nodeName(j % NODES),
      zone: `zone-${j % 3}`,
      targetRef: { kind: 'Pod', namespace: nsOf(i), name: `${svcName(i)}-pod-${k}` }
    })
  }
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${svcName(i)}-abcde`,
      namespace: nsOf(i),
      labels: { 'kubernetes.io/service-name': svcName(i), 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' }
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }, { name: 'grpc', port: 9090, protocol: 'TCP' }],
    endpoints
  }
}

function nodeBody (n: number): object {
  const ip = `192.168.${n >> 8}.${(n & 255) + 1}`
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: nodeName(n), labels: { 'kubernetes.io/hostname': nodeName(n) } },
    status: {
      addresses: [{ type: 'InternalIP', address: ip }, { type: 'Hostname', address: nodeName(n) }],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastHeartbeatTime: new Date().toISOString(), lastTransitionTime: new Date().toISOString() }]
    }
  }
}

/** Runs tasks 0..n-1 with `concurrency` in flight. */
async function pool (n: number, concurrency: number, task: (i: number) => Promise<void>, progress?: (done: number) => void): Promise<void> {
  let next = 0
  let done = 0
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++
      await task(i)
      done++
      progress?.(done)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker))
}

async function seed (c: MiniClient): Promise<void> {
  const t0 = performance.now()
  for (const ns of [MESH_NAMESPACE, ...Array.from({ length: NAMESPACES }, (_, k) => `bench-${k}`)]) {
    await c.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } })
  }
  await pool(NODES, SEED_CONCURRENCY, async (n) => { await c.create('/api/v1/nodes', nodeBody(n)) })
  // Services and EndpointSlices go in two overlapping pools. ClusterIP allocation is the
  // bottleneck: kube-apiserver's IPAddress allocator lists every allocated address (twice)
  // after each allocation, so a create costs O(allocated) and more in flight only adds lock
  // contention; slices have no such cost.
  let services = 0
  let slices = 0
  let lastReport = 0
  const progress = (): void => {
    const t = performance.now()
    if ((services === SERVICES && slices === SERVICES) || t - lastReport > 10_000) {
      lastReport = t
      log(`seeded ${services}/${SERVICES} Services, ${slices}/${SERVICES} EndpointSlices (${((t - t0) / 1000).toFixed(0)} s)`)
    }
  }
  const serviceConcurrency = HEADLESS ? SEED_CONCURRENCY / 2 : SEED_SERVICE_CONCURRENCY
  await Promise.all([
    pool(SERVICES, serviceConcurrency, async (i) => { await c.create(`/api/v1/namespaces/${nsOf(i)}/services`, serviceBody(i)) }, (d) => { services = d; progress() }),
    pool(SERVICES, SEED_CONCURRENCY - serviceConcurrency, async (i) => { await c.create(`/apis/discovery.k8s.io/v1/namespaces/${nsOf(i)}/endpointslices`, sliceBody(i)) }, (d) => { slices = d; progress() })
  ])
  log(`seeding done in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
}

// ---- measurements ----

const LISTED = [
  { path: '/api/v1/services' },
  { path: '/apis/discovery.k8s.io/v1/endpointslices' },
  { path: `/apis/coordination.k8s.io/v1/namespaces/${MESH_NAMESPACE}/leases`, labelSelector: 'edgemesh.io/peer-record=true' }
]

interface RawList { ms: number, services: number, slices: number, endpoints: number }

/** The floor: a fresh keep-alive client LISTs the agent's three resources concurrently (Nodes are seeded, but the agent no longer watches them). */
async function rawList (cp: ControlPlane): Promise<RawList> {
  const c = new MiniClient(cp, 8) // the agent's KubeClient also uses 8 sockets
  try {
    const t0 = performance.now()
    const [services, slices] = await Promise.all(LISTED.map(async (r) => await c.list(r.path, r.labelSelector)))
    const ms = performance.now() - t0
    let endpoints = 0
    for (const s of slices!.items) if (s.metadata?.labels?.['kubernetes.io/service-name'] != null) endpoints += (s.endpoints ?? []).length
    return { ms, services: services!.items.length, slices: slices!.items.length, endpoints }
  } finally {
    c.close()
  }
}

interface AgentRun { ms: number, insideMs: number, agent: CatalogAgent }

async function startAgent (cp: ControlPlane, dir: string): Promise<AgentRun> {
  // always a sync from the API: no snapshot left from an earlier run
  await rm(join(dir, `${NODE_NAME}-catalog.json`), { force: true })
  const t0 = performance.now()
  const agent = await startCatalogAgent({
    cp,
    dir,
    nodeName: NODE_NAME,
    waitFor: /catalog synced from the API/,
    // like the default, but a slow sync must not fall back to the (absent) disk snapshot first
    extraConfig: { kubernetes: { kubeconfig: join(dir, `${NODE_NAME}.kubeconfig`), namespace: MESH_NAMESPACE, snapshotFile: join(dir, `${NODE_NAME}-catalog.json`), syncTimeoutMs: 120_000 } },
    ...(AGENT_NODE_OPTIONS != null ? { env: { NODE_OPTIONS: AGENT_NODE_OPTIONS } } : {})
  })
  const ms = performance.now() - t0
  const line = await agent.proc.waitForLine(/catalog synced from the API/)
  const insideMs = Number(JSON.parse(line).ms)
  await agent.proc.waitForLine(/edgemesh-agent ready/, 30_000)
  return { ms, insideMs, agent }
}

async function memOf (pid: number): Promise<{ rssMb: number, hwmMb: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN)
  return { rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024 }
}

interface UpdateLatencies { raw: number[], agent: number[] }

/**
 * UPDATES sequential merge-patches of an annotation on random Services; each one is timed from
 * just before the request is sent to (a) its MODIFIED event on the bare watch and (b) the agent's
 * /catalog/events line that names the Service. The next write starts once both arrived.
 */
async function measureUpdates (cp: ControlPlane, agent: CatalogAgent): Promise<UpdateLatencies> {
  const c = new MiniClient(cp, 4)
  const pendingRaw = new Map<string, (at: number) => void>()
  const pendingAgent = new Map<string, (at: number) => void>()
  const head = await c.json('GET', '/api/v1/services?limit=1')
  const watch = c.watch('/api/v1/services', String(head.metadata.resourceVersion), (ev, at) => {
    if (ev.type !== 'MODIFIED') return
    const key = `${String(ev.object?.metadata?.namespace)}/${String(ev.object?.metadata?.name)}`
    const seq = ev.object?.metadata?.annotations?.['bench.edgemesh.io/seq']
    const done = pendingRaw.get(`${key}#${String(seq)}`)
    if (done != null) done(at)
  })
  const events = catalogEvents(agent.socket, (ev, at) => {
    for (const ch of ev.changes) {
      if (ch.kind !== 'service') continue
      const done = pendingAgent.get(ch.key)
      if (done != null) done(at)
    }
  })
  const raw: number[] = []
  const viaAgent: number[] = []
  try {
    await Promise.all([watch.ready, events.ready])
    await sleep(200)
    for (let n = 0; n < WARMUP_UPDATES + UPDATES; n++) {
      const i = Math.floor(Math.random() * SERVICES)
      const key = `${nsOf(i)}/${svcName(i)}`
      const seq = String(n)
      const arrival = (m: Map<string, (at: number) => void>, k: string, what: string): Promise<number> => new Promise((resolve, reject) => {
        const timer = setTimeout(() => { m.delete(k); reject(new Error(`update ${n} of ${key}: no ${what} after 15 s`)) }, 15_000)
        m.set(k, (at) => { clearTimeout(timer); m.delete(k); resolve(at) })
      })
      const rawAt = arrival(pendingRaw, `${key}#${seq}`, 'event on the bare watch')
      const agentAt = arrival(pendingAgent, key, 'agent catalog event')
      const t0 = now()
      const patched = c.json('PATCH', `/api/v1/namespaces/${nsOf(i)}/services/${svcName(i)}`, { metadata: { annotations: { 'bench.edgemesh.io/seq': seq } } }, 'application/merge-patch+json')
      const [tr, ta] = await Promise.all([rawAt, agentAt, patched])
      if (n >= WARMUP_UPDATES) { raw.push(tr - t0); viaAgent.push(ta - t0) }
      if ((n + 1) % 100 === 0) log(`updates ${n + 1}/${WARMUP_UPDATES + UPDATES}`)
      await sleep(5 + Math.random() * 20) // jitter: no phase lock with the agent's timers
    }
  } finally {
    watch.close()
    events.close()
    c.close()
  }
  return { raw, agent: viaAgent }
}

// ---- main ----

async function main (): Promise<void> {
  const started = performance.now()
  let cp: ControlPlane | undefined
  let agent: CatalogAgent | undefined
  /** an agent being started: teardown waits for it, so a signal mid-start leaves no orphan */
  let starting: Promise<AgentRun> | undefined
  let admin: MiniClient | undefined
  let dir: string | undefined
  let cleaning: Promise<void> | undefined
  const cleanup = async (): Promise<void> => {
    cleaning ??= (async () => {
      admin?.close()
      await starting?.then(async (r) => { await r.agent.stop() }, () => {})
      await agent?.stop().catch(() => {})
      await cp?.stop().catch(() => {})
      if (dir != null) await rm(dir, { recursive: true, force: true }).catch(() => {})
    })()
    await cleaning
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: tearing down`)
    void cleanup().finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    log('starting etcd + kube-apiserver')
    cp = await startControlPlane()
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-catalog-'))
    admin = new MiniClient(cp, SEED_CONCURRENCY)
    log(`seeding ${SERVICES}${HEADLESS ? ' headless' : ''} Services, ${SERVICES} EndpointSlices x ${EPS_PER_SERVICE} endpoints in ${NAMESPACES} namespaces, ${NODES} Nodes (${SEED_CONCURRENCY} requests in flight)`)
    await seed(admin)
    admin.close()
    admin = undefined

    // warm the apiserver (watch cache, serializers) once, so the first measured run is not special
    const warm = await rawList(cp)
    log(`warm-up LIST: ${warm.ms.toFixed(0)} ms (${warm.services} Services, ${warm.slices} EndpointSlices, ${warm.endpoints} endpoints)`)

    // raw LIST and agent sync alternate; the last agent stays up for the update phase
    const lists: RawList[] = []
    const syncs: AgentRun[] = []
    for (let run = 1; run <= RUNS; run++) {
      const l = await rawList(cp)
      lists.push(l)
      log(`run ${run}/${RUNS}: raw LIST ${l.ms.toFixed(0)} ms`)
      await sleep(500)
      if (cleaning != null) throw new Error('interrupted')
      starting = startAgent(cp, dir)
      const s = await starting
      starting = undefined
      agent = s.agent
      syncs.push(s)
      log(`run ${run}/${RUNS}: agent spawn -> synced ${s.ms.toFixed(0)} ms (catalog start -> synced ${s.insideMs} ms inside the agent)`)
      if (run < RUNS) { await agent.stop(); agent = undefined; await sleep(500) }
    }
    const last = syncs[syncs.length - 1]!.agent
    const afterSync = await memOf(last.proc.pid)

    const summary = await last.catalog()
    const expected = { services: lists[0]!.services, endpoints: SERVICES * EPS_PER_SERVICE }
    const got = { services: summary.counts.services, endpoints: summary.counts.endpoints }
    if (summary.synced !== true || summary.source !== 'api' || got.services !== expected.services || got.endpoints !== expected.endpoints || summary.counts.nodes !== undefined || lists[0]!.services !== SERVICES + 1) {
      throw new Error(`agent catalog does not match the API: got ${JSON.stringify({ synced: summary.synced, source: summary.source, ...got })}, expected ${JSON.stringify(expected)} (API lists ${lists[0]!.services} Services: ${SERVICES} seeded + default/kubernetes)`)
    }
    log(`agent catalog matches the API: ${got.services} Services (incl. default/kubernetes), ${got.endpoints} endpoints (no Nodes: not watched); RSS ${afterSync.rssMb.toFixed(1)} MB`)

    await sleep(3_000) // let the post-sync snapshot write finish
    log(`updates: ${WARMUP_UPDATES} warm-up + ${UPDATES} measured, each seen by the bare watch and by the agent`)
    const lat = await measureUpdates(cp, last)
    await sleep(1_000)
    const afterUpdates = await memOf(last.proc.pid)
    // where the RSS is: V8's live heap, its committed heap, and off-heap (buffers)
    const prom = await last.call<string>('GET', '/metrics')
    const gauge = (name: string): number => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(prom)?.[1] ?? NaN) / 1048576
    const heap = { used: gauge('nodejs_heap_size_used_bytes'), total: gauge('nodejs_heap_size_total_bytes'), external: gauge('nodejs_external_memory_bytes') }

    const rawListMs = median(lists.map((l) => l.ms))
    const syncMs = median(syncs.map((s) => s.ms))
    const insideMs = median(syncs.map((s) => s.insideMs))
    const rawP99 = pct(lat.raw, 99)
    const updP99 = pct(lat.agent, 99)
    const syncRatio = syncMs / rawListMs
    const updateRatio = updP99 / rawP99
    const met = (ok: boolean): string => ok ? 'met' : 'NOT MET'
    const rows = [
      ['initial sync (spawn -> complete catalog)', `${syncMs.toFixed(0)} ms`, `raw LIST ${rawListMs.toFixed(0)} ms`, `${syncRatio.toFixed(2)}x`, `<= ${TARGET_SYNC_RATIO}x`, met(syncRatio <= TARGET_SYNC_RATIO)],
      ['update p99 (write -> catalog event)', `${updP99.toFixed(1)} ms`, `bare watch p99 ${rawP99.toFixed(1)} ms`, `${updateRatio.toFixed(2)}x`, `<= ${TARGET_UPDATE_RATIO}x`, met(updateRatio <= TARGET_UPDATE_RATIO)],
      ['agent RSS (after sync + updates)', `${afterUpdates.rssMb.toFixed(1)} MB`, '-', '-', `<= ${TARGET_RSS_MB} MB`, met(afterUpdates.rssMb <= TARGET_RSS_MB)]
    ]
    const detail = [
      ['raw LIST, 4 resources concurrently (ms)', lists.map((l) => l.ms.toFixed(0)).join(' '), rawListMs.toFixed(0)],
      ['agent spawn -> synced (ms)', syncs.map((s) => s.ms.toFixed(0)).join(' '), syncMs.toFixed(0)],
      ['  of which catalog start -> synced, inside the agent (ms)', syncs.map((s) => String(s.insideMs)).join(' '), String(insideMs)],
      ['bare watch p50 / p90 / p99 / max (ms)', `${pct(lat.raw, 50).toFixed(1)} / ${pct(lat.raw, 90).toFixed(1)} / ${rawP99.toFixed(1)} / ${Math.max(...lat.raw).toFixed(1)}`, ''],
      ['agent event p50 / p90 / p99 / max (ms)', `${pct(lat.agent, 50).toFixed(1)} / ${pct(lat.agent, 90).toFixed(1)} / ${updP99.toFixed(1)} / ${Math.max(...lat.agent).toFixed(1)}`, ''],
      ['agent minus bare watch, per write p50 / p99 (ms)', (() => { const d = lat.agent.map((a, k) => a - lat.raw[k]!); return `${pct(d, 50).toFixed(1)} / ${pct(d, 99).toFixed(1)}` })(), ''],
      ['agent RSS after sync / after updates / peak (MB)', `${afterSync.rssMb.toFixed(1)} / ${afterUpdates.rssMb.toFixed(1)} / ${afterUpdates.hwmMb.toFixed(1)}`, ''],
      ['agent V8 heap used / committed, external (MB)', `${heap.used.toFixed(1)} / ${heap.total.toFixed(1)}, ${heap.external.toFixed(1)}`, '']
    ]
    process.stdout.write(`\ncatalog benchmark: ${SERVICES}${HEADLESS ? ' headless' : ''} Services, ${SERVICES} EndpointSlices, ${SERVICES * EPS_PER_SERVICE} endpoints, ${NODES} Nodes in a real kube-apiserver; median of ${RUNS} alternating LIST/sync runs; ${UPDATES} updates (after ${WARMUP_UPDATES} warm-up) seen by both a bare watch and the agent; ${(performance.now() - started) / 1000 | 0} s in all\n\n`)
    process.stdout.write(renderTable(['measure', 'agent', 'floor', 'ratio', 'target', ''], rows) + '\n\n')
    process.stdout.write(renderTable(['detail', 'samples', 'median'], detail) + '\n\n')
    const result = {
      services: SERVICES,
      endpoints: SERVICES * EPS_PER_SERVICE,
      raw_list_ms: Math.round(rawListMs),
      initial_sync_ms: Math.round(syncMs),
      initial_sync_in_process_ms: Math.round(insideMs),
      raw_watch_p99_ms: r1(rawP99),
      update_p99_ms: r1(updP99),
      agent_rss_mb: r1(afterUpdates.rssMb),
      sync_ratio: Math.round(syncRatio * 100) / 100,
      update_ratio: Math.round(updateRatio * 100) / 100
    }
    process.stdout.write(JSON.stringify(result) + '\n')
  } finally {
    await cleanup()
  }
}

await main()
