// The mesh's peer registry in Kubernetes: each agent publishes node name -> peer id + direct
// addresses + home relay as a coordination.k8s.io Lease named after its node (a
// ValidatingAdmissionPolicy lets it write only that one, owned by only its own Node), and reads
// everyone's through the catalog. The record is written only when its content changes: at rest
// the mesh writes nothing and no agent's watch sees an event. Records of deleted Nodes go with
// them (ownerReference -> the garbage collector), so nobody needs a liveness heartbeat.
import { localIPv4 } from '../../shared/net.ts'
import type { Logger } from 'pino'
import type { Metrics } from '../../shared/metrics.ts'
import { parsePeerId } from '../../shared/peer-id.ts'
import type { PeerDirectory, PeerRecord } from '../tunnel/directory.ts'
import type { Catalog } from './catalog.ts'
import { KubeApiError, type KubeClient } from './kube-client.ts'
import { peerLease, recordOwnerUid, samePeerContent, toPeer, type NodeOwner, type PeerContent, type PeerInfo } from './model.ts'

export interface LeasePublisherOptions {
  client: KubeClient
  namespace: string
  nodeName: string
  peerId: string
  addresses: string[]
  homeRelay?: string
  /** written into the Lease for older agents' tools; nothing renews it */
  leaseDurationSeconds: number
  log: Logger
  /** counts edgemesh_peer_record_writes_total{verb} */
  metrics?: Metrics
  /**
   * Where the publisher sees its own record change: a record deleted (by hand, or by the
   * garbage collector for a Node re-created under the same name) or rewritten by someone else is
   * checked again and restored. Without it the record is written at start and on update() only.
   */
  catalog?: Catalog
  /** cap of the retry backoff after failed writes (default 30 s) */
  maxBackoffMs?: number
}

/** foreign rewrites restored at once before restoring backs off; a quiet minute resets the count */
const RESTORES_BEFORE_BACKOFF = 3
const RESTORE_QUIET_MS = 60_000

export interface PeerRecordFields { addresses?: string[], homeRelay?: string }

/** Keeps this node's peer record present and current, writing only when its content changes. */
export class LeasePublisher {
  private readonly opts: LeasePublisherOptions
  private desired: PeerContent
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  private started = false
  private running = false
  /** the record may differ from desired: reconcile (set by start, update, a foreign change, a failure) */
  private dirty = true
  private failures = 0
  /** resourceVersion and owner of our last write or check: a content update is one PUT against it */
  private lastResourceVersion: string | undefined
  private lastOwner: NodeOwner | undefined
  /** our Node was seen once: if it is gone now, the node is being removed (see reconcile) */
  private hadOwner = false
  /** resourceVersions of our latest writes (their echoes in the catalog are not foreign changes) */
  private readonly ownWrites: string[] = []
  /** foreign rewrites restored in a row (see observe) */
  private restores = 0
  private lastRestoreAt = 0
  private readonly unsubscribe: (() => void) | undefined
  /** resolves after the record was first found or written current (tests and start-up logging) */
  readonly published: Promise<void>
  private markPublished!: () => void

  constructor (opts: LeasePublisherOptions) {
    this.opts = opts
    this.desired = { peerId: opts.peerId, addresses: [...opts.addresses], homeRelay: opts.homeRelay }
    this.published = new Promise((resolve) => { this.markPublished = resolve })
    this.unsubscribe = opts.catalog?.subscribe((snap, changes) => {
      if (changes.some((c) => c.kind === 'peer' && c.key === opts.nodeName)) this.observe(snap.peers.get(opts.nodeName))
    })
  }

  private get path (): string { return `/apis/coordination.k8s.io/v1/namespaces/${this.opts.namespace}/leases` }

  /** what this publisher wants the record to say (a copy) */
  get content (): PeerContent { return { ...this.desired, addresses: [...this.desired.addresses] } }

  start (): void { this.started = true; this.kick() }

  /** New addresses and/or home relay: the record is rewritten only if its content changes. */
  update (fields: PeerRecordFields): void {
    const next: PeerContent = {
      peerId: this.desired.peerId,
      addresses: fields.addresses != null ? [...fields.addresses] : this.desired.addresses,
      homeRelay: 'homeRelay' in fields ? fields.homeRelay : this.desired.homeRelay
    }
    if (samePeerContent(next, this.desired)) return
    this.desired = next
    this.kick()
  }

