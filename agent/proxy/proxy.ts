// The ClusterIP proxy (kube-proxy's shape: change trackers feed one sync loop). Each sync plans
// every service port from the catalog snapshot, makes sure the agent listens for the ports that
// need it, and writes the nat rules in one atomic iptables-restore: kernel DNAT for endpoints the
// node reaches directly, DNAT to the agent's listener for endpoints behind the tunnel, and in the
// same payload the filter rules that refuse service ports with no endpoint at all. Syncs are
// incremental (only changed chains), with a full one at start and every hour; every sync
// re-asserts our hooks at the top of nat PREROUTING, OUTPUT, POSTROUTING and filter INPUT,
// FORWARD, OUTPUT (an incremental one a little later, beside the sync loop), and the
// periodic one also checks that our top chains hold what we wrote. After each sync the catalog
// snapshot it applied is reported (onProgrammed): the node-local DNS answers a ClusterIP
// Service's name only from then on. Pacing: sync-scheduler.ts.
import type { Logger } from '../../shared/logging.ts'
import type { Metrics } from '../../shared/metrics.ts'
import { ensureListenAddress } from '../../shared/net-device.ts'
import type { Catalog } from '../catalog/catalog.ts'
import type { CatalogSnapshot } from '../catalog/store.ts'
import type { KubeClient } from '../catalog/kube-client.ts'
import type { TunnelApi } from '../tunnel/tunnel.ts'
import { DestinationRuleWatcher } from './destination-rules.ts'
import { closeCommandWorker } from './command-worker.ts'
import { deleteUnNatedFlowsTo } from './conntrack.ts'
import { detectBackend, Iptables, type Backend } from './iptables.ts'
import { ServicePortListener } from './listener.ts'
import { ProxyMetrics } from './metrics.ts'
import { planAll, samePlan, type ServicePortPlan } from './plan.ts'
import { RemoteServer } from './remote.ts'
import { restoreSection } from './restore-text.ts'
import { SyncScheduler } from './sync-scheduler.ts'
import { buildSyncRules, cleanupRules, filterHookFixRules, hookFixRules, parseChains, rejectChain, servicesChain, type ProxyServicePort, type SyncRuleState } from './rules.ts'
import { PROXY_PROTOCOL } from './wire.ts'

const FULL_RESYNC_MS = 3_600_000
/** How long a listener no rule points at still accepts connections the kernel had already sent it. */
const RETIRE_GRACE_MS = 5_000
/** A burst of new Services (a namespace applied at once) clears at most this many per sync. */
const MAX_FLOW_CLEARS_PER_SYNC = 64
/**
 * Syncs that may run back to back after a quiet period: a new Service and its EndpointSlice
 * (two catalog commits a few ms apart) are both programmed at once, with room for one more.
 */
const SYNC_BURST = 3
/**
 * How long after an incremental sync its hook check runs (restarted by each sync): its six
 * iptables processes are forked by the agent's one thread, and on a busy node that stalled the
 * first connections to the Service just programmed by 200-300 ms (bench:proxy programming).
 */
const HOOK_CHECK_DELAY_MS = 2_000
const countRules = (listing: string): number => listing.split('\n').filter((l) => l.startsWith('-A ')).length

export interface ProxyConfig {
  listen: string
  device: string
  iptables: 'auto' | Backend
  chainPrefix: string
  directCidrs: string[]
  minSyncIntervalMs: number
  resyncSeconds: number
  connectTimeoutMs: number
  udpIdleSeconds: number
  udpStreamIdleSeconds: number
  destinationRules: boolean
  cleanupOnExit: boolean
}

export interface ProxyOptions {
  config: ProxyConfig
  /**
   * Called after every successful sync with the catalog snapshot whose Services the kernel now
   * holds rules for (the node-local DNS answers ClusterIP names from it: programmed-view.ts).
   */
  onProgrammed?: (snapshot: CatalogSnapshot) => void
  nodeName: string
  clusterDomain: string
  catalog: Catalog
  kube?: KubeClient
  tunnel: TunnelApi
  log: Logger
  metrics: Metrics
}

export interface SyncReport { kind: 'full' | 'incremental', ms: number, restoreMs: number, servicePorts: number, listeners: number, rejected: number, written: number, bytes: number }

