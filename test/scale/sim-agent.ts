// One simulated agent for the scale harness: the mesh's real control-plane code paths, without
// the data plane (DNS, proxy, SOCKS5, UDX streams). It runs
//   - the agent's Catalog (agent/catalog/catalog.ts: the four reflectors over its own KubeClient,
//     authenticated with its own pod-bound token, so the peer-record admission policy applies),
//   - the agent's LeasePublisher (agent/catalog/peer-registry.ts) writing its own node's record,
//   - the agent's RendezvousClient (agent/tunnel/rendezvous-client.ts) registered at its home
//     relay over its own udx socket (datagrams dispatched as agent/tunnel/tunnel.ts does),
//   - optionally its circuit reservation: the agent's libp2p node (agent/tunnel/node.ts) listening
//     on the home relay's /p2p-circuit address.
// Many of these share one process (test/scale/worker.ts). Each has its own Metrics registry
// (the catalog registers per-instance gauges), which the worker sums for the bench.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import type { Logger } from '../../shared/logging.ts'
import { Metrics } from '../../shared/metrics.ts'
import { createUdx, type UdxSocket } from '../../shared/udx.ts'
import { ed25519Verifier } from '../../shared/ed25519.ts'
import { parsePeerId } from '../../shared/peer-id.ts'
import { endpointKey, type Endpoint } from '../../shared/wire/addr.ts'
import { VERSION, decodeMessage, isRelayMessage, looksLikeRendezvous, versionOf, type PeerInfoMessage } from '../../shared/wire/rendezvous.ts'
import { Catalog } from '../../agent/catalog/catalog.ts'
import { KubeClient, type WatchEvent } from '../../agent/catalog/kube-client.ts'
import { LeasePublisher } from '../../agent/catalog/peer-registry.ts'
import { RendezvousClient } from '../../agent/tunnel/rendezvous-client.ts'
import { createAgentNode, type AgentNode } from '../../agent/tunnel/node.ts'

export interface SimRelay { host: string, peerId: string, tcpPort: number, udpPort: number }

export interface SimAgentOptions {
  nodeName: string
  /** loopback address the agent's UDP socket and TCP listener bind to (its "public IP") */
  bindHost: string
  kube: { server: string, caPem: string, token: string }
  namespace: string
  relays: SimRelay[]
  /** picks the home relay among `relays` (agent/tunnel/home-relay.ts when it exists) */
  pickHome: (peerId: string, relays: SimRelay[]) => SimRelay
  psk?: Uint8Array
  keepaliveMs: number
  leaseDurationSeconds: number
  catalog: boolean
  reservation: boolean
  log: Logger
  /** a peer asked the relay to connect to us (the relay's signed peer-info, verified) */
  onIncoming?: (info: PeerInfoMessage) => void
}

/** Counts what the catalog's watches read, until the agent's own edgemesh_catalog_watch_bytes_total exists. */
class CountingKubeClient extends KubeClient {
  watchBytes = 0
  writes = 0
  override async watch (path: string, params: { resourceVersion: string, timeoutSeconds: number, labelSelector?: string }, onEvent: (ev: WatchEvent) => void, signal?: AbortSignal, onOpen?: () => void): Promise<void> {
    // the event's JSON line as the apiserver sent it (re-serialised: same length for the apiserver's compact JSON)
    await super.watch(path, params, (ev) => { this.watchBytes += JSON.stringify(ev).length + 1; onEvent(ev) }, signal, onOpen)
  }

  override async request<T = any> (method: string, path: string, body?: unknown, opts?: { signal?: AbortSignal, contentType?: string, timeoutMs?: number }): Promise<T> {
    if (method !== 'GET') this.writes++
    return await super.request<T>(method, path, body, opts)
  }
}

