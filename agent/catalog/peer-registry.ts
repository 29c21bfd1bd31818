// The mesh's peer registry in Kubernetes: each agent publishes node name -> peer id + direct
// addresses as a coordination.k8s.io Lease named after its node (a ValidatingAdmissionPolicy
// lets it write only that one), renews it for liveness, and reads everyone's through the catalog.
import { localIPv4 } from '../../shared/net.ts'
import type { Logger } from 'pino'
import { parsePeerId } from '../../shared/peer-id.ts'
import type { PeerDirectory, PeerRecord } from '../tunnel/directory.ts'
import type { Catalog } from './catalog.ts'
import { KubeApiError, type KubeClient } from './kube-client.ts'
import { peerLease, type PeerInfo } from './model.ts'

export interface LeasePublisherOptions {
  client: KubeClient
  namespace: string
  nodeName: string
  peerId: string
  addresses: string[]
  leaseDurationSeconds: number
  log: Logger
}

/** Keeps this node's peer record present and renewed (every quarter of its duration). */
export class LeasePublisher {
  private readonly opts: LeasePublisherOptions
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  private failures = 0
  private lastResourceVersion: string | undefined
  /** resolves after the first successful write (tests and start-up logging) */
  readonly published: Promise<void>
  private markPublished!: () => void

  constructor (opts: LeasePublisherOptions) {
    this.opts = opts
    this.published = new Promise((resolve) => { this.markPublished = resolve })
  }

  private get path (): string { return `/apis/coordination.k8s.io/v1/namespaces/${this.opts.namespace}/leases` }

  start (): void { void this.tick() }

  private async tick (): Promise<void> {
    if (this.stopped) return
    let next = this.opts.leaseDurationSeconds * 250
    try {
      await this.writeOnce()
      if (this.failures > 0) this.opts.log.info({ after: this.failures }, 'peer record renewed again')
      this.failures = 0
      this.markPublished()
    } catch (err) {
      this.failures++
      next = Math.min(next, 1000 * 2 ** Math.min(this.failures, 4))
      if (this.failures === 1 || this.failures % 10 === 0) {
        this.opts.log.warn({ err: (err as Error).message, failures: this.failures }, 'cannot write this node\'s peer record; retrying')
      }
    }
    if (!this.stopped) { this.timer = setTimeout(() => { void this.tick() }, next); this.timer.unref() }
  }

  /**
   * Create, or replace if it exists (the peer id or addresses may have changed since). Renewals
   * are one PUT against the resourceVersion of our last write, like kubelet node leases; only a
   * conflict (someone else wrote it) or a missing record costs a GET or a POST.
   */
  private async writeOnce (): Promise<void> {
    const { client, namespace, nodeName, peerId, addresses, leaseDurationSeconds } = this.opts
    const body = peerLease({ namespace, nodeName, peerId, addresses, leaseDurationSeconds, now: new Date() })
    const url = `${this.path}/${nodeName}`
    if (this.lastResourceVersion != null) {
      try {
        body.metadata.resourceVersion = this.lastResourceVersion
        this.lastResourceVersion = (await client.request('PUT', url, body)).metadata.resourceVersion
        return
      } catch (err) {
        this.lastResourceVersion = undefined
        if (!(err instanceof KubeApiError && (err.status === 409 || err.status === 404))) throw err
      }
    }
    let existing: any
    try {
      existing = await client.request('GET', url)
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 404)) throw err
      delete body.metadata.resourceVersion
      this.lastResourceVersion = (await client.request('POST', this.path, body)).metadata.resourceVersion
      return
    }
    body.metadata.resourceVersion = existing.metadata.resourceVersion
    this.lastResourceVersion = (await client.request('PUT', url, body)).metadata.resourceVersion
  }

  stop (): void {
    this.stopped = true
    if (this.timer != null) clearTimeout(this.timer)
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
      records.push({ nodeName: p.nodeName, peerId: p.peerId, addresses: [], advertised: p.addresses }) // self-published: filtered before dialling
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
