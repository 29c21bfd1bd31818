// Pure generation of the proxy's `filter` table: service ports with no endpoint to send a
// connection to are refused at once, as kube-proxy does, instead of their packets leaving
// un-NATed towards the default route while the client waits for its timeout. REJECT is valid only
// in filter, so this is a section of its own next to the nat one (rules.ts joins them).
//
// Layout: one chain, hooked (hooks.ts) from INPUT, FORWARD and OUTPUT for new connections:
//   P-REJECT   one rule per service port without endpoints, sorted by (key, port, protocol):
//                -d <clusterIP>/32 -p tcp -m comment --comment "<ns>/<name> has no endpoints"
//                -m tcp --dport <port> -j REJECT --reject-with tcp-reset
//              UDP: ... -p udp ... -m udp --dport <port> -j REJECT --reject-with icmp-port-unreachable
// A TCP client takes either a RST or ICMP port unreachable (kube-proxy sends ICMP for both) as
// ECONNREFUSED, but the kernel rate-limits ICMP errors per destination host (icmp_ratelimit: a
// burst of 6, then 1 per second): a client retrying at once got its refusal only with its SYN
// retransmission, a second later (measured in the e2e: 1,005 ms). A RST is not rate-limited. UDP
// has only ICMP (a connected socket gets ECONNREFUSED). One chain, not buckets: the set is usually small
// (a Service between creation and its first ready pod), and one chain more or less is what
// iptables-nft-restore pays for, not rules. The chain is part of the layout whatever the
// services (declared in every full sync, possibly empty), so its hooks always have a target.
// A connection DNATed by the nat rules no longer has the ClusterIP as its destination when it
// reaches filter, so a REJECT rule never refuses a service port that has a DNAT rule.
import { checkPrefix, rejectChain } from './rule-names.ts'
import { restoreSection } from './restore-text.ts'
import { invalidReason, type ProxyServicePort } from './service-port.ts'

/** What the last applied filter section left in the kernel, for the next incremental sync. */
export interface RejectState {
  /** a state built for another prefix is ignored (full sync) */
  readonly chainPrefix: string
  /** P-REJECT's rule lines exactly as written */
  readonly text: string
  /** how many rules P-REJECT holds (the periodic check compares it with the kernel's) */
  readonly rules: number
}

export interface RejectOptions {
  /** chain name prefix, as for the nat rules */
  chainPrefix: string
  /**
   * Our filter chains that exist now (`parseChains(iptablesSave, prefix, 'filter')`): those not in
   * the layout are flushed and deleted, and P-REJECT is written when it is missing.
   */
  existingChains?: Iterable<string>
  /** extra lines placed before COMMIT, e.g. `filterHookFixRules(...)` */
  extraRules?: string[]
  /** the state of the last applied sync: P-REJECT is rewritten only when its rules changed */
  previous?: RejectState
}

export interface RejectRules {
  /** the `iptables-restore --noflush` section for table filter; '' when there is nothing to change */
  text: string
  /** the chains of the layout: P-REJECT */
  chains: string[]
  /** the chains this section declares (flushes) and fills */
  written: string[]
  /** chains the section flushes and deletes (-X) */
  deleted: string[]
  /** the service ports refused, sorted, one rule each */
  rejected: ProxyServicePort[]
  /** pass as `previous` to the next build once `text` is applied */
  state: RejectState
}

const cmp = (a: string, b: string): number => a < b ? -1 : a > b ? 1 : 0

/**
 * The filter section refusing `ports` (the nat rules' `noEndpoints`). Invalid service ports are
 * left out (the nat rules report them), as are repeats of a ClusterIP, port and protocol already
 * refused. Deterministic: unchanged input gives byte-identical text.
 */
export function buildRejectRules (ports: readonly ProxyServicePort[], opts: RejectOptions): RejectRules {
  const prefix = opts.chainPrefix
  checkPrefix(prefix)
  const chain = rejectChain(prefix)
  const previous = opts.previous?.chainPrefix === prefix ? opts.previous : undefined

  const rejected = ports.filter((s) => invalidReason(s) == null)
    .sort((a, b) => cmp(a.key, b.key) || a.port - b.port || cmp(a.protocol, b.protocol))
  const seen = new Set<string>()
  const lines: string[] = []
  const kept: ProxyServicePort[] = []
  for (const s of rejected) {
    const id = `${s.clusterIP}:${s.port}/${s.protocol}`
    if (seen.has(id)) continue
    seen.add(id)
    kept.push(s)
    const [proto, reply] = s.protocol === 'TCP' ? ['tcp', 'tcp-reset'] : ['udp', 'icmp-port-unreachable']
    lines.push(`-A ${chain} -d ${s.clusterIP}/32 -p ${proto} -m comment --comment "${s.key} has no endpoints" -m ${proto} --dport ${s.port} -j REJECT --reject-with ${reply}\n`)
  }
  const text = lines.join('')

  const existing = opts.existingChains == null ? undefined : new Set(opts.existingChains)
  const deleted = [...existing ?? []].filter((c) => c.startsWith(`${prefix}-`) && c !== chain).sort(cmp)
  const write = previous?.text !== text || (existing != null && !existing.has(chain))
  const written = write ? [chain] : []
  const section = restoreSection({ table: 'filter', written, deleted, rules: write ? [text] : [], extra: opts.extraRules ?? [] })
  return { text: section, chains: [chain], written, deleted, rejected: kept, state: { chainPrefix: prefix, text, rules: kept.length } }
}
