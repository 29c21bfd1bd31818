// What a SOCKS5 target name means, as a pure function: a node (`edge-7`, `edge-7.<suffix>`), a
// Service (`web.shop`, `web.shop.svc`, `web.shop.svc.<clusterDomain>`), or a refusal. Only names:
// node IPs may repeat across sites behind NAT, so an address names nothing for sure.
import { isIP } from 'node:net'

export type Target =
  | { kind: 'node', node: string, port: number }
  | { kind: 'service', namespace: string, name: string, port: number }
  | { kind: 'refused', reason: 'address-type-not-supported' | 'unknown-target', detail: string }

export interface TargetContext {
  /** '' = suffix names off */
  nodeSuffix: string
  clusterDomain: string
  /** Service targets allowed */
  services: boolean
  isNode: (name: string) => boolean
  isService: (namespace: string, name: string) => boolean
}

const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/

export function resolveTarget (host: string, port: number, ctx: TargetContext): Target {
  const name = host.toLowerCase().replace(/\.$/, '')
  if (isIP(name) !== 0 || isIP(name.replace(/^\[|\]$/g, '')) !== 0) return { kind: 'refused', reason: 'address-type-not-supported', detail: `target ${host} is an IP address; only node and Service names are accepted` }
  if (name !== '' && ctx.isNode(name)) return { kind: 'node', node: name, port }
  if (ctx.nodeSuffix !== '' && name.endsWith(`.${ctx.nodeSuffix}`)) {
    const node = name.slice(0, -ctx.nodeSuffix.length - 1)
    if (node !== '' && ctx.isNode(node)) return { kind: 'node', node, port }
  }
  if (ctx.services) {
    const svc = serviceName(name, ctx.clusterDomain)
    if (svc != null && ctx.isService(svc.namespace, svc.name)) return { kind: 'service', ...svc, port }
  }
  return { kind: 'refused', reason: 'unknown-target', detail: `${host} is neither a node nor ${ctx.services ? 'a Service' : 'allowed (Service targets are off)'}` }
}

/** `svc.ns`, `svc.ns.svc` or `svc.ns.svc.<domain>` split into its parts; anything else undefined. */
export function serviceName (name: string, clusterDomain: string): { namespace: string, name: string } | undefined {
  let rest = name
  const full = `.svc.${clusterDomain}`
  if (rest.endsWith(full)) rest = rest.slice(0, -full.length)
  else if (rest.endsWith('.svc')) rest = rest.slice(0, -4)
  const parts = rest.split('.')
  if (parts.length !== 2 || !parts.every((p) => LABEL.test(p))) return undefined
  return { name: parts[0]!, namespace: parts[1]! }
}
