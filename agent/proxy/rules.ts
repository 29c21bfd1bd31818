// Pure generation of the ClusterIP proxy's netfilter rules (like kube-proxy's iptables mode,
// pkg/proxy/iptables): the whole `nat` table state of the mesh as one `iptables-restore
// --noflush` payload, plus parsing of `iptables-save` text for stale chains, the PREROUTING /
// OUTPUT hooks and clean shutdown. Nothing here touches the host; the caller runs the commands.
//
// Layout (prefix P, e.g. EDGEMESH):
//   P-SERVICES                      one rule per programmed service port: -d ip/32 -p proto --dport
//   P-SVC-<hash>                    per service port: random spread over P-SEP-* (dnat mode) or
//                                   -j REDIRECT --to-ports <redirectPort> (redirect mode)
//   P-SEP-<hash>                    per endpoint: -j DNAT --to-destination ip:port
// Hooks (`jumpRules`): `-I PREROUTING 1` and `-I OUTPUT 1` jump to P-SERVICES; they are kept out
// of the main payload (re-inserting them on every sync would duplicate them) and repaired with
// `jumpFixRules` when `needsJumpFix` says kube-proxy's KUBE-SERVICES got in front after a reboot.
//
// Services without endpoints (dnat mode): REJECT belongs to the filter table, so the nat payload
// emits nothing for them and `NatRules.noEndpoints` lists them for the caller's filter rules.
// Not emitted: hairpin masquerade (a pod reaching itself through its Service), NodePorts,
// IPv6 (ip6tables is a separate table set; non-IPv4 addresses are reported in `skipped`).
import { hash } from 'node:crypto'
import { isIPv4 } from 'node:net'

export type ProxyMode = 'dnat' | 'redirect'
export type ProxyProtocol = 'TCP' | 'UDP'

export interface ProxyService {
  /** 'namespace/name' */
  key: string
  clusterIP: string
  port: number
  protocol: ProxyProtocol
  mode: ProxyMode
  /** 'ip:port' (dnat mode); ignored in redirect mode */
  endpoints: string[]
  /** the agent's local listener for tunnel-bound traffic (redirect mode) */
  redirectPort?: number
  /** ClientIP session affinity timeout (dnat mode); unset or 0 = none */
  affinitySeconds?: number
}

export interface RuleOptions {
  /** chain name prefix, e.g. 'EDGEMESH'; at most 15 characters so hashed names fit in 28 */
  chainPrefix: string
  /** chains that exist now (`parseChains(iptablesSave, prefix)`): the unused ones are flushed and deleted */
  existingChains?: Iterable<string>
  /** extra lines placed before COMMIT, e.g. `jumpFixRules(...)`, so a repair rides in the same atomic restore */
  extraRules?: string[]
}

export interface Skipped { key: string, reason: string }

export interface NatRules {
  /** the complete `iptables-restore --noflush` input for table nat */
  text: string
  /** chains the payload declares and uses, SERVICES first */
  chains: string[]
  /** stale chains the payload deletes (-X) */
  deleted: string[]
  /** dnat services without endpoints: nothing in nat, the caller programs REJECT in filter */
  noEndpoints: ProxyService[]
  /** services or endpoints left out because they are invalid (not IPv4, bad port, duplicate, ...) */
  skipped: Skipped[]
}

/** iptables chain names are at most 28 characters (XT_EXTENSION_MAXNAMELEN - 1). */
export const MAX_CHAIN_LEN = 28
const KIND_LEN = '-SVC-'.length
const MIN_HASH_LEN = 8
const JUMP_COMMENT = 'edgemesh service portals'
const HOOK_CHAINS = ['PREROUTING', 'OUTPUT'] as const

export function servicesChain (prefix: string): string { return `${prefix}-SERVICES` }