export interface ProxyStatus {
  backend: Backend
  servicePorts: number
  listeners: Array<{ service: string, id: string, address: string, endpoints: number, connections: number }>
  lastSync: SyncReport | undefined
  syncs: number
}

export class ServiceProxy {
  private readonly opts: ProxyOptions
  private readonly ipt: Iptables
  private readonly metrics: ProxyMetrics
  private readonly remote: RemoteServer
  private readonly listeners = new Map<string, ServicePortListener>()
  /** listeners no rule points at any more, finishing their connections */
  private readonly retiring = new Set<ServicePortListener>()
  /** service port ids the rules served after the last sync (undefined before the first) */
  private programmed: Set<string> | undefined
  private conntrackMissing = false
  private readonly rulesWatcher: DestinationRuleWatcher | undefined
  private state: SyncRuleState | undefined
  /** our nat chains after the last sync (at start: what an earlier run left) */
  private existingChains: string[] = []
  /** our filter chains, likewise */
  private existingFilterChains: string[] = []
  private plans: ServicePortPlan[] = []
  private unsubscribe: (() => void) | undefined
  private resyncTimer: NodeJS.Timeout | undefined
  private readonly scheduler: SyncScheduler
  /** the hook check running beside the sync loop, if any */
  private hookCheck: Promise<void> | undefined
  private hookCheckTimer: NodeJS.Timeout | undefined
  private fullPending = true
  /** the next sync also checks that our top chain still holds what we wrote */
  private verifyNext = false
  private lastFullAt = 0
  lastSync: SyncReport | undefined
  syncCount = 0

  private constructor (opts: ProxyOptions, ipt: Iptables) {
    this.opts = opts
    this.ipt = ipt
    this.metrics = new ProxyMetrics(opts.metrics, () => { let n = 0; for (const l of this.listeners.values()) n += l.connections; return n })
    const c = opts.config
    this.remote = new RemoteServer({
      nodeName: opts.nodeName, snapshot: () => opts.catalog.snapshot(), log: opts.log, metrics: this.metrics,
      connectTimeoutMs: c.connectTimeoutMs, udpIdleMs: c.udpStreamIdleSeconds * 1000
    })
    this.scheduler = new SyncScheduler({
      minIntervalMs: c.minSyncIntervalMs, burst: SYNC_BURST, run: async () => { await this.syncOnce() },
      retryDelayMs: (failures) => Math.min(30_000, 500 * 2 ** Math.min(failures, 6))
    })
    if (c.destinationRules && opts.kube != null) this.rulesWatcher = new DestinationRuleWatcher(() => { this.requestSync() })
  }

  static async start (opts: ProxyOptions): Promise<ServiceProxy> {
    const c = opts.config
    const backend = c.iptables === 'auto' ? await detectBackend() : c.iptables
    const p = new ServiceProxy(opts, new Iptables(backend))
    if (c.device !== '') await ensureListenAddress(c.device, c.listen)
    // chains left by an earlier run (a crash, an older layout) are replaced or deleted by the first full sync
    const [nat, filter] = await Promise.all([p.ipt.save('nat'), p.ipt.save('filter')])
    p.existingChains = parseChains(nat, c.chainPrefix)
    p.existingFilterChains = parseChains(filter, c.chainPrefix, 'filter')
    await opts.tunnel.handle(PROXY_PROTOCOL, (stream, peer) => { p.remote.serve(stream, peer) }, { maxStreams: 16_384 })
    // peer records renew every 10 s per node: only Service and endpoint changes move rules
    p.unsubscribe = opts.catalog.subscribe((_snap, changes) => {
      if (changes.some((ch) => ch.kind === 'service' || ch.kind === 'endpoints')) p.requestSync()
    })
    if (p.rulesWatcher != null && opts.kube != null) p.rulesWatcher.start(opts.kube, opts.log.child({ component: 'destination-rules' }), opts.metrics)
    await p.runSync()
    // a periodic sync re-checks the hooks and our top chain (cheap: an unchanged plan writes
    // nothing); the rules are rewritten in full when something is off, and once an hour anyway
    p.resyncTimer = setInterval(() => {
      if (performance.now() - p.lastFullAt > FULL_RESYNC_MS) p.fullPending = true
      p.verifyNext = true
      p.requestSync()
    }, c.resyncSeconds * 1000)
    p.resyncTimer.unref()
    opts.log.info({ backend, servicePorts: p.plans.length, listeners: p.listeners.size, ms: p.lastSync?.ms }, 'service proxy ready')
    return p
  }

