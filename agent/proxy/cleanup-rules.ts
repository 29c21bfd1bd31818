// Removing the mesh from netfilter on a clean shutdown: from `iptables-save` text of any tables,
// the restore payload that deletes the rules of other chains jumping to ours, then flushes and
// deletes our chains.
import { checkPrefix } from './rule-names.ts'
import { parseSave, ruleChain, ruleTarget } from './save-text.ts'

/**
 * `iptables-restore --noflush` text that removes the mesh from every table in `saveText`: deletes
 * the rules of other chains that jump to ours, flushes our chains and deletes them. Empty string
 * when there is nothing of ours.
 */
export function cleanupRules (saveText: string, prefix: string): string {
  checkPrefix(prefix)
  const ours = (c: string | undefined): boolean => c != null && c.startsWith(`${prefix}-`)
  const out: string[] = []
  const tables = parseSave(saveText)
  for (const name of [...tables.keys()].sort()) {
    const t = tables.get(name)!
    const chains = [...new Set(t.chains.filter(ours))].sort()
    const hooks = t.rules.filter((r) => !ours(ruleChain(r)) && ours(ruleTarget(r)))
    if (chains.length === 0 && hooks.length === 0) continue
    out.push(`*${name}`)
    for (const c of chains) out.push(`:${c} - [0:0]`)
    for (const r of hooks) out.push(`-D${r.slice(2)}`)
    for (const c of chains) out.push(`-X ${c}`)
    out.push('COMMIT')
  }
  return out.length === 0 ? '' : out.join('\n') + '\n'
}
