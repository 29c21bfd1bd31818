// The text of one table's section of an `iptables-restore --noflush` payload. Declaring a chain
// flushes it (and creates it when missing), so a written chain is replaced whole and a stale chain
// is emptied before its -X. Sections of several tables concatenate into one payload that a single
// iptables-restore applies in order.

export interface TableChanges {
  table: 'nat' | 'filter'
  /** chains this section replaces: declared, then filled by `rules` */
  written: readonly string[]
  /** chains flushed and deleted (-X), after the rules (nothing of the new layout references them) */
  deleted: readonly string[]
  /** the rules of the written chains, each ending in '\n' (whole chains, joined) */
  rules: readonly string[]
  /** lines placed last, before COMMIT, e.g. hook repairs (without '\n') */
  extra: readonly string[]
}

/** The section, or '' when it would change nothing. */
export function restoreSection (c: TableChanges): string {
  if (c.written.length === 0 && c.deleted.length === 0 && c.extra.length === 0) return ''
  let head = `*${c.table}\n`
  for (const chain of c.written) head += `:${chain} - [0:0]\n`
  for (const chain of c.deleted) head += `:${chain} - [0:0]\n`
  let tail = ''
  for (const chain of c.deleted) tail += `-X ${chain}\n`
  for (const l of c.extra) tail += `${l}\n`
  tail += 'COMMIT\n'
  return head + c.rules.join('') + tail
}
