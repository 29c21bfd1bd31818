// Pure generation of the ClusterIP proxy's netfilter rules: the `nat` table state of the mesh as
// one `iptables-restore --noflush` payload (full, or only what changed since the last sync), plus
// parsing of `iptables-save` / `iptables -S` text for stale chains, the PREROUTING / OUTPUT /
// POSTROUTING hooks and clean shutdown. Nothing here touches the host; the caller runs the commands.
//
// Layout (prefix P, e.g. EDGEMESH). Very few chains on purpose: iptables-nft-restore gets
// superlinear in the number of chains (FINDINGS.md), so there is no chain per Service or endpoint.
//   P-SERVICES   up to 256 rules, one per non-empty bucket, in bucket order:
//                  -d 0.0.0.<b>/0.0.0.255 -j P-B<bbb>
//                The bucket is the low byte of the ClusterIP (a non-contiguous mask): uniform
//                whatever the service CIDR, and a Service keeps its bucket as others come and go.
//   P-B<bbb>     every service port whose ClusterIP ends in .<b>, sorted by (key, port, protocol);
//                each rule carries the full service match and DNATs to one target:
//                  -d <clusterIP>/32 -p tcp -m tcp --dport <port> [pick] [affinity] -j DNAT ...
//                preceded, per service port, by one hairpin mark per direct endpoint IP:
//                  -s <endpoint ip>/32 -d <clusterIP>/32 -p tcp -m tcp --dport <port> -j MARK --set-xmark 0x200000/0x200000
//   P-POSTROUTING  -m mark --mark 0x200000/0x200000 -j MASQUERADE
// A service port's targets are its direct endpoints (sorted, weight 1 each) and then the agent's
// listener (weight agentSlots). Round robin uses the kernel's exact nth counters, random uses
// kube-proxy's probabilities; ClientIP affinity uses one `recent` list per target.
// Hairpin: a pod calling a Service that DNATs back to the pod itself would get the packet from
// its own address (dropped as a martian, and the reply would bypass the node's conntrack anyway),
// so such connections are marked (MARK does not terminate; bit 0x200000, not kube-proxy's 0x4000,
// so neither masquerades the other's traffic) and masqueraded to the node's address. Without a
// chain per endpoint the mark cannot depend on which endpoint the spread picks: a pod calling a
// Service it backs is masqueraded whichever endpoint it lands on (kube-proxy marks only when it
// lands on itself). Agent shares are never marked: the agent dials from the node.
// Hooks (`jumpRules`): `-I PREROUTING 1` and `-I OUTPUT 1` jump to P-SERVICES, `-I POSTROUTING 1`
// to P-POSTROUTING; they are kept out of the main payload (re-inserting them on every sync would
// duplicate them) and repaired with `hookFixRules` (from `iptables -t nat -S <hook>`) or
// `jumpFixRules` (from iptables-save).
//
// Service ports without any target: REJECT belongs to the filter table, so the nat payload emits
// nothing for them and `NatRules.noEndpoints` lists them for the caller's filter rules.
// Not emitted: NodePorts, IPv6 (non-IPv4 addresses are reported in `skipped`).
import { hash } from 'node:crypto'
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

/**
 * What the last applied payload left in the kernel, for the next incremental sync. Only pass it
 * as `previous` once that payload was applied: after a failed restore, sync in full.
 */
export interface RuleState {
  /** a state built for another prefix is ignored (full sync) */
  readonly chainPrefix: string
  /** non-empty bucket → its chain's rule lines exactly as written */
  readonly buckets: ReadonlyMap<number, string>
  /** the POSTROUTING chain's rule lines exactly as written */
  readonly postrouting: string
}

export interface RuleOptions {
  /** chain name prefix, e.g. 'EDGEMESH'; at most 16 characters so `<prefix>-POSTROUTING` fits in 28 */
  chainPrefix: string
  /**
   * Hairpin masquerade (default true): mark connections from a direct endpoint to its own service
   * port and masquerade them in P-POSTROUTING. When false the bucket chains carry no marks and
   * P-POSTROUTING (still declared and hooked) is empty.
   */
  hairpin?: boolean
  /**
   * Our chains that exist now (`parseChains(iptablesSave, prefix)`): those not in the new layout
   * (an older version's P-SVC-* / P-SEP-*, an emptied bucket) are flushed and deleted, and a
   * layout chain missing from it is written even when `previous` says it is unchanged.
   */
  existingChains?: Iterable<string>
  /** extra lines placed before COMMIT, e.g. `hookFixRules(...)`, so a repair rides in the same atomic restore */
  extraRules?: string[]
  /** the state of the last applied sync: only changed chains are rewritten (incremental sync) */
  previous?: RuleState
}

