// The proxy's netfilter state as one `iptables-restore --noflush` payload per sync: the nat
// section (nat-rules.ts: DNAT of every service port with a target, hairpin masquerade) followed by
// the filter section (reject-rules.ts: REJECT of every service port without one), each with its
// hook repairs (hooks.ts). Also the public face of the rule generation: what the proxy and the
// tests use is re-exported here. Pure: the caller runs the commands (iptables.ts).
import { buildRules, type NatRules, type RuleState } from './nat-rules.ts'
import { buildRejectRules, type RejectRules, type RejectState } from './reject-rules.ts'
import type { ProxyServicePort } from './service-port.ts'

export { MAX_CHAIN_LEN, HAIRPIN_MARK, affinityListName, bucketChainName, postroutingChain, rejectChain, servicesChain } from './rule-names.ts'
export type { Balance, ProxyProtocol, ProxyServicePort, Skipped } from './service-port.ts'
export { bucketOf, buildRules, type NatRules, type RuleOptions, type RuleState } from './nat-rules.ts'
export { buildRejectRules, type RejectOptions, type RejectRules, type RejectState } from './reject-rules.ts'
export { filterHookFixRules, filterJumpRules, hookFixRules, jumpFixRules, jumpRules, needsJumpFix, type FilterHookChain, type HookChain } from './hooks.ts'
export { parseChains } from './save-text.ts'
export { cleanupRules } from './cleanup-rules.ts'

/** What the last applied sync payload left in both tables. Pass it on only once `text` was applied. */
export interface SyncRuleState { readonly nat: RuleState, readonly reject: RejectState }

export interface SyncRuleOptions {
  chainPrefix: string
  /** hairpin masquerade (default true), see `RuleOptions.hairpin` */
  hairpin?: boolean
  /** our chains that exist now per table (`parseChains`), for a full sync: stale ones are deleted */
  existing?: { nat: Iterable<string>, filter: Iterable<string> }
  /** nat hook repairs (`hookFixRules`), placed in the nat section */
  natExtraRules?: string[]
  /** filter hook repairs (`filterHookFixRules`), placed in the filter section */
  filterExtraRules?: string[]
  /** the state of the last applied sync: only changed chains are rewritten (incremental sync) */
  previous?: SyncRuleState
}

export interface SyncRules {
  /** the whole payload: the nat section, then the filter section; '' when nothing changes */
  text: string
  nat: NatRules
  reject: RejectRules
  state: SyncRuleState
}

/**
 * Both tables for `services` in one payload. nat comes first: iptables-restore commits each table
 * on its own, and a service port that gains its first endpoint must be DNATed before its REJECT
 * goes (a DNATed packet no longer matches the REJECT's ClusterIP), or a connection in between
 * would leave un-NATed and hang. The other way round (its last endpoint goes) a connection in
 * that instant leaves un-NATed, and its retransmission, still a new connection, is refused.
 */
export function buildSyncRules (services: readonly ProxyServicePort[], opts: SyncRuleOptions): SyncRules {
  const nat = buildRules(services, {
    chainPrefix: opts.chainPrefix, hairpin: opts.hairpin, existingChains: opts.existing?.nat,
    extraRules: opts.natExtraRules, previous: opts.previous?.nat
  })
  const reject = buildRejectRules(nat.noEndpoints, {
    chainPrefix: opts.chainPrefix, existingChains: opts.existing?.filter,
    extraRules: opts.filterExtraRules, previous: opts.previous?.reject
  })
  return { text: nat.text + reject.text, nat, reject, state: { nat: nat.state, reject: reject.state } }
}
