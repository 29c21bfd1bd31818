// The input of the proxy's rule generation: one ClusterIP service port with what the kernel may
// send its new connections to, and the validation every rule builder applies before any of it
// reaches iptables-restore text (keys and addresses end up inside rules and comments).
import { isIPv4 } from 'node:net'

export type ProxyProtocol = 'TCP' | 'UDP'
export type Balance = 'round-robin' | 'random'

export interface ProxyServicePort {
  /** 'namespace/name' */
  key: string
  /** IPv4 only; others go to skipped */
  clusterIP: string
  port: number
  protocol: ProxyProtocol
  /** endpoints the kernel DNATs to directly ('ip:port', IPv4): same node or routed LAN */
  direct: string[]
  /** how many equal shares go to the agent's listener (its tunnel endpoints, or all endpoints when the policy needs the agent); 0 = none */
  agentSlots: number
  /** 'ip:port' of the agent's local listener for this service port; required when agentSlots > 0 */
  agentTarget?: string
  balance: Balance
  /** ClientIP session affinity timeout in seconds; unset or 0 = none (max 86400) */
  affinitySeconds?: number
}

export interface Skipped { key: string, reason: string }

const MAX_AFFINITY_SECONDS = 86_400
// sanity bound: nth --every is a u32, and no Service has a million endpoints
const MAX_AGENT_SLOTS = 1_000_000
// keys are hashed into recent list names, written in comments and logged: no quotes,
// backslashes, whitespace or control characters
const KEY_RE = /^[A-Za-z0-9._-]*\/[A-Za-z0-9._-]+$/
const validPort = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535

/** 'ip:port' normalized (no leading zeros in the port), or undefined when it is not IPv4 ip:port. */
export function parseEndpoint (ep: unknown): string | undefined {
  if (typeof ep !== 'string') return undefined
  const i = ep.lastIndexOf(':')
  if (i <= 0) return undefined
  const ip = ep.slice(0, i)
  const portText = ep.slice(i + 1)
  if (!isIPv4(ip) || !/^[0-9]{1,5}$/.test(portText)) return undefined
  const port = Number(portText)
  return validPort(port) ? `${ip}:${port}` : undefined
}

/** Why a service port cannot be programmed, or undefined when it can. */
export function invalidReason (s: ProxyServicePort): string | undefined {
  if (typeof s.key !== 'string' || !KEY_RE.test(s.key)) return 'invalid key'
  if (typeof s.clusterIP !== 'string' || !isIPv4(s.clusterIP)) return 'clusterIP is not IPv4'
  if (!validPort(s.port)) return 'invalid port'
  if (s.protocol !== 'TCP' && s.protocol !== 'UDP') return 'unsupported protocol'
  if (s.balance !== 'round-robin' && s.balance !== 'random') return 'unknown balance'
  if (!Array.isArray(s.direct)) return 'direct is not a list'
  const slots = s.agentSlots
  if (!(Number.isInteger(slots) && slots >= 0 && slots <= MAX_AGENT_SLOTS)) return 'invalid agentSlots'
  if (slots > 0 && parseEndpoint(s.agentTarget) == null) return 'agentSlots without a valid agentTarget'
  const a = s.affinitySeconds
  if (a != null && a !== 0 && !(Number.isInteger(a) && a > 0 && a <= MAX_AFFINITY_SECONDS)) return 'invalid affinitySeconds'
  return undefined
}

/** The direct endpoints normalized, sorted and deduplicated; invalid ones reported in `skipped`. */
export function directTargets (s: ProxyServicePort, skipped: Skipped[]): string[] {
  const out: string[] = []
  for (const ep of s.direct) {
    const norm = parseEndpoint(ep)
    if (norm == null) skipped.push({ key: s.key, reason: `invalid endpoint ${JSON.stringify(ep)}` })
    else out.push(norm)
  }
  out.sort()
  let n = 0 // dedupe in place: sorted, so duplicates are adjacent
  for (let i = 0; i < out.length; i++) if (i === 0 || out[i] !== out[n - 1]) out[n++] = out[i]!
  out.length = n
  return out
}
