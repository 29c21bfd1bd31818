// The catalog's compact view of Kubernetes objects: only the fields DNS, proxy, SOCKS5 and the
// tunnel use (like client-go's SetTransform), so 10k Services + 50k endpoints stay small.
// Transforms are pure and tolerate any JSON: an object that is not what it claims is skipped.

export interface ServicePort { name: string, port: number, protocol: string, targetPort: number | string, nodePort?: number }
export interface ServiceInfo {
  namespace: string
  name: string
  resourceVersion: string
  type: string
  /** empty for headless and ExternalName Services */
  clusterIPs: string[]
  headless: boolean
  externalName?: string
  ports: ServicePort[]
  sessionAffinity: 'None' | 'ClientIP'
  affinityTimeoutSeconds: number
  publishNotReadyAddresses: boolean
}

export interface EndpointPort { name: string, port: number, protocol: string }
export interface EndpointInfo {
  addresses: string[]
  ready: boolean
  serving: boolean
  terminating: boolean
  hostname?: string
  nodeName?: string
  zone?: string
}
export interface EndpointSliceInfo {
  namespace: string
  name: string
  resourceVersion: string
  /** from the kubernetes.io/service-name label; slices without it are not indexed */
  serviceName: string
  addressType: string
  ports: EndpointPort[]
  endpoints: EndpointInfo[]
}

/**
 * A mesh peer record: a coordination.k8s.io Lease named after its node. It is written only when
 * its content changes (no periodic renewal: every write is an event to every agent's watch).
 */
export interface PeerInfo {
  nodeName: string
  resourceVersion: string
  peerId: string
  addresses: string[]
  /** the relay peer id this agent is homed on (registration + reservation there) */
  homeRelay?: string
  /** ms since epoch of the record's last write (spec.renewTime); 0 when unknown */
  writtenAt: number
}

export const PEER_LABEL = 'edgemesh.io/peer-record'
export const PEER_ID_ANNOTATION = 'edgemesh.io/peer-id'
export const PEER_ADDRESSES_ANNOTATION = 'edgemesh.io/addresses'
export const PEER_HOME_RELAY_ANNOTATION = 'edgemesh.io/home-relay'
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name'

/**
 * Node and zone names repeat on every endpoint (50k endpoints, ~50 nodes): JSON.parse makes a
 * new string each time, the pool keeps one. Bounded, so hostile input cannot grow it forever.
 */
const POOL_MAX = 20_000
const pool = new Map<string, string>()
function intern (s: string): string {
  const hit = pool.get(s)
  if (hit != null) return hit
  if (pool.size < POOL_MAX) pool.set(s, s)
  return s
}

const str = (v: unknown): string | undefined => typeof v === 'string' ? v : undefined
const num = (v: unknown): number | undefined => typeof v === 'number' && Number.isFinite(v) ? v : undefined
const arr = (v: unknown): unknown[] => Array.isArray(v) ? v : []
const strs = (v: unknown): string[] => arr(v).filter((x): x is string => typeof x === 'string')

function meta (obj: any): { namespace: string, name: string, resourceVersion: string } | undefined {
  const m = obj?.metadata
  const name = str(m?.name)
  if (name == null || name === '') return undefined
  return { namespace: intern(str(m.namespace) ?? ''), name, resourceVersion: str(m.resourceVersion) ?? '' }
}

export function toService (obj: any): ServiceInfo | undefined {
  const m = meta(obj)
  if (m == null) return undefined
  const spec = obj.spec ?? {}
  const type = str(spec.type) ?? 'ClusterIP'
  const rawIPs = strs(spec.clusterIPs).length > 0 ? strs(spec.clusterIPs) : strs([spec.clusterIP])
  const headless = type !== 'ExternalName' && rawIPs[0] === 'None'
  const ports: ServicePort[] = []
  for (const p of arr(spec.ports) as any[]) {
    const port = num(p?.port)
    if (port == null) continue
    const tp = p.targetPort
    const sp: ServicePort = { name: str(p.name) ?? '', port, protocol: str(p.protocol) ?? 'TCP', targetPort: typeof tp === 'number' || typeof tp === 'string' ? tp : port }
    if (num(p.nodePort) != null) sp.nodePort = p.nodePort
    ports.push(sp)
  }
  const svc: ServiceInfo = {
    ...m,
    type,
    clusterIPs: headless || type === 'ExternalName' ? [] : rawIPs.filter((ip) => ip !== '' && ip !== 'None'),
    headless,
    ports,
    sessionAffinity: spec.sessionAffinity === 'ClientIP' ? 'ClientIP' : 'None',
    affinityTimeoutSeconds: num(spec.sessionAffinityConfig?.clientIP?.timeoutSeconds) ?? 10_800,
    publishNotReadyAddresses: spec.publishNotReadyAddresses === true
  }
  const ext = str(spec.externalName)
  if (type === 'ExternalName' && ext != null) svc.externalName = ext
  return svc
}

