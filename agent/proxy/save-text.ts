// Reading what iptables prints: `iptables-save` text (per table: chains and `-A` rules) and
// `iptables -S` listings, with counters dropped and words split as iptables quotes them.

export interface SavedTable { chains: string[], rules: string[] }

/** Tables of `iptables-save` text: chain names and `-A` rules (without counters), in order. */
export function parseSave (saveText: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>()
  let cur: SavedTable | undefined
  for (const raw of saveText.split('\n')) {
    const line = raw.trim()
    if (line.startsWith('*')) {
      const name = line.slice(1)
      cur = tables.get(name) ?? { chains: [], rules: [] }
      tables.set(name, cur)
    } else if (cur == null || line === '' || line.startsWith('#')) {
      continue
    } else if (line === 'COMMIT') {
      cur = undefined
    } else if (line.startsWith(':')) {
      const name = line.slice(1).split(/\s+/)[0]
      if (name != null && name !== '') cur.chains.push(name)
    } else {
      const rule = stripCounters(line)
      if (rule.startsWith('-A ')) cur.rules.push(rule)
    }
  }
  return tables
}

/** A rule line without counters: `[p:b] -A ...` (iptables-save -c) or `-A chain ... -c p b` (iptables -S -v). */
export function stripCounters (line: string): string {
  return line.replace(/^\[\d+:\d+\]\s+/, '').replace(/\s+-c \d+ \d+$/, '')
}

/** The `-A <chain> ...` rules of an `iptables -S <chain>` listing, without counters. */
export function listedRules (listing: string, chain: string): string[] {
  const rules: string[] = []
  for (const raw of listing.split('\n')) {
    const line = stripCounters(raw.trim())
    if (line.startsWith(`-A ${chain} `)) rules.push(line)
  }
  return rules
}

/** Splits a rule into words, honoring double quotes (comments). */
function words (rule: string): string[] {
  const out: string[] = []
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g
  for (let m = re.exec(rule); m != null; m = re.exec(rule)) out.push(m[1] ?? m[2]!)
  return out
}

/** The chain of an `-A <chain> ...` rule. */
export function ruleChain (rule: string): string { return words(rule)[1] ?? '' }

/** The jump (-j) or goto (-g) target of a rule, if any. */
export function ruleTarget (rule: string): string | undefined {
  const w = words(rule)
  for (let i = 2; i < w.length - 1; i++) if (w[i] === '-j' || w[i] === '-g') return w[i + 1]
  return undefined
}

/** Our chains (`<prefix>-*`) in `table` (default nat) of `iptables-save` text, sorted. */
export function parseChains (saveText: string, prefix: string, table = 'nat'): string[] {
  const t = parseSave(saveText).get(table)
  if (t == null) return []
  return [...new Set(t.chains.filter((c) => c.startsWith(`${prefix}-`)))].sort()
}
