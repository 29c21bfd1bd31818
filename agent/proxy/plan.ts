// What the proxy must program, as a pure function of a catalog snapshot: every ClusterIP service
// port with its ready endpoints split into those the kernel reaches directly (this node, or a
// routed LAN the operator declared) and those behind the tunnel (by node name), plus the
// load-balancing policy (Service sessionAffinity, Istio DestinationRule).
import { isIPv4 } from 'node:net'
import type { CatalogSnapshot } from '../catalog/store.ts'
import type { EndpointSliceInfo, ServiceInfo, ServicePort } from '../catalog/model.ts'
import { matchDestinationRule, type DestinationRuleInfo, type Policy } from './lb.ts'
import type { L4Protocol } from './wire.ts'

export interface ServicePortPlan {
  /** `clusterIP:port/protocol`: what the kernel matches, and the listener's identity */
  id: string
  /** 'namespace/name' */
  key: string
  namespace: string
  name: string
  portName: string
  clusterIP: string
  port: number
  protocol: L4Protocol
  /** 'ip:port' of ready endpoints reachable without the tunnel, sorted */
  direct: string[]
  /** 'ip:port' -> node name, for ready endpoints on other nodes behind the tunnel */
  remote: Map<string, string>
  policy: Policy
  /** the policy needs to see each connection (least request, consistent hash): every endpoint goes through the agent */
  agentOnly: boolean
  /** ClientIP session affinity timeout in seconds; 0 = none */
  affinitySeconds: number
}

export interface PlanOptions {
  nodeName: string
  /** endpoint IPs the node routes to directly (besides its own pods), e.g. a LAN's pod networks */
  directCidrs: readonly string[]
  destinationRules: Iterable<DestinationRuleInfo>
  clusterDomain: string
}

export interface PlanResult {
  ports: ServicePortPlan[]
  /** ready endpoints that are neither direct nor on a known node: cannot be reached */
  unroutable: number
}

interface Cidr { net: number, mask: number }
export function parseCidr (s: string): Cidr {
  const m = /^([0-9.]+)(?:\/([0-9]{1,2}))?$/.exec(s)
  const ip = m?.[1] ?? ''
  const bits = m?.[2] == null ? 32 : Number(m[2])
  if (m == null || !isIPv4(ip) || bits > 32) throw new Error(`bad IPv4 CIDR ${s}`)
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0
  return { net: (ipToInt(ip) & mask) >>> 0, mask }
}
export function ipToInt (ip: string): number {
  let v = 0
  for (const part of ip.split('.')) v = (v * 256) + Number(part)
  return v >>> 0
}
export const inCidrs = (ip: string, cidrs: readonly Cidr[]): boolean => {
  if (cidrs.length === 0) return false
  const v = ipToInt(ip)
  return cidrs.some((c) => ((v & c.mask) >>> 0) === c.net)
}

const PROTOCOLS = new Set(['TCP', 'UDP'])

/** The endpoint port a service port maps to in a slice: same port name and protocol (as kube-proxy). */
function slicePort (slice: EndpointSliceInfo, sp: ServicePort): number | undefined {
  for (const p of slice.ports) if ((p.name ?? '') === (sp.name ?? '') && p.protocol === sp.protocol) return p.port
  return undefined
}

/**
 * Does the proxy write rules for this Service (an IPv4 ClusterIP with a TCP or UDP port)? The
 * node-local DNS holds back the names of exactly these until their rules are in (programmed-view.ts).
 */
export function programsService (svc: ServiceInfo | undefined): boolean {
  return svc != null && !svc.headless && svc.externalName == null && svc.clusterIPs.some((ip) => isIPv4(ip)) && svc.ports.some((p) => PROTOCOLS.has(p.protocol))
}

export function planService (svc: ServiceInfo, slices: Iterable<EndpointSliceInfo>, opts: PlanOptions, cidrs: readonly Cidr[], out: ServicePortPlan[]): number {
  if (!programsService(svc)) return 0
  const clusterIP = svc.clusterIPs.find((ip) => isIPv4(ip))
  if (clusterIP == null) return 0
  const key = `${svc.namespace}/${svc.name}`
  const rule = matchDestinationRule(opts.destinationRules, svc, opts.clusterDomain)
  const policy: Policy = rule?.policy ?? { kind: 'round-robin' }
  const agentOnly = policy.kind === 'least-request' || policy.kind === 'consistent-hash'
  const affinitySeconds = svc.sessionAffinity === 'ClientIP' ? svc.affinityTimeoutSeconds : 0
  const sliceList = [...slices].filter((s) => s.addressType === 'IPv4')
  let unroutable = 0
  for (const sp of svc.ports) {
    if (!PROTOCOLS.has(sp.protocol)) continue
    const direct = new Set<string>()
    const remote = new Map<string, string>()
    for (const slice of sliceList) {
      const port = slicePort(slice, sp)
      if (port == null) continue
      for (const ep of slice.endpoints) {
        if (!ep.ready) continue
        for (const ip of ep.addresses) {
          if (!isIPv4(ip)) continue
          const target = `${ip}:${port}`
          if (ep.nodeName === opts.nodeName || inCidrs(ip, cidrs)) direct.add(target)
          else if (ep.nodeName != null && ep.nodeName !== '') remote.set(target, ep.nodeName)
          else unroutable++
        }
      }
    }
    for (const t of direct) remote.delete(t)
    out.push({
      id: `${clusterIP}:${sp.port}/${sp.protocol}`,
      key, namespace: svc.namespace, name: svc.name, portName: sp.name ?? '',
      clusterIP, port: sp.port, protocol: sp.protocol as L4Protocol,
      direct: [...direct].sort(), remote, policy, agentOnly, affinitySeconds
    })
  }
  return unroutable
}

/** Every ClusterIP service port of the snapshot, sorted by id. */
export function planAll (snapshot: CatalogSnapshot, opts: PlanOptions): PlanResult {
  const cidrs = opts.directCidrs.map(parseCidr)
  const rules = [...opts.destinationRules]
  const o = { ...opts, destinationRules: rules }
  const ports: ServicePortPlan[] = []
  let unroutable = 0
  for (const [key, svc] of snapshot.services) {
    const slices = snapshot.endpoints.get(key)
    unroutable += planService(svc, slices?.values() ?? [], o, cidrs, ports)
  }
  ports.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  return { ports, unroutable }
}

/** Endpoints the agent serves for a port (all of them when the policy needs the agent, else the tunnel ones). */
export function agentEndpoints (p: ServicePortPlan): string[] {
  return p.agentOnly ? [...p.direct, ...p.remote.keys()].sort() : [...p.remote.keys()].sort()
}

/** Same endpoints, node placement and policy: the listener's view is unchanged. */
export function samePlan (a: ServicePortPlan, b: ServicePortPlan): boolean {
  if (a.agentOnly !== b.agentOnly || a.affinitySeconds !== b.affinitySeconds || JSON.stringify(a.policy) !== JSON.stringify(b.policy)) return false
  if (a.direct.length !== b.direct.length || a.remote.size !== b.remote.size) return false
  for (let i = 0; i < a.direct.length; i++) if (a.direct[i] !== b.direct[i]) return false
  for (const [k, v] of a.remote) if (b.remote.get(k) !== v) return false
  return true
}