export interface Skipped { key: string, reason: string }

export interface NatRules {
  /** the `iptables-restore --noflush` input for table nat; '' when there is nothing to change */
  text: string
  /** the chains of the new layout: SERVICES, POSTROUTING, then the buckets in order */
  chains: string[]
  /** the chains this payload declares (flushes) and fills: all of `chains` in a full sync */
  written: string[]
  /** chains the payload flushes and deletes (-X) */
  deleted: string[]
  /** service ports without any target: nothing in nat, the caller may program REJECT in filter */
  noEndpoints: ProxyServicePort[]
  /** service ports or endpoints left out because they are invalid (not IPv4, bad port, duplicate, ...) */
  skipped: Skipped[]
  /** pass as `previous` to the next build once `text` is applied */
  state: RuleState
}

/** iptables chain names are at most 28 characters (XT_EXTENSION_MAXNAMELEN - 1); recent list names are kept within it too. */
export const MAX_CHAIN_LEN = 28
const AFFINITY_KIND = '-A'
const MIN_HASH_LEN = 8
const MAX_AFFINITY_SECONDS = 86_400
// sanity bound: nth --every is a u32, and no Service has a million endpoints
const MAX_AGENT_SLOTS = 1_000_000
const HOOK_CHAINS = ['PREROUTING', 'OUTPUT', 'POSTROUTING'] as const
export type HookChain = typeof HOOK_CHAINS[number]
const POSTROUTING_SUFFIX = '-POSTROUTING'
/** The mark bit of connections to masquerade (hairpin); kube-proxy's is 0x4000. */
export const HAIRPIN_MARK = '0x200000'

export function servicesChain (prefix: string): string { return `${prefix}-SERVICES` }

/** The chain hooked from nat POSTROUTING: the hairpin masquerade. */
export function postroutingChain (prefix: string): string { return `${prefix}${POSTROUTING_SUFFIX}` }

/** The chain of bucket `bucket` (0-255): prefix-B<3-digit bucket>. */
export function bucketChainName (prefix: string, bucket: number): string {
  return `${prefix}-B${String(bucket).padStart(3, '0')}`
}

/** The bucket of an IPv4 ClusterIP: its low byte. */
export function bucketOf (clusterIP: string): number {
  return Number(clusterIP.slice(clusterIP.lastIndexOf('.') + 1))
}

/** Validates the prefix; returns the length of the hashes in recent list names. */
function checkPrefix (prefix: string): number {
  if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(prefix)) throw new Error(`invalid chain prefix ${JSON.stringify(prefix)}`)
  const max = Math.min(MAX_CHAIN_LEN - AFFINITY_KIND.length - MIN_HASH_LEN, MAX_CHAIN_LEN - POSTROUTING_SUFFIX.length)
  if (prefix.length > max) throw new Error(`chain prefix ${prefix} is too long (max ${max} characters)`)
  return Math.min(16, MAX_CHAIN_LEN - prefix.length - AFFINITY_KIND.length)
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
 * Bounded memo, input → output, for work repeated on every sync for mostly the same services
 * (deterministic, so the functions stay pure as seen from outside).
 */
class Memo<V> {
  private readonly map = new Map<string, V>()
  private readonly max: number
  constructor (max: number) { this.max = max }
  get (key: string): V | undefined { return this.map.get(key) }
  set (key: string, value: V): void {
    if (this.map.size >= this.max) this.map.clear()
    this.map.set(key, value)
  }
}

const affinityNames = new Memo<string>(50_000)

/** The recent list of a service port's target: prefix-A<hash of key, port, protocol, target>. */
export function affinityListName (prefix: string, key: string, port: number, protocol: ProxyProtocol, target: string): string {
  return affinityName(prefix, checkPrefix(prefix), key, port, protocol, target)
}
function affinityName (prefix: string, len: number, key: string, port: number, protocol: string, target: string): string {
  const input = `${key}:${port}/${protocol}->${target}`
  const memoKey = `${prefix}\0${input}`
  let name = affinityNames.get(memoKey)
  if (name == null) {
    name = `${prefix}${AFFINITY_KIND}${hash32(input, len)}`
    affinityNames.set(memoKey, name)
  }
  return name
}