  /** The catalog saw our record: missing or saying something else means someone else wrote it. */
  private observe (seen: PeerInfo | undefined): void {
    if (seen != null && samePeerContent(seen, this.desired)) return
    // the echo of an earlier write of ours (an update() since): the newer write follows it
    if (seen != null && seen.resourceVersion !== '' && this.ownWrites.includes(seen.resourceVersion)) return
    this.lastResourceVersion = undefined // re-read it before writing
    if (seen != null) {
      // someone else wrote other content: restore it, but another writer of this record (a second
      // agent with this node's name) must not turn into a write loop, each write an event to
      // every agent: restores in a row back off like failures
      const now = Date.now()
      this.restores = now - this.lastRestoreAt > RESTORE_QUIET_MS ? 1 : this.restores + 1
      this.lastRestoreAt = now
      if (this.restores > RESTORES_BEFORE_BACKOFF) {
        if (this.restores === RESTORES_BEFORE_BACKOFF + 1) this.opts.log.warn({ node: this.opts.nodeName, peerId: seen.peerId }, 'this node\'s peer record keeps being rewritten by someone else (another agent with this node name?); restoring it with backoff')
        const cap = this.opts.maxBackoffMs ?? 30_000
        const delay = Math.min(cap, 1000 * 2 ** Math.min(this.restores - RESTORES_BEFORE_BACKOFF - 1, 5))
        if (this.timer == null && !this.stopped) {
          this.timer = setTimeout(() => { this.timer = undefined; this.kick() }, delay)
          this.timer.unref()
        }
        return
      }
    }
    this.kick()
  }

  /** remembers the resourceVersion of a write of ours, to know its echo */
  private wrote (resourceVersion: string | undefined): string | undefined {
    if (resourceVersion != null) {
      this.ownWrites.push(resourceVersion)
      if (this.ownWrites.length > 8) this.ownWrites.shift()
    }
    return resourceVersion
  }

  private kick (): void {
    this.dirty = true
    if (!this.started || this.stopped || this.running || this.timer != null) return
    void this.run()
  }

  private async run (): Promise<void> {
    this.running = true
    try {
      while (this.dirty && !this.stopped) {
        this.dirty = false
        try {
          await this.reconcile()
          if (this.failures > 0) this.opts.log.info({ after: this.failures }, 'peer record written again')
          this.failures = 0
          this.markPublished()
        } catch (err) {
          this.dirty = true
          this.failures++
          if (this.failures === 1 || this.failures % 10 === 0) {
            this.opts.log.warn({ err: (err as Error).message, failures: this.failures }, 'cannot write this node\'s peer record; retrying')
          }
          if (this.stopped) return
          const cap = this.opts.maxBackoffMs ?? 30_000
          const delay = Math.round(Math.min(cap, 1000 * 2 ** Math.min(this.failures - 1, 5)) * (0.8 + Math.random() * 0.4))
          if (this.timer != null) clearTimeout(this.timer) // a restore waiting out its backoff: this retry covers it
          this.timer = setTimeout(() => { this.timer = undefined; if (!this.stopped && !this.running) void this.run() }, delay)
          this.timer.unref()
          return
        }
      }
    } finally {
      this.running = false
    }
  }

  private async call (verb: 'GET' | 'POST' | 'PUT', url: string, body?: unknown): Promise<any> {
    this.opts.metrics?.peerRecordWrites.inc({ verb })
    return await this.opts.client.request(verb, url, body)
  }

  /**
   * Our Node's name and uid; undefined when it has none (standalone) or we may not read it. A
   * Node that existed and is gone now means the node is being removed: the garbage collector
   * deleted (or will delete) its record, and an ownerless copy would never be collected, so
   * this throws and the publisher retries (with backoff) until the Node is back.
   */
  private async nodeOwner (): Promise<NodeOwner | undefined> {
    const { nodeName, log } = this.opts
    try {
      const node = await this.call('GET', `/api/v1/nodes/${encodeURIComponent(nodeName)}`)
      const uid = node?.metadata?.uid
      if (typeof uid !== 'string' || uid === '') return undefined
      this.hadOwner = true
      return { name: nodeName, uid }
    } catch (err) {
      if (!(err instanceof KubeApiError && (err.status === 404 || err.status === 403))) throw err
      if (err.status === 404 && this.hadOwner) throw new Error(`this node's Node ${nodeName} was deleted: its peer record is not recreated until the Node is back`)
      if (this.failures === 0) log.warn({ node: nodeName, status: err.status }, 'cannot read this node\'s Node object; the peer record gets no owner (it will not be garbage-collected with the Node)')
      return undefined
    }
  }

  private body (owner: NodeOwner | undefined): any {
    const { namespace, nodeName, leaseDurationSeconds } = this.opts
    return peerLease({ namespace, nodeName, ...this.desired, owner, leaseDurationSeconds, now: new Date() })
  }