function checkPrefix (prefix: string): number {
  if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(prefix)) throw new Error(`invalid chain prefix ${JSON.stringify(prefix)}`)
  const hashLen = Math.min(16, MAX_CHAIN_LEN - prefix.length - KIND_LEN)
  if (hashLen < MIN_HASH_LEN) throw new Error(`chain prefix ${prefix} is too long (max ${MAX_CHAIN_LEN - KIND_LEN - MIN_HASH_LEN} characters)`)
  return hashLen
}

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
/** The first `len` (≤ 16) RFC 4648 base32 characters of sha256(s), like kube-proxy's chain hashes. */
function hash32 (s: string, len: number): string {
  const d = hash('sha256', s, 'buffer')
  let out = ''
  // 10 bytes = 16 base32 characters, as two 40-bit groups
  for (let g = 0; g < 2 && out.length < len; g++) {
    const o = g * 5
    const hi = d[o]!
    const lo = ((d[o + 1]! << 24) | (d[o + 2]! << 16) | (d[o + 3]! << 8) | d[o + 4]!) >>> 0
    const v = hi * 2 ** 32 + lo // 40 bits, exact in a double
    for (let k = 7; k >= 0 && out.length < len; k--) out += B32[Math.floor(v / 2 ** (5 * k)) % 32]
  }
  return out
}

/**
 * Chain names are recomputed on every sync for mostly the same services: a bounded memo of
 * name inputs → names (deterministic, so the functions stay pure as seen from outside).
 */
const NAME_CACHE_MAX = 250_000
const nameCache = new Map<string, string>()
function cachedName (input: string, make: () => string): string {
  let name = nameCache.get(input)
  if (name == null) {
    if (nameCache.size >= NAME_CACHE_MAX) nameCache.clear()
    name = make()
    nameCache.set(input, name)
  }
  return name
}

/** The stable name of a service port's chain: prefix-SVC-<hash of key, port, protocol>. */
export function serviceChainName (prefix: string, key: string, port: number, protocol: ProxyProtocol): string {
  return svcName(prefix, checkPrefix(prefix), key, port, protocol)
}
function svcName (prefix: string, len: number, key: string, port: number, protocol: string): string {
  const input = `${key}:${port}/${protocol}`
  return cachedName(`${prefix}-SVC-${input}`, () => `${prefix}-SVC-${hash32(input, len)}`)
}

/** The stable name of an endpoint's chain: prefix-SEP-<hash of key, port, protocol, endpoint>. */
export function endpointChainName (prefix: string, key: string, port: number, protocol: ProxyProtocol, endpoint: string): string {
  return sepName(prefix, checkPrefix(prefix), key, port, protocol, endpoint)
}
function sepName (prefix: string, len: number, key: string, port: number, protocol: string, endpoint: string): string {
  const input = `${key}:${port}/${protocol}->${endpoint}`
  return cachedName(`${prefix}-SEP-${input}`, () => `${prefix}-SEP-${hash32(input, len)}`)
}

// keys end up inside a quoted --comment: no quotes, backslashes, whitespace or control characters
const KEY_RE = /^[A-Za-z0-9._-]*\/[A-Za-z0-9._-]+$/
const validPort = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535
const cmp = (a: string, b: string): number => a < b ? -1 : a > b ? 1 : 0

function parseEndpoint (ep: string): string | undefined {
  const i = ep.lastIndexOf(':')
  if (i <= 0) return undefined
  const ip = ep.slice(0, i)
  const portText = ep.slice(i + 1)
  if (!isIPv4(ip) || !/^[0-9]{1,5}$/.test(portText)) return undefined
  const port = Number(portText)
  return validPort(port) ? `${ip}:${port}` : undefined
}

function validate (s: ProxyService): string | undefined {
  if (typeof s.key !== 'string' || !KEY_RE.test(s.key)) return 'invalid key'
  if (!isIPv4(s.clusterIP)) return 'clusterIP is not IPv4'
  if (!validPort(s.port)) return 'invalid port'
  if (s.protocol !== 'TCP' && s.protocol !== 'UDP') return 'unsupported protocol'
  if (s.mode === 'redirect') return validPort(s.redirectPort) ? undefined : 'redirect mode without a valid redirectPort'
  if (s.mode !== 'dnat') return 'unknown mode'
  const a = s.affinitySeconds
  if (a != null && a !== 0 && !(Number.isInteger(a) && a > 0 && a <= 86_400)) return 'invalid affinitySeconds'
  return undefined
}

/**
 * The nat table payload for `services`, deterministic: services sorted by key, port, protocol and
 * endpoints sorted, so unchanged input gives byte-identical text.
 */