// keys are hashed into recent list names and logged: no quotes, backslashes, whitespace or control characters
const KEY_RE = /^[A-Za-z0-9._-]*\/[A-Za-z0-9._-]+$/
const validPort = (p: unknown): p is number => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535
const cmp = (a: string, b: string): number => a < b ? -1 : a > b ? 1 : 0

/** 'ip:port' normalized (no leading zeros in the port), or undefined when it is not IPv4 ip:port. */
function parseEndpoint (ep: unknown): string | undefined {
  if (typeof ep !== 'string') return undefined
  const i = ep.lastIndexOf(':')
  if (i <= 0) return undefined
  const ip = ep.slice(0, i)
  const portText = ep.slice(i + 1)
  if (!isIPv4(ip) || !/^[0-9]{1,5}$/.test(portText)) return undefined
  const port = Number(portText)
  return validPort(port) ? `${ip}:${port}` : undefined
}

function validate (s: ProxyServicePort): string | undefined {
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
function directTargets (s: ProxyServicePort, skipped: Skipped[]): string[] {
  const out: string[] = []
  for (const ep of s.direct) {
    const norm = parseEndpoint(ep)
    if (norm == null) skipped.push({ key: s.key, reason: `invalid endpoint ${JSON.stringify(ep)}` })
    else out.push(norm)
  }
  out.sort(cmp)
  let n = 0 // dedupe in place: sorted, so duplicates are adjacent
  for (let i = 0; i < out.length; i++) if (i === 0 || out[i] !== out[n - 1]) out[n++] = out[i]!
  out.length = n
  return out
}

const probabilities: string[] = []
/** 1/remaining with 10 decimals, like kube-proxy (memoized: the same few values every sync). */
function probability (remaining: number): string {
  return probabilities[remaining] ??= (1 / remaining).toFixed(10)
}

/**
 * The bucket chain rules of one service port (each line ending in '\n'). Each rule sees only the
 * new connections the earlier rules did not take, so with `remaining` = the weight of this and
 * the later targets, picking 1 of every `remaining` (nth) or with probability 1/remaining
 * (random) gives each direct endpoint 1/N; the last target takes what is left, unconditionally.
 */
function portRules (chain: string, s: ProxyServicePort, direct: string[], prefix: string, hashLen: number, hairpin: boolean): string {
  const proto = s.protocol === 'TCP' ? 'tcp' : 'udp'
  const svc = `-d ${s.clusterIP}/32 -p ${proto} -m ${proto} --dport ${s.port}`
  const match = `-A ${chain} ${svc}`
  const slots = s.agentSlots
  const targets = slots > 0 ? [...direct, parseEndpoint(s.agentTarget)!] : direct
  const total = direct.length + slots
  const affinity = s.affinitySeconds != null && s.affinitySeconds > 0 ? s.affinitySeconds : 0
  const lists = affinity > 0 ? targets.map((t) => affinityName(prefix, hashLen, s.key, s.port, s.protocol, t)) : []
  // joined once at the end: a flat string, cheap to concatenate and compare on later syncs
  const out: string[] = []
  // hairpin: a connection from one of the direct endpoints to this service port is marked for
  // P-POSTROUTING's masquerade before any rule DNATs it (the mark does not stop the traversal)
  if (hairpin && direct.length > 0) {
    const seen = new Set<string>()
    for (const ep of direct) {
      const ip = ep.slice(0, ep.lastIndexOf(':'))
      if (seen.has(ip)) continue
      seen.add(ip)
      out.push(`-A ${chain} -s ${ip}/32 ${svc} -j MARK --set-xmark ${HAIRPIN_MARK}/${HAIRPIN_MARK}\n`)
    }
  }
  // a client seen recently keeps its target; checked before the spread (like kube-proxy). --update,
  // not kube-proxy's --rcheck: its rcheck jumps to a per-endpoint chain whose --set refreshes the
  // entry, here the DNAT is direct, so the check itself must refresh it or an active client would
  // be re-balanced every `affinity` seconds
  for (let i = 0; i < lists.length; i++) {
    out.push(`${match} -m recent --name ${lists[i]!} --mask 255.255.255.255 --rsource --update --seconds ${affinity} --reap -j DNAT --to-destination ${targets[i]!}\n`)
  }
  const last = targets.length - 1
  for (let i = 0; i <= last; i++) {
    // only direct endpoints (weight 1, all before the agent group) get a pick match
    const remaining = total - i
    const pick = i === last
      ? ''
      : s.balance === 'round-robin'
        ? ` -m statistic --mode nth --every ${remaining} --packet 0`
        : ` -m statistic --mode random --probability ${probability(remaining)}`
    // after the pick: matches run in order, so the source is recorded only when this rule is chosen
    const record = affinity > 0 ? ` -m recent --name ${lists[i]!} --mask 255.255.255.255 --rsource --set` : ''
    out.push(`${match}${pick}${record} -j DNAT --to-destination ${targets[i]!}\n`)
  }
  return out.join('')
}

interface PortPlan { text: string, empty: boolean, skipped: Skipped[] }

/**
 * Per service port: the inputs it was built from and its rules. Most ports are unchanged between
 * syncs, so their text is reused; the inputs are compared field by field (no ambiguity, and no
 * key string to build and hash per port). One memo per prefix; entries a build did not use are
 * dropped once they outnumber the used ones, so deleted Services do not pile up.
 */
interface CachedPort { input: ProxyServicePort, direct: string[], plan: PortPlan, usedIn: number }
interface PortMemo { byKey: Map<string, CachedPort[]>, size: number, build: number, used: number }
const portMemos = new Map<string, PortMemo>()

function portMemo (prefix: string): PortMemo {
  let memo = portMemos.get(prefix)
  if (memo == null) portMemos.set(prefix, memo = { byKey: new Map(), size: 0, build: 0, used: 0 })
  memo.build++
  memo.used = 0
  return memo
}

function sweep (memo: PortMemo): void {
  if (memo.size <= 2 * memo.used + 1024) return
  for (const [key, ports] of memo.byKey) {
    const kept = ports.filter((c) => c.usedIn === memo.build)
    if (kept.length === 0) memo.byKey.delete(key)
    else if (kept.length < ports.length) memo.byKey.set(key, kept)
    memo.size -= ports.length - kept.length
  }
}

function sameInput (c: CachedPort, s: ProxyServicePort): boolean {
  const i = c.input
  if (i.clusterIP !== s.clusterIP || i.agentSlots !== s.agentSlots || i.agentTarget !== s.agentTarget ||
    i.balance !== s.balance || (i.affinitySeconds ?? 0) !== (s.affinitySeconds ?? 0)) return false
  const d = s.direct
  if (c.direct.length !== d.length) return false
  for (let k = 0; k < d.length; k++) if (c.direct[k] !== d[k]) return false
  return true
}

function planPort (memo: PortMemo, s: ProxyServicePort, chain: string, prefix: string, hashLen: number, hairpin: boolean): PortPlan {
  memo.used++
  let ports = memo.byKey.get(s.key)
  let slot = -1
  if (ports != null) {
    for (let k = 0; k < ports.length; k++) {
      const c = ports[k]!
      if (c.input.port !== s.port || c.input.protocol !== s.protocol) continue
      if (sameInput(c, s)) { c.usedIn = memo.build; return c.plan }
      slot = k
      break
    }
  }
  const skipped: Skipped[] = []
  const direct = directTargets(s, skipped)
  const empty = direct.length + s.agentSlots === 0
  const plan = { text: empty ? '' : portRules(chain, s, direct, prefix, hashLen, hairpin), empty, skipped }
  // a copy of the inputs: the caller may mutate its objects before the next sync
  const entry = { input: { ...s, direct: [] }, direct: s.direct.slice(), plan, usedIn: memo.build }
  if (ports == null) memo.byKey.set(s.key, ports = [])
  if (slot >= 0) {
    ports[slot] = entry
  } else {
    ports.push(entry)
    memo.size++
  }
  return plan
}

/**
 * The nat table payload for `services`, deterministic: service ports sorted by key, port,
 * protocol and endpoints sorted, so unchanged input gives byte-identical text. Without
 * `opts.previous` every chain is written (full sync); with it only the buckets whose rules
 * changed, and SERVICES only when the set of non-empty buckets changed (incremental sync).
 */
export function buildRules (services: readonly ProxyServicePort[], opts: RuleOptions): NatRules {
  const prefix = opts.chainPrefix
  const hashLen = checkPrefix(prefix)
  const top = servicesChain(prefix)
  const post = postroutingChain(prefix)
  const hairpin = opts.hairpin ?? true
  const previous = opts.previous?.chainPrefix === prefix ? opts.previous : undefined

  const skipped: Skipped[] = []
  const valid: ProxyServicePort[] = []
  for (const s of services) {
    const bad = validate(s)
    if (bad != null) skipped.push({ key: String(s.key), reason: bad })
    else valid.push(s)
  }
  // stable: among duplicates the first given wins
  valid.sort((a, b) => cmp(a.key, b.key) || a.port - b.port || cmp(a.protocol, b.protocol))

  const bucketNames: string[] = []
  for (let b = 0; b < 256; b++) bucketNames.push(bucketChainName(prefix, b))
  const bucketParts: string[][] = []
  for (let b = 0; b < 256; b++) bucketParts.push([])
  const noEndpoints: ProxyServicePort[] = []
  // the memoized text depends on the hairpin option too
  const memo = portMemo(hairpin ? prefix : `${prefix}\0no-hairpin`)
  let prev: ProxyServicePort | undefined
  for (const s of valid) {
    if (prev != null && prev.key === s.key && prev.port === s.port && prev.protocol === s.protocol) {
      skipped.push({ key: s.key, reason: `duplicate ${s.port}/${s.protocol}` })
      continue
    }
    prev = s
    const b = bucketOf(s.clusterIP)
    const plan = planPort(memo, s, bucketNames[b]!, prefix, hashLen, hairpin)
    for (const k of plan.skipped) skipped.push(k)
    if (plan.empty) noEndpoints.push(s)
    else bucketParts[b]!.push(plan.text)
  }
  sweep(memo)
  // grouped by service port, in sorted order (stable)
  skipped.sort((a, b) => cmp(a.key, b.key))

  const buckets = new Map<number, string>()
  // joined, not +=: flat strings compare with one memcmp on the next sync
  for (let b = 0; b < 256; b++) if (bucketParts[b]!.length > 0) buckets.set(b, bucketParts[b]!.join(''))
  const chains = [top, post, ...[...buckets.keys()].map((b) => bucketNames[b]!)]
  const layout = new Set(chains)

  const existing = opts.existingChains == null ? undefined : new Set(opts.existingChains)
  const deletedSet = new Set<string>()
  for (const c of existing ?? []) if (c.startsWith(`${prefix}-`) && !layout.has(c)) deletedSet.add(c)
  for (const b of previous?.buckets.keys() ?? []) if (!buckets.has(b)) deletedSet.add(bucketNames[b]!)
  const deleted = [...deletedSet].sort(cmp)

  const missing = (c: string): boolean => existing != null && !existing.has(c)
  const bucketSetChanged = previous == null || previous.buckets.size !== buckets.size ||
    [...buckets.keys()].some((b) => !previous.buckets.has(b))
  // a stale chain may still be referenced from SERVICES (an older layout): rewrite it to drop that
  const writeServices = bucketSetChanged || deleted.length > 0 || missing(top)
  const written: string[] = writeServices ? [top] : []
  const lines: string[] = []
  if (writeServices) {
    for (const b of buckets.keys()) {
      lines.push(`-A ${top} -d 0.0.0.${b}/0.0.0.255 -m comment --comment "edgemesh ClusterIPs x.x.x.${b}" -j ${bucketNames[b]}\n`)
    }
  }
  // part of the layout whatever the services: never stale, written in every full sync
  const postText = hairpin ? `-A ${post} -m mark --mark ${HAIRPIN_MARK}/${HAIRPIN_MARK} -j MASQUERADE\n` : ''
  if (previous?.postrouting !== postText || missing(post)) {
    written.push(post)
    lines.push(postText)
  }
  for (const [b, text] of buckets) {
    if (previous?.buckets.get(b) === text && !missing(bucketNames[b]!)) continue
    written.push(bucketNames[b]!)
    lines.push(text)
  }

  const state: RuleState = { chainPrefix: prefix, buckets, postrouting: postText }
  const extra = opts.extraRules ?? []
  if (written.length === 0 && deleted.length === 0 && extra.length === 0) {
    return { text: '', chains, written, deleted, noEndpoints, skipped, state }
  }
  // declaring a chain in a restore payload flushes it (and creates it when missing); stale chains
  // are emptied this way before -X
  let head = '*nat\n'
  for (const c of written) head += `:${c} - [0:0]\n`
  for (const c of deleted) head += `:${c} - [0:0]\n`
  let tail = ''
  for (const c of deleted) tail += `-X ${c}\n`
  for (const l of extra) tail += `${l}\n`
  tail += 'COMMIT\n'
  const text = head + lines.join('') + tail
  return { text, chains, written, deleted, noEndpoints, skipped, state }
}

// ---- iptables-save / iptables -S parsing ----

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
      const rule = stripCounters(line)
      if (rule.startsWith('-A ')) cur.rules.push(rule)
    }
  }
  return tables
}

