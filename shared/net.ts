// Small IPv4 helpers for choosing which candidate addresses are worth a direct dial.
import { networkInterfaces } from 'node:os'

export function ipv4ToInt (ip: string): number {
  return ip.split('.').reduce((acc, p) => ((acc << 8) | Number(p)) >>> 0, 0)
}

export function sameSubnet (a: string, b: string, mask: string): boolean {
  const m = ipv4ToInt(mask)
  return (ipv4ToInt(a) & m) === (ipv4ToInt(b) & m)
}

/** RFC 1918, CGNAT (100.64/10), link-local and loopback: not reachable across sites. */
export function isPrivateIPv4 (ip: string): boolean {
  const n = ipv4ToInt(ip)
  const inRange = (base: string, bits: number): boolean => ((n ^ ipv4ToInt(base)) >>> (32 - bits)) === 0
  return inRange('10.0.0.0', 8) || inRange('172.16.0.0', 12) || inRange('192.168.0.0', 16) ||
    inRange('100.64.0.0', 10) || inRange('169.254.0.0', 16) || inRange('127.0.0.0', 8)
}

export interface LocalAddress { address: string, netmask: string }

const isLinkLocal = (ip: string): boolean => ip.startsWith('169.254.')

/**
 * Container and pod bridges, overlay and tunnel devices (and the agent's own edgemesh0): their
 * addresses mean something only on this node (every Docker host has 172.17.0.1), so offering
 * them to peers only draws SYNs that cannot arrive.
 */
export const VIRTUAL_INTERFACE = /^(edgemesh|docker|br-[0-9a-f]{12}$|cni|cbr|flannel|cali|cilium|lxc|kube-|virbr|lxcbr|lxdbr|podman|veth|vxlan|tunl|weave|nerdctl)/

/**
 * This host's IPv4 addresses worth offering to peers: not loopback, not link-local (those mean
 * something only on this node; every agent puts the same 169.254.96.16 on its DNS bridge), and
 * not on container bridges or overlay devices (see VIRTUAL_INTERFACE).
 */
export function localIPv4 (): LocalAddress[] {
  const out: LocalAddress[] = []
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (VIRTUAL_INTERFACE.test(name)) continue
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal && !isLinkLocal(a.address)) out.push({ address: a.address, netmask: a.netmask })
  }
  return out
}