export class SimAgent {
  readonly nodeName: string
  readonly peerId: PeerId
  readonly metrics = new Metrics({ processMetrics: false })
  readonly home: SimRelay
  private readonly opts: SimAgentOptions
  private readonly privateKey: PrivateKey
  private kube: CountingKubeClient | undefined
  private catalog: Catalog | undefined
  private publisher: LeasePublisher | undefined
  private socket: UdxSocket | undefined
  private rendezvous: RendezvousClient | undefined
  private node: AgentNode | undefined
  private reserving = false
  private reserveTimer: NodeJS.Timeout | undefined
  private stopped = false
  /** datagrams from the relay that were not handled (forged, reordered, undecodable) */
  dropped = 0

  private constructor (opts: SimAgentOptions, privateKey: PrivateKey) {
    this.opts = opts
    this.nodeName = opts.nodeName
    this.privateKey = privateKey
    this.peerId = peerIdFromPrivateKey(privateKey)
    this.home = opts.pickHome(this.peerId.toString(), opts.relays)
  }

  static async create (opts: SimAgentOptions): Promise<SimAgent> {
    return new SimAgent(opts, await generateKeyPair('Ed25519'))
  }

  get registered (): boolean { return this.rendezvous?.up === true }
  get catalogSynced (): boolean { return this.catalog?.synced === true }
  get peersSeen (): number { return this.catalog?.snapshot().peers.size ?? 0 }
  get reserved (): boolean {
    return this.node?.getMultiaddrs().some((a) => a.toString().includes(`/p2p/${this.home.peerId}/p2p-circuit`)) === true
  }

  get kubeWrites (): number { return this.kube?.writes ?? 0 }
  get countedWatchBytes (): number { return this.kube?.watchBytes ?? 0 }

  /** Starts everything; resolves once the UDP socket is bound (registration, sync and reservation follow on their own). */
  async start (): Promise<void> {
    const { opts } = this
    const udx = createUdx()
    const socket = this.socket = udx.createSocket()
    socket.bind(0, opts.bindHost)
    let tcpPort = 0
    if (opts.reservation) {
      const relayIds = new Set(opts.relays.map((r) => r.peerId))
      this.node = await createAgentNode({
        privateKey: this.privateKey,
        listenHost: opts.bindHost,
        tcpPort: 0,
        ...(opts.psk != null ? { psk: opts.psk } : {}),
        isAllowedPeer: (p) => relayIds.has(p.toString()),
        log: opts.log,
        metrics: this.metrics
      })
      const m = /\/tcp\/(\d+)/.exec(this.node.getMultiaddrs().map(String).find((a) => !a.includes('p2p-circuit')) ?? '')
      tcpPort = m != null ? Number(m[1]) : 0
      this.ensureReservation()
      this.reserveTimer = setInterval(() => { this.ensureReservation() }, 1_000)
      this.reserveTimer.unref()
    }
    const home = this.home
    const client = this.rendezvous = new RendezvousClient({
      relay: { host: home.host, peerId: home.peerId, tcpPort: home.tcpPort, udpPort: home.udpPort } as any,
      endpoint: { host: home.host, port: home.udpPort },
      socket,
      privateKey: this.privateKey,
      peerIdBytes: this.peerId.toMultihash().bytes,
      nodeName: opts.nodeName,
      candidates: () => [{ proto: 'udp', host: opts.bindHost, port: socket.address().port }, ...(tcpPort !== 0 ? [{ proto: 'tcp' as const, host: opts.bindHost, port: tcpPort }] : [])],
      ...(opts.psk != null ? { psk: opts.psk } : {}),
      keepaliveMs: opts.keepaliveMs,
      verifyRelay: ed25519Verifier(parsePeerId(home.peerId, 'relay peer id')),
      log: opts.log
    })
    client.on('incoming', (info) => { opts.onIncoming?.(info) })
    socket.on('message', (buf, from) => { this.onDatagram(buf, from) })
    client.start()

    if (opts.catalog) {
      const kube = this.kube = new CountingKubeClient({ server: opts.kube.server, ca: opts.kube.caPem, token: opts.kube.token })
      this.catalog = new Catalog({ client: kube, namespace: opts.namespace, syncTimeoutMs: 600_000, log: opts.log, metrics: this.metrics })
      void this.catalog.start().catch((err: Error) => { opts.log.error({ err: err.message }, 'catalog start failed') })
      // as agent/main.ts builds it (older trees ignore the options they do not know: the before run)
      const publisherOptions = {
        client: kube, namespace: opts.namespace, nodeName: opts.nodeName, peerId: this.peerId.toString(),
        addresses: tcpPort !== 0 ? [`/ip4/${opts.bindHost}/tcp/${tcpPort}`] : [], leaseDurationSeconds: opts.leaseDurationSeconds,
        // no homeRelay: a simulated agent is always on the home its ranking gives, which
        // agent/main.ts does not publish (agent/tunnel/home-publication.ts)
        log: opts.log, metrics: this.metrics, catalog: this.catalog
      }
      this.publisher = new LeasePublisher(publisherOptions)
      this.publisher.start()
    }
  }