  /**
   * Make the stored record say what we want. After an update() the fast path is one PUT against
   * the resourceVersion of our last write, like kubelet node leases; otherwise (start, a foreign
   * change or deletion, a conflict) GET the Node for its uid and the record, and write only if its
   * content or owner differs. A record written by an older agent (renewed every 10 s) with the
   * same content is left as it is.
   */
  private async reconcile (): Promise<void> {
    const url = `${this.path}/${this.opts.nodeName}`
    if (this.lastResourceVersion != null) {
      const body = this.body(this.lastOwner)
      body.metadata.resourceVersion = this.lastResourceVersion
      try {
        this.lastResourceVersion = this.wrote((await this.call('PUT', url, body)).metadata.resourceVersion)
        return
      } catch (err) {
        this.lastResourceVersion = undefined
        if (!(err instanceof KubeApiError && (err.status === 409 || err.status === 404))) throw err
      }
    }
    const owner = await this.nodeOwner()
    this.lastOwner = owner
    let existing: any
    try {
      existing = await this.call('GET', url)
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 404)) throw err
      this.lastResourceVersion = this.wrote((await this.call('POST', this.path, this.body(owner))).metadata.resourceVersion)
      return
    }
    const seen = toPeer(existing)
    const ownerOk = owner == null || recordOwnerUid(existing) === owner.uid
    if (seen != null && ownerOk && samePeerContent(seen, this.desired)) {
      this.lastResourceVersion = existing.metadata.resourceVersion
      return
    }
    const body = this.body(owner)
    body.metadata.resourceVersion = existing.metadata.resourceVersion
    this.lastResourceVersion = this.wrote((await this.call('PUT', url, body)).metadata.resourceVersion)
  }

  stop (): void {
    this.stopped = true
    this.unsubscribe?.()
    if (this.timer != null) { clearTimeout(this.timer); this.timer = undefined }
  }
}

/** Direct TCP candidates to publish: this host's IPv4 addresses (see localIPv4) plus configured extras. */
export function localTcpAddresses (tcpPort: number, extra: string[] = []): string[] {
  const ips = new Set<string>(extra)
  for (const a of localIPv4()) ips.add(a.address)
  return [...ips].map((ip) => `/ip4/${ip}/tcp/${tcpPort}`)
}

/**
 * The tunnel's PeerDirectory backed by the catalog's peer records (a record with an invalid
 * peer id is skipped and logged once). Static records, if given, fill in nodes the registry
 * does not know.
 */
export class CatalogPeerDirectory implements PeerDirectory {
  private byNameMap = new Map<string, PeerRecord>()
  private byIdMap = new Map<string, PeerRecord>()
  private readonly unsubscribe: () => void
  private readonly warned = new Set<string>()
  private readonly fallback: PeerDirectory | undefined
  private readonly log: Logger

  constructor (catalog: Catalog, log: Logger, fallback?: PeerDirectory) {
    this.log = log
    this.fallback = fallback
    this.rebuild(catalog.snapshot().peers)
    this.unsubscribe = catalog.subscribe((snap, changes) => {
      if (changes.some((c) => c.kind === 'peer')) this.rebuild(snap.peers)
    })
  }

  private rebuild (peers: ReadonlyMap<string, PeerInfo>): void {
    const records: PeerRecord[] = [...(this.fallback?.list() ?? [])]
    for (const p of peers.values()) {
      try {
        parsePeerId(p.peerId, `peer record ${p.nodeName}`)
      } catch (err) {
        const tag = `${p.nodeName}@${p.resourceVersion}`
        if (!this.warned.has(tag)) { this.warned.add(tag); this.log.warn({ node: p.nodeName, err: (err as Error).message }, 'ignoring peer record with an invalid peer id') }
        continue
      }
      // advertised: self-published, filtered before dialling; homeRelay: where to reach it relayed
      const record: PeerRecord & { homeRelay?: string } = { nodeName: p.nodeName, peerId: p.peerId, addresses: [], advertised: p.addresses }
      if (p.homeRelay != null) record.homeRelay = p.homeRelay
      records.push(record)
    }
    // later entries (the registry) win over the static fallback
    this.byNameMap = new Map(records.map((r) => [r.nodeName, r]))
    this.byIdMap = new Map([...this.byNameMap.values()].map((r) => [r.peerId, r]))
  }

  byName (nodeName: string): PeerRecord | undefined { return this.byNameMap.get(nodeName) }
  byPeerId (peerId: string): PeerRecord | undefined { return this.byIdMap.get(peerId) }
  list (): PeerRecord[] { return [...this.byNameMap.values()] }
  stop (): void { this.unsubscribe() }
}