export function buildRules (services: readonly ProxyService[], opts: RuleOptions): NatRules {
  const prefix = opts.chainPrefix
  const hashLen = checkPrefix(prefix)
  const top = servicesChain(prefix)
  const sorted = [...services].sort((a, b) => cmp(a.key, b.key) || a.port - b.port || cmp(a.protocol, b.protocol))

  const chains: string[] = [top]
  const used = new Set<string>(chains)
  const serviceRules: string[] = []
  const rules: string[] = []
  const noEndpoints: ProxyService[] = []
  const skipped: Skipped[] = []

  for (const s of sorted) {
    const bad = validate(s)
    if (bad != null) { skipped.push({ key: String(s.key), reason: bad }); continue }
    const svcChain = svcName(prefix, hashLen, s.key, s.port, s.protocol)
    if (used.has(svcChain)) { skipped.push({ key: s.key, reason: `duplicate ${s.port}/${s.protocol}` }); continue }
    const proto = s.protocol === 'TCP' ? 'tcp' : 'udp'
    const comment = `"${s.key}:${s.port}"`

    let endpoints: string[] = []
    if (s.mode === 'dnat') {
      const set = new Set<string>()
      for (const ep of s.endpoints) {
        const norm = typeof ep === 'string' ? parseEndpoint(ep) : undefined
        if (norm == null) skipped.push({ key: s.key, reason: `invalid endpoint ${JSON.stringify(ep)}` })
        else set.add(norm)
      }
      endpoints = [...set].sort(cmp)
      if (endpoints.length === 0) { noEndpoints.push(s); continue }
    }

    used.add(svcChain)
    chains.push(svcChain)
    serviceRules.push(`-A ${top} -d ${s.clusterIP}/32 -p ${proto} -m ${proto} --dport ${s.port} -m comment --comment ${comment} -j ${svcChain}`)

    if (s.mode === 'redirect') {
      rules.push(`-A ${svcChain} -p ${proto} -m comment --comment ${comment} -j REDIRECT --to-ports ${s.redirectPort!}`)
      continue
    }

    const affinity = s.affinitySeconds != null && s.affinitySeconds > 0 ? s.affinitySeconds : 0
    const sepChains = endpoints.map((ep) => sepName(prefix, hashLen, s.key, s.port, s.protocol, ep))
    for (const sep of sepChains) { used.add(sep); chains.push(sep) }
    const n = endpoints.length
    if (affinity > 0) {
      // kube-proxy: a client seen recently keeps its endpoint, checked before the random spread
      for (let i = 0; i < n; i++) {
        rules.push(`-A ${svcChain} -m comment --comment "${s.key}:${s.port} -> ${endpoints[i]!}" -m recent --name ${sepChains[i]!} --mask 255.255.255.255 --rsource --rcheck --seconds ${affinity} --reap -j ${sepChains[i]!}`)
      }
    }
    for (let i = 0; i < n; i++) {
      const spread = i < n - 1 ? ` -m statistic --mode random --probability ${(1 / (n - i)).toFixed(10)}` : ''
      rules.push(`-A ${svcChain} -m comment --comment "${s.key}:${s.port} -> ${endpoints[i]!}"${spread} -j ${sepChains[i]!}`)
    }
    for (let i = 0; i < n; i++) {
      const recent = affinity > 0 ? ` -m recent --name ${sepChains[i]!} --mask 255.255.255.255 --rsource --set` : ''
      rules.push(`-A ${sepChains[i]!} -p ${proto} -m comment --comment ${comment}${recent} -m ${proto} -j DNAT --to-destination ${endpoints[i]!}`)
    }
  }

  const deleted = [...new Set(opts.existingChains ?? [])]
    .filter((c) => c.startsWith(`${prefix}-`) && !used.has(c))
    .sort(cmp)

  // (no push(...big) spreads: 100k+ arguments would overflow the stack)
  const decl: string[] = ['*nat']
  for (const c of chains) decl.push(`:${c} - [0:0]`)
  // declaring a chain in a restore payload flushes it, so stale chains are emptied before -X
  for (const c of deleted) decl.push(`:${c} - [0:0]`)
  const tail: string[] = []
  for (const c of deleted) tail.push(`-X ${c}`)
  for (const l of opts.extraRules ?? []) tail.push(l)
  tail.push('COMMIT', '')
  const text = [decl, serviceRules, rules, tail].filter((a) => a.length > 0).map((a) => a.join('\n')).join('\n')
  return { text, chains, deleted, noEndpoints, skipped }
}