  /** Datagrams on the agent's socket, as agent/tunnel/tunnel.ts onDatagram handles them (punches aside). */
  private onDatagram (buf: Buffer, from: Endpoint): void {
    const client = this.rendezvous
    if (client == null || !looksLikeRendezvous(buf) || versionOf(buf) !== VERSION) { this.dropped++; return }
    if (endpointKey(from) !== endpointKey(client.endpoint)) { this.dropped++; return } // punches: no data plane here
    let decoded
    try { decoded = decodeMessage(buf) } catch (err) { client.onUndecodable(err as Error); this.dropped++; return }
    const m = decoded.message
    if (!isRelayMessage(m) || decoded.signed == null) { this.dropped++; return }
    if (client.onMessage(m, decoded.signed) !== 'handled') this.dropped++
  }

  /** Listens on the home relay's circuit address until reserved (like Tunnel.ensureCircuitReservations). */
  private ensureReservation (): void {
    const node = this.node
    if (node == null || this.reserving || this.stopped || this.reserved) return
    this.reserving = true
    const home = this.home
    const tm = (node as any).components.transportManager
    const timeout = new Promise((_resolve, reject) => { setTimeout(() => { reject(new Error('reservation timed out')) }, 10_000).unref() })
    Promise.race([tm.listen([multiaddr(`/ip4/${home.host}/tcp/${home.tcpPort}/p2p/${home.peerId}/p2p-circuit`)]), timeout])
      .catch((err: Error) => { this.opts.log.debug({ err: err.message }, 'circuit reservation failed; retrying') })
      .finally(() => { this.reserving = false })
  }

  /** Resolves once the home relay answered a registration (false after timeoutMs). */
  async waitRegistered (timeoutMs: number): Promise<boolean> {
    return await (this.rendezvous?.waitUp(timeoutMs) ?? Promise.resolve(false))
  }

  /** Asks the home relay to introduce us to `target` (peer id bytes); resolves with its peer-info. */
  async connect (target: Uint8Array, timeoutMs: number): Promise<PeerInfoMessage> {
    if (this.rendezvous == null) throw new Error('not started')
    return await this.rendezvous.connect(target, false, timeoutMs)
  }

  /** Sum of a counter of this agent's registry (all label sets). */
  async counter (name: string): Promise<number | undefined> {
    const metric = this.metrics.registry.getSingleMetric(name)
    if (metric == null) return undefined
    const data = await metric.get()
    return data.values.reduce((s, v) => s + v.value, 0)
  }

  /** A counter of this agent's registry by one label (all other labels summed). */
  async counterBy (name: string, label: string): Promise<Record<string, number>> {
    const metric = this.metrics.registry.getSingleMetric(name)
    const out: Record<string, number> = {}
    if (metric == null) return out
    for (const v of (await metric.get()).values) {
      const k = String(v.labels[label] ?? '')
      out[k] = (out[k] ?? 0) + v.value
    }
    return out
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearInterval(this.reserveTimer)
    this.publisher?.stop()
    this.rendezvous?.stop()
    await this.catalog?.stop().catch(() => {})
    this.kube?.close()
    try { await this.node?.stop() } catch { /* stopping anyway */ }
    await this.socket?.close().catch(() => {})
  }
}
