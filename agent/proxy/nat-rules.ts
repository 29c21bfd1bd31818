// Pure generation of the ClusterIP proxy's `nat` table: the mesh's chains as one
// `iptables-restore --noflush` section (full, or only what changed since the last sync). Nothing
// here touches the host; the caller runs the commands. Hooks: hooks.ts; the filter table (service
// ports without endpoints): reject-rules.ts; both together: rules.ts.
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
//
// Service ports without any target: REJECT belongs to the filter table, so the nat section emits
// nothing for them and `NatRules.noEndpoints` lists them for reject-rules.ts.
// Not emitted: NodePorts, IPv6 (non-IPv4 addresses are reported in `skipped`).
import { HAIRPIN_MARK, affinityName, bucketChainName, checkPrefix, postroutingChain, servicesChain } from './rule-names.ts'
import { restoreSection } from './restore-text.ts'
import { directTargets, invalidReason, parseEndpoint, type ProxyServicePort, type Skipped } from './service-port.ts'

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
   * Our nat chains that exist now (`parseChains(iptablesSave, prefix)`): those not in the new
   * layout (an older version's P-SVC-* / P-SEP-*, an emptied bucket) are flushed and deleted, and
   * a layout chain missing from it is written even when `previous` says it is unchanged.
   */
  existingChains?: Iterable<string>
  /** extra lines placed before COMMIT, e.g. `hookFixRules(...)`, so a repair rides in the same atomic restore */
  extraRules?: string[]
  /** the state of the last applied sync: only changed chains are rewritten (incremental sync) */
  previous?: RuleState
}

export interface NatRules {
  /** the `iptables-restore --noflush` input for table nat; '' when there is nothing to change */
  text: string
  /** the chains of the new layout: SERVICES, POSTROUTING, then the buckets in order */
  chains: string[]
  /** the chains this payload declares (flushes) and fills: all of `chains` in a full sync */
  written: string[]
  /** chains the payload flushes and deletes (-X) */
  deleted: string[]
  /** service ports without any target, sorted: nothing in nat, reject-rules.ts refuses them in filter */
  noEndpoints: ProxyServicePort[]
  /** service ports or endpoints left out because they are invalid (not IPv4, bad port, duplicate, ...) */
  skipped: Skipped[]
  /** pass as `previous` to the next build once `text` is applied */
  state: RuleState
}

const cmp = (a: string, b: string): number => a < b ? -1 : a > b ? 1 : 0

/** The bucket of an IPv4 ClusterIP: its low byte. */
export function bucketOf (clusterIP: string): number {
  return Number(clusterIP.slice(clusterIP.lastIndexOf('.') + 1))
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
    const bad = invalidReason(s)
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
  const text = restoreSection({ table: 'nat', written, deleted, rules: lines, extra: opts.extraRules ?? [] })
  return { text, chains, written, deleted, noEndpoints, skipped, state }
}