// ---- iptables-save parsing ----

interface SavedTable { chains: string[], rules: string[] }

/** Tables of `iptables-save` text: chain names and `-A` rules (without counters), in order. */
function parseSave (saveText: string): Map<string, SavedTable> {
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
      const rule = line.replace(/^\[\d+:\d+\]\s+/, '') // iptables-save -c counters
      if (rule.startsWith('-A ')) cur.rules.push(rule)
    }
  }
  return tables
}

/** Splits a rule into words, honoring double quotes (comments). */
function words (rule: string): string[] {
  const out: string[] = []
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g
  for (let m = re.exec(rule); m != null; m = re.exec(rule)) out.push(m[1] ?? m[2]!)
  return out
}

function ruleChain (rule: string): string { return words(rule)[1] ?? '' }
function ruleTarget (rule: string): string | undefined {
  const w = words(rule)
  for (let i = 2; i < w.length - 1; i++) if (w[i] === '-j' || w[i] === '-g') return w[i + 1]
  return undefined
}

/** Our chains (`<prefix>-*`) in `table` (default nat) of `iptables-save` text, sorted. */
export function parseChains (saveText: string, prefix: string, table = 'nat'): string[] {
  const t = parseSave(saveText).get(table)
  if (t == null) return []
  return [...new Set(t.chains.filter((c) => c.startsWith(`${prefix}-`)))].sort(cmp)
}

/** The hooks of the mesh's SERVICES chain at the top of PREROUTING and OUTPUT (nat), restore syntax. */
export function jumpRules (prefix: string): string[] {
  checkPrefix(prefix)
  return HOOK_CHAINS.map((c) => `-I ${c} 1 -m comment --comment "${JUMP_COMMENT}" -j ${servicesChain(prefix)}`)
}

function hookNeedsFix (t: SavedTable | undefined, chain: string, prefix: string): boolean {
  const first = t?.rules.find((r) => ruleChain(r) === chain)
  return first == null || ruleTarget(first) !== servicesChain(prefix)
}

/** True when our jump is missing from, or not the first rule of, nat PREROUTING or OUTPUT. */
export function needsJumpFix (saveText: string, prefix: string): boolean {
  const t = parseSave(saveText).get('nat')
  return HOOK_CHAINS.some((c) => hookNeedsFix(t, c, prefix))
}

/**
 * Restore lines that put our jumps first again: for each hook chain that needs it, delete our
 * existing jumps there (as saved, so the specs match) and insert the jump at position 1.
 * Empty when nothing needs fixing. Meant for `RuleOptions.extraRules`.
 */
export function jumpFixRules (saveText: string, prefix: string): string[] {
  const t = parseSave(saveText).get('nat')
  const top = servicesChain(prefix)
  const jumps = jumpRules(prefix)
  const out: string[] = []
  HOOK_CHAINS.forEach((chain, i) => {
    if (!hookNeedsFix(t, chain, prefix)) return
    for (const r of t?.rules ?? []) {
      if (ruleChain(r) === chain && ruleTarget(r) === top) out.push(`-D${r.slice(2)}`)
    }
    out.push(jumps[i]!)
  })
  return out
}

/**
 * `iptables-restore --noflush` text that removes the mesh from every table in `saveText`: deletes
 * the rules of other chains that jump to ours, flushes our chains and deletes them. Empty string
 * when there is nothing of ours.
 */
export function cleanupRules (saveText: string, prefix: string): string {
  checkPrefix(prefix)
  const ours = (c: string | undefined): boolean => c != null && c.startsWith(`${prefix}-`)
  const out: string[] = []
  const tables = [...parseSave(saveText)].sort((a, b) => cmp(a[0], b[0]))
  for (const [name, t] of tables) {
    const chains = [...new Set(t.chains.filter(ours))].sort(cmp)
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