/** A rule line without counters: `[p:b] -A ...` (iptables-save -c) or `-A chain ... -c p b` (iptables -S -v). */
function stripCounters (line: string): string {
  return line.replace(/^\[\d+:\d+\]\s+/, '').replace(/\s+-c \d+ \d+$/, '')
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

/** Our chain hooked from `hook`: SERVICES from PREROUTING and OUTPUT, P-POSTROUTING from POSTROUTING. */
function hookTarget (hook: HookChain, prefix: string): string {
  return hook === 'POSTROUTING' ? postroutingChain(prefix) : servicesChain(prefix)
}

/** The hook of our chain at the top of `hook` (nat), restore syntax. */
function jumpRule (hook: HookChain, prefix: string): string {
  const comment = hook === 'POSTROUTING' ? 'edgemesh postrouting rules' : 'edgemesh service portals'
  return `-I ${hook} 1 -m comment --comment "${comment}" -j ${hookTarget(hook, prefix)}`
}

/**
 * The hooks of our chains at the top of nat PREROUTING, OUTPUT (SERVICES) and POSTROUTING
 * (P-POSTROUTING), restore syntax.
 */
export function jumpRules (prefix: string): string[] {
  checkPrefix(prefix)
  return HOOK_CHAINS.map((c) => jumpRule(c, prefix))
}

/** Restore lines that make our jump the first of the `-A <hook>` rules given; [] when it is. */
function fixHook (hook: HookChain, rules: readonly string[], prefix: string): string[] {
  const top = hookTarget(hook, prefix)
  const ofHook = rules.filter((r) => ruleChain(r) === hook)
  if (ofHook.length > 0 && ruleTarget(ofHook[0]!) === top) return []
  const out: string[] = []
  // delete them as listed, so the specs match; then one jump at position 1
  for (const r of ofHook) if (ruleTarget(r) === top) out.push(`-D${r.slice(2)}`)
  out.push(jumpRule(hook, prefix))
  return out
}

/**
 * From `iptables -t nat -S <hook>` output (`-P PREROUTING ACCEPT`, `-A PREROUTING ...`; also
 * OUTPUT and POSTROUTING): the
 * restore lines that make our jump the first rule of `hook` (delete our jumps as listed, insert at
 * position 1), or [] when it already is. Much cheaper than a full iptables-save on every sync.
 */
export function hookFixRules (hook: HookChain, listing: string, prefix: string): string[] {
  checkPrefix(prefix)
  if (!(HOOK_CHAINS as readonly string[]).includes(hook)) throw new Error(`not a hook chain: ${String(hook)}`)
  const rules: string[] = []
  for (const raw of listing.split('\n')) {
    const line = stripCounters(raw.trim())
    if (line.startsWith(`-A ${hook} `)) rules.push(line)
  }
  return fixHook(hook, rules, prefix)
}

/** True when our jump is missing from, or not the first rule of, nat PREROUTING, OUTPUT or POSTROUTING. */
export function needsJumpFix (saveText: string, prefix: string): boolean {
  return jumpFixRules(saveText, prefix).length > 0
}

/**
 * `hookFixRules` for the three hooks from `iptables-save` text: empty when nothing needs fixing.
 * Meant for `RuleOptions.extraRules`.
 */
export function jumpFixRules (saveText: string, prefix: string): string[] {
  checkPrefix(prefix)
  const rules = parseSave(saveText).get('nat')?.rules ?? []
  return HOOK_CHAINS.flatMap((hook) => fixHook(hook, rules, prefix))
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