  status (): ProxyStatus {
    return {
      backend: this.ipt.backend,
      servicePorts: this.plans.length,
      listeners: [...this.listeners.values()].map((l) => ({ service: l.plan.key, id: l.plan.id, address: l.address, endpoints: l.plan.agentOnly ? l.plan.direct.length + l.plan.remote.size : l.plan.remote.size, connections: l.connections })),
      lastSync: this.lastSync,
      syncs: this.syncCount
    }
  }

  /**
   * Coalesces changes: at most one sync runs; after a quiet period the first change syncs at
   * once (and a burst of SYNC_BURST back to back), sustained churn once per minSyncIntervalMs.
   */
  requestSync (): void {
    this.scheduler.request()
  }

  /** Runs one sync now (waiting for a running one first). Errors are logged and retried. */
  async runSync (): Promise<void> {
    await this.scheduler.runNow()
  }

  /** One sync; a failure is logged, marks the kernel's state unknown and rejects (the scheduler retries). */
  private async syncOnce (): Promise<void> {
    const full = this.fullPending || this.state == null
    const kind = full ? 'full' : 'incremental'
    try {
      const report = await this.sync(full)
      this.fullPending = false
      this.lastSync = report
      this.syncCount++
      this.metrics.syncs.inc({ kind: report.bytes === 0 ? 'none' : kind, result: 'ok' })
      this.metrics.syncMs.observe({ kind }, report.ms)
      if (full || report.ms > 1_000) this.opts.log.info(report, 'proxy rules synced')
      else this.opts.log.debug(report, 'proxy rules synced')
    } catch (err) {
      this.fullPending = true // what the kernel holds is unknown now
      this.metrics.syncs.inc({ kind, result: 'failed' })
      this.opts.log.warn({ err: (err as Error).message, failures: this.scheduler.failures + 1 }, 'proxy sync failed; retrying')
      throw err
    }
  }

