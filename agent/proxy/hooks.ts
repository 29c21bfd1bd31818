// The hooks: the rules in the built-in chains that jump to the mesh's chains, kept first in
// their chain (kube-proxy or a CNI restarting after us must not shadow them) and repaired on
// every sync from a cheap `iptables -t <table> -S <chain>` listing, or from iptables-save text.
//   nat     PREROUTING, OUTPUT  -> P-SERVICES      (DNAT of ClusterIP traffic)
//           POSTROUTING         -> P-POSTROUTING   (hairpin masquerade)
//   filter  INPUT, FORWARD, OUTPUT, new connections only -> P-REJECT (service ports without
//           endpoints; kube-proxy hooks its KUBE-SERVICES filter chain the same way, from FORWARD
//           and OUTPUT: pods' traffic is forwarded, the node's own is output; INPUT covers a
//           node that holds ClusterIPs as local addresses)
// The hooks stay out of the chains' payload: re-inserting them on every sync would duplicate them.
import { checkPrefix, postroutingChain, rejectChain, servicesChain } from './rule-names.ts'
import { listedRules, parseSave, ruleChain, ruleTarget } from './save-text.ts'

const NAT_HOOKS = ['PREROUTING', 'OUTPUT', 'POSTROUTING'] as const
const FILTER_HOOKS = ['INPUT', 'FORWARD', 'OUTPUT'] as const
/** A nat chain the mesh hooks into. */
export type HookChain = typeof NAT_HOOKS[number]
/** A filter chain the mesh hooks into. */
export type FilterHookChain = typeof FILTER_HOOKS[number]
type Table = 'nat' | 'filter'

/** Our chain hooked from `hook` in `table`. */
function hookTarget (table: Table, hook: string, prefix: string): string {
  if (table === 'filter') return rejectChain(prefix)
  return hook === 'POSTROUTING' ? postroutingChain(prefix) : servicesChain(prefix)
}

/** The hook of our chain at the top of `hook`, restore syntax. */
function jumpRule (table: Table, hook: string, prefix: string): string {
  const target = hookTarget(table, hook, prefix)
  if (table === 'filter') return `-I ${hook} 1 -m conntrack --ctstate NEW -m comment --comment "edgemesh service ports without endpoints" -j ${target}`
  const comment = hook === 'POSTROUTING' ? 'edgemesh postrouting rules' : 'edgemesh service portals'
  return `-I ${hook} 1 -m comment --comment "${comment}" -j ${target}`
}

/**
 * The hooks of our nat chains at the top of PREROUTING, OUTPUT (SERVICES) and POSTROUTING
 * (P-POSTROUTING), restore syntax.
 */
export function jumpRules (prefix: string): string[] {
  checkPrefix(prefix)
  return NAT_HOOKS.map((c) => jumpRule('nat', c, prefix))
}

/** The hooks of P-REJECT at the top of filter INPUT, FORWARD and OUTPUT, restore syntax. */
export function filterJumpRules (prefix: string): string[] {
  checkPrefix(prefix)
  return FILTER_HOOKS.map((c) => jumpRule('filter', c, prefix))
}

/** Restore lines that make our jump the first of the `-A <hook>` rules given; [] when it is. */
function fixHook (table: Table, hook: string, rules: readonly string[], prefix: string): string[] {
  const top = hookTarget(table, hook, prefix)
  const ofHook = rules.filter((r) => ruleChain(r) === hook)
  if (ofHook.length > 0 && ruleTarget(ofHook[0]!) === top) return []
  const out: string[] = []
  // delete them as listed, so the specs match; then one jump at position 1
  for (const r of ofHook) if (ruleTarget(r) === top) out.push(`-D${r.slice(2)}`)
  out.push(jumpRule(table, hook, prefix))
  return out
}

/**
 * From `iptables -t nat -S <hook>` output (`-P PREROUTING ACCEPT`, `-A PREROUTING ...`; also
 * OUTPUT and POSTROUTING): the restore lines that make our jump the first rule of `hook` (delete
 * our jumps as listed, insert at position 1), or [] when it already is. Much cheaper than a full
 * iptables-save on every sync.
 */
export function hookFixRules (hook: HookChain, listing: string, prefix: string): string[] {
  checkPrefix(prefix)
  if (!(NAT_HOOKS as readonly string[]).includes(hook)) throw new Error(`not a hook chain: ${String(hook)}`)
  return fixHook('nat', hook, listedRules(listing, hook), prefix)
}

/** `hookFixRules` for the filter hooks (INPUT, FORWARD, OUTPUT), from `iptables -t filter -S <hook>`. */
export function filterHookFixRules (hook: FilterHookChain, listing: string, prefix: string): string[] {
  checkPrefix(prefix)
  if (!(FILTER_HOOKS as readonly string[]).includes(hook)) throw new Error(`not a filter hook chain: ${String(hook)}`)
  return fixHook('filter', hook, listedRules(listing, hook), prefix)
}

/**
 * The repairs of every hook of `table` (nat by default) from `iptables-save` text: empty when
 * nothing needs fixing. Meant for the extra rules of that table's section.
 */
export function jumpFixRules (saveText: string, prefix: string, table: Table = 'nat'): string[] {
  checkPrefix(prefix)
  const rules = parseSave(saveText).get(table)?.rules ?? []
  const hooks: readonly string[] = table === 'nat' ? NAT_HOOKS : FILTER_HOOKS
  return hooks.flatMap((hook) => fixHook(table, hook, rules, prefix))
}

/** True when one of our jumps in `table` (nat by default) is missing or not the first rule of its chain. */
export function needsJumpFix (saveText: string, prefix: string, table: Table = 'nat'): boolean {
  return jumpFixRules(saveText, prefix, table).length > 0
}