export function toEndpointSlice (obj: any): EndpointSliceInfo | undefined {
  const m = meta(obj)
  if (m == null) return undefined
  const endpoints: EndpointInfo[] = []
  for (const e of arr(obj.endpoints) as any[]) {
    const addresses = strs(e?.addresses)
    if (addresses.length === 0) continue
    const c = e.conditions ?? {}
    // per the EndpointSlice API: a nil ready condition means ready, nil serving follows ready
    const ready = c.ready !== false
    const ep: EndpointInfo = { addresses, ready, serving: typeof c.serving === 'boolean' ? c.serving : ready, terminating: c.terminating === true }
    if (str(e.hostname) != null) ep.hostname = e.hostname
    if (str(e.nodeName) != null) ep.nodeName = intern(e.nodeName)
    if (str(e.zone) != null) ep.zone = intern(e.zone)
    endpoints.push(ep)
  }
  const ports: EndpointPort[] = []
  for (const p of arr(obj.ports) as any[]) {
    const port = num(p?.port)
    if (port != null) ports.push({ name: str(p.name) ?? '', port, protocol: str(p.protocol) ?? 'TCP' })
  }
  return { ...m, serviceName: str(obj.metadata.labels?.[SERVICE_NAME_LABEL]) ?? '', addressType: str(obj.addressType) ?? 'IPv4', ports, endpoints }
}

export function toPeer (obj: any): PeerInfo | undefined {
  const m = meta(obj)
  if (m == null) return undefined
  const ann = obj.metadata.annotations ?? {}
  const peerId = str(ann[PEER_ID_ANNOTATION]) ?? str(obj.spec?.holderIdentity)
  if (peerId == null || peerId === '') return undefined
  let addresses: string[] = []
  try { addresses = strs(JSON.parse(str(ann[PEER_ADDRESSES_ANNOTATION]) ?? '[]')) } catch { /* unparsable: no direct addresses */ }
  // records of older agents carry a renewTime they renewed every 10 s: it parses the same way
  const written = Date.parse(str(obj.spec?.renewTime) ?? '')
  const peer: PeerInfo = { nodeName: m.name, resourceVersion: m.resourceVersion, peerId, addresses, writtenAt: Number.isFinite(written) ? written : 0 }
  const homeRelay = str(ann[PEER_HOME_RELAY_ANNOTATION])
  if (homeRelay != null && homeRelay !== '') peer.homeRelay = homeRelay
  return peer
}

/** The Node a peer record belongs to: the garbage collector deletes the record when the Node goes. */
export interface NodeOwner { name: string, uid: string }

/** What a peer record says; two records with equal content need no write. */
export interface PeerContent { peerId: string, addresses: string[], homeRelay?: string | undefined }

export function samePeerContent (a: PeerContent, b: PeerContent): boolean {
  return a.peerId === b.peerId && (a.homeRelay ?? '') === (b.homeRelay ?? '') &&
    a.addresses.length === b.addresses.length && a.addresses.every((x, i) => x === b.addresses[i])
}

/** The Node uid a raw record's ownerReferences name (undefined: none, or not a Node). */
export function recordOwnerUid (obj: any): string | undefined {
  const refs = arr(obj?.metadata?.ownerReferences) as any[]
  const node = refs.find((r) => r?.kind === 'Node' && r?.apiVersion === 'v1')
  return refs.length === 1 ? str(node?.uid) : undefined
}

/**
 * Lease body for our own peer record. renewTime is a MicroTime (RFC 3339 with microseconds): the
 * time of this write, not a heartbeat. The ownerReference (like kubelet's node leases) lets the
 * garbage collector delete the record with its Node; no blockOwnerDeletion (that needs delete
 * rights on Nodes).
 */
export function peerLease (p: { namespace: string, nodeName: string, peerId: string, addresses: string[], homeRelay?: string | undefined, owner?: NodeOwner | undefined, leaseDurationSeconds: number, now: Date }): any {
  const micro = p.now.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z')
  const annotations: Record<string, string> = { [PEER_ID_ANNOTATION]: p.peerId, [PEER_ADDRESSES_ANNOTATION]: JSON.stringify(p.addresses) }
  if (p.homeRelay != null && p.homeRelay !== '') annotations[PEER_HOME_RELAY_ANNOTATION] = p.homeRelay
  const metadata: any = {
    name: p.nodeName,
    namespace: p.namespace,
    labels: { [PEER_LABEL]: 'true', 'app.kubernetes.io/part-of': 'edgemesh' },
    annotations
  }
  if (p.owner != null) metadata.ownerReferences = [{ apiVersion: 'v1', kind: 'Node', name: p.owner.name, uid: p.owner.uid }]
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata,
    spec: { holderIdentity: p.peerId, leaseDurationSeconds: p.leaseDurationSeconds, renewTime: micro }
  }
}