  /** Plans from the catalog's current snapshot and applies it (and reports that snapshot as programmed). */
  private async sync (full: boolean): Promise<SyncReport> {
    const t0 = performance.now()
    const c = this.opts.config
    const prefix = c.chainPrefix
    const snapshot = this.opts.catalog.snapshot()
    const { ports: plans } = planAll(snapshot, {
      nodeName: this.opts.nodeName, directCidrs: c.directCidrs, clusterDomain: this.opts.clusterDomain,
      destinationRules: this.rulesWatcher?.list() ?? []
    })
    // listeners first: a rule must never point at a port nobody listens on
    const wanted = new Map<string, ServicePortPlan>()
    for (const p of plans) if (p.agentOnly || p.remote.size > 0) wanted.set(p.id, p)
    const opening: Array<Promise<void>> = []
    for (const [id, p] of wanted) {
      const l = this.listeners.get(id)
      if (l != null) { if (!samePlan(l.plan, p)) l.update(p); continue }
      opening.push(ServicePortListener.open(p, c.listen, {
        tunnel: this.opts.tunnel, log: this.opts.log, metrics: this.metrics, connectTimeoutMs: c.connectTimeoutMs,
        udpIdleMs: c.udpIdleSeconds * 1000, udpStreamIdleMs: c.udpStreamIdleSeconds * 1000
      }).then((nl) => { this.listeners.set(id, nl) }, (err: Error) => { this.opts.log.warn({ service: id, err: err.message }, 'proxy: cannot open a listener') }))
    }
    await Promise.all(opening)

    const ports: ProxyServicePort[] = []
    const programmed = new Set<string>()
    let kernel = 0; let mixed = 0; let agent = 0; let none = 0
    for (const p of plans) {
      const l = this.listeners.get(p.id)
      const direct = p.agentOnly ? [] : p.direct
      const agentSlots = l == null ? 0 : p.agentOnly ? p.direct.length + p.remote.size : p.remote.size
      if (direct.length + agentSlots === 0) none++
      else {
        programmed.add(p.id)
        if (agentSlots === 0) kernel++
        else if (direct.length === 0) agent++
        else mixed++
      }
      ports.push({
        key: p.key, clusterIP: p.clusterIP, port: p.port, protocol: p.protocol, direct, agentSlots,
        ...(l != null ? { agentTarget: l.address } : {}),
        balance: p.policy.kind === 'random' ? 'random' : 'round-robin',
        affinitySeconds: p.affinitySeconds
      })
    }
    const verify = this.verifyNext && !full
    this.verifyNext = false
    const list = async (chain: string, table: 'nat' | 'filter'): Promise<string> => await this.ipt.listChain(chain, table)
    // a missing top chain lists as an error: counted as empty, so the check rewrites it
    const listOurs = async (chain: string, table: 'nat' | 'filter'): Promise<string> => verify ? await list(chain, table).catch(() => '') : ''
    // Full and verifying syncs repair the hooks in the same payload (after a background check,
    // so two repairs never work from the same listing). An incremental one writes its rules and
    // leaves the hooks to a check beside the sync loop: the six listings took 100-250 ms on a busy
    // node, and neither a new Service's rules (and so its name) nor the next sync (its
    // EndpointSlice's) may wait for them.
    const hooksAfter = !full && !verify
    if (!hooksAfter) { clearTimeout(this.hookCheckTimer); await this.hookCheck }
    const [fixes, top, reject] = await Promise.all([
      hooksAfter ? { nat: [], filter: [] } : this.hookFixes(),
      listOurs(servicesChain(prefix), 'nat'), listOurs(rejectChain(prefix), 'filter')
    ])
    if (verify) {
      const found = { services: countRules(top), reject: countRules(reject) }
      const expected = { services: this.state!.nat.buckets.size, reject: this.state!.reject.rules }
      if (found.services !== expected.services || found.reject !== expected.reject) {
        // someone flushed or edited our chains: rewrite everything
        this.opts.log.warn({ found, expected }, 'proxy rules were changed outside the agent; rewriting them')
        return await this.sync(true)
      }
    }
    const rules = buildSyncRules(ports, {
      chainPrefix: prefix,
      natExtraRules: fixes.nat,
      filterExtraRules: fixes.filter,
      ...(full ? { existing: { nat: this.existingChains, filter: this.existingFilterChains } } : { previous: this.state! })
    })
    const t1 = performance.now()
    if (rules.text !== '') await this.ipt.restore(rules.text)
    const restoreMs = performance.now() - t1
    this.state = rules.state
    this.existingChains = rules.nat.chains
    this.existingFilterChains = rules.reject.chains
    if (full) this.lastFullAt = performance.now()
    this.plans = plans
    // the first sync after start clears nothing: it would fork one process per service port
    const before = this.programmed
    const newlyProgrammed = before == null ? [] : plans.filter((p) => programmed.has(p.id) && !before.has(p.id))
    this.programmed = programmed
    // the kernel holds this snapshot's rules now: its names may resolve
    try { this.opts.onProgrammed?.(snapshot) } catch (err) { this.opts.log.error({ err: (err as Error).message }, 'proxy: programmed-snapshot listener failed') }
    if (newlyProgrammed.length > 0) void this.clearStaleFlows(newlyProgrammed)
    // (a while later, once per burst; the periodic verifying sync repairs the hooks in any case)
    if (hooksAfter) {
      clearTimeout(this.hookCheckTimer)
      this.hookCheckTimer = setTimeout(() => { this.hookCheckTimer = undefined; this.checkHooksInBackground() }, HOOK_CHECK_DELAY_MS)
      this.hookCheckTimer.unref()
    }

    // listeners no rule points at any more
    for (const [id, l] of this.listeners) {
      if (wanted.has(id)) continue
      this.listeners.delete(id)
      this.retiring.add(l)
      void l.retire(RETIRE_GRACE_MS).finally(() => { this.retiring.delete(l) })
    }
    this.metrics.servicePorts.set({ mode: 'kernel' }, kernel)
    this.metrics.servicePorts.set({ mode: 'mixed' }, mixed)
    this.metrics.servicePorts.set({ mode: 'agent' }, agent)
    this.metrics.servicePorts.set({ mode: 'none' }, none)
    this.metrics.listeners.set(this.listeners.size)
    return { kind: full ? 'full' : 'incremental', ms: +(performance.now() - t0).toFixed(1), restoreMs: +restoreMs.toFixed(1), servicePorts: plans.length, listeners: this.listeners.size, rejected: rules.reject.rejected.length, written: rules.nat.written.length + rules.reject.written.length, bytes: rules.text.length }
  }

  /** What our hooks at the top of the built-in chains need: the repair lines per table. */
  private async hookFixes (): Promise<{ nat: string[], filter: string[] }> {
    const prefix = this.opts.config.chainPrefix
    const list = async (chain: string, table: 'nat' | 'filter'): Promise<string> => await this.ipt.listChain(chain, table)
    const [pre, out, post, fin, ffwd, fout] = await Promise.all([
      list('PREROUTING', 'nat'), list('OUTPUT', 'nat'), list('POSTROUTING', 'nat'),
      list('INPUT', 'filter'), list('FORWARD', 'filter'), list('OUTPUT', 'filter')
    ])
    return {
      nat: [...hookFixRules('PREROUTING', pre, prefix), ...hookFixRules('OUTPUT', out, prefix), ...hookFixRules('POSTROUTING', post, prefix)],
      filter: [...filterHookFixRules('INPUT', fin, prefix), ...filterHookFixRules('FORWARD', ffwd, prefix), ...filterHookFixRules('OUTPUT', fout, prefix)]
    }
  }

  /**
   * Lists and repairs our hooks beside the sync loop (one check at a time; incremental syncs
   * write only our own chains, so they cannot invalidate its listing). A failure makes the next
   * sync a full one, which writes the hooks again.
   */
  private checkHooksInBackground (): void {
    if (this.hookCheck != null) return
    this.hookCheck = (async () => {
      const fix = await this.hookFixes()
      const text = restoreSection({ table: 'nat', written: [], deleted: [], rules: [], extra: fix.nat }) + restoreSection({ table: 'filter', written: [], deleted: [], rules: [], extra: fix.filter })
      if (text !== '') await this.ipt.restore(text)
    })().catch((err: Error) => {
      this.fullPending = true
      this.opts.log.warn({ err: err.message }, 'proxy: hook check failed; the next sync rewrites the rules in full')
      this.requestSync()
    }).finally(() => { this.hookCheck = undefined })
  }

  /** Flows to service ports that had no rules were tracked without NAT: delete them (see conntrack.ts). */
  private async clearStaleFlows (plans: ServicePortPlan[]): Promise<void> {
    if (this.conntrackMissing) return
    for (const p of plans.slice(0, MAX_FLOW_CLEARS_PER_SYNC)) {
      try {
        const n = await deleteUnNatedFlowsTo(p.clusterIP, p.port, p.protocol)
        if (n > 0) this.opts.log.info({ service: p.id, flows: n }, 'proxy: deleted flows tracked before the service port had rules')
      } catch (err) {
        const msg = (err as Error).message
        if (/ENOENT/.test(msg)) { this.conntrackMissing = true; this.opts.log.warn('proxy: the conntrack tool is missing; flows tracked before a service port had rules are not cleared'); return }
        this.opts.log.warn({ service: p.id, err: msg }, 'proxy: could not clear stale flows')
      }
    }
  }

  /** removeRules: overrides config.cleanupOnExit (a start-up that failed removes them whatever the config says) */
  async stop (opts: { removeRules?: boolean } = {}): Promise<void> {
    const syncsDone = this.scheduler.stop() // no sync starts from here on
    this.unsubscribe?.()
    clearInterval(this.resyncTimer)
    await this.rulesWatcher?.stop()
    await syncsDone
    clearTimeout(this.hookCheckTimer)
    await this.hookCheck
    if (opts.removeRules ?? this.opts.config.cleanupOnExit) {
      try {
        const saved = await Promise.all([this.ipt.save('nat'), this.ipt.save('filter')])
        const text = cleanupRules(saved.join(''), this.opts.config.chainPrefix)
        if (text !== '') await this.ipt.restore(text)
        this.opts.log.info('proxy rules removed')
      } catch (err) {
        this.opts.log.warn({ err: (err as Error).message }, 'proxy: could not remove its rules')
      }
    }
    await Promise.all([...this.listeners.values(), ...this.retiring].map(async (l) => { await l.close() }))
    this.listeners.clear()
    this.remote.stop()
    await closeCommandWorker()
  }
}
