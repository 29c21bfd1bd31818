// The cluster zone: the records of the Kubernetes DNS-Based Service Discovery specification
// (kubernetes/dns docs/specification.md, schema 1.1.0) computed from a catalog snapshot. Pure.
//
// Records (all class IN, TTL `ttl`, default 5 s like CoreDNS's kubernetes plugin):
// - <svc>.<ns>.svc.<zone>        A/AAAA: each ClusterIP, by family
//                                headless: each ready endpoint address (publishNotReadyAddresses:
//                                all endpoints); no such address -> the name does not exist
//                                (NXDOMAIN, spec 2.4.1), and neither does anything under it
//                                ExternalName: CNAME <externalName>
// - <host>.<svc>.<ns>.svc.<zone> A/AAAA per address of a headless endpoint; <host> is the
//                                endpoint's hostname, or (the spec's "system-assigned identifier")
//                                its dashed address, 10-0-0-1 / fd00--1, like CoreDNS
// - _<port>._<proto>.<svc>.<ns>.svc.<zone> SRV 0 100 for each NAMED port (unnamed: none):
//                                ClusterIP: the Service port -> <svc>.<ns>.svc.<zone>;
//                                headless: one per ready endpoint -> <host>.<svc>..., port = the
//                                EndpointSlice's port of that name (the pod's port, what a client
//                                of a headless Service must dial; CoreDNS does the same)
//                                The additional section carries the targets' A/AAAA records.
// - PTR: d.c.b.a.in-addr.arpa / nibbles.ip6.arpa for each ClusterIP (-> the Service name) and
//   each ready headless endpoint address (-> <host>.<svc>..., every endpoint has a _hostname_
//   per the spec's definition, so the dashed ones get PTRs too)
// - <a-b-c-d>.<ns>.pod.<zone>     A (or AAAA for dashed IPv6) for any namespace ("pods insecure")
// - dns-version.<zone>           TXT "1.1.0"; <zone> itself: SOA
// Negative answers carry the SOA (ns.dns.<zone>, hostmaster.<zone>, serial = snapshot version,
// 7200 1800 86400, minimum = ttl) in the authority section. A name that exists with other types,
// or an empty non-terminal (svc.<zone>, pod.<zone>, <ns>.svc.<zone> of a namespace with
// Services, _<proto>.<svc>..., <ns>.pod.<zone>) is NOERROR/NODATA; any other name in the zone is
// NXDOMAIN. Names outside the zone are not ours (lookup returns undefined: forward them).
// Reverse names: we do not know the Service or Pod CIDRs, so only reverse names with a PTR we
// hold are ours; every other in-addr.arpa / ip6.arpa name (including the empty non-terminals
// above our PTRs) is forwarded upstream rather than answered NXDOMAIN for the whole cluster.
// Class: lookup answers class IN; the query class is the server's concern (see response-cache).
// qtype ANY on a name of ours returns all its records (the sets are small).
//
// Incremental: the zone keeps each Service's records ("owner": the "ns/name" key); apply()
// recomputes only the owners named by the catalog's change events and reports every name whose
// answer may have changed (all names of an owner whose records changed, empty non-terminals that
// appeared or vanished, and ExternalName names whose CNAME points at one of those), so a response
// cache can drop exactly those. An owner whose records did not change (e.g. endpoint churn of a
// ClusterIP Service) reports nothing. Records are kept sorted, so the zone after any sequence of
// apply() equals one built from scratch from the same snapshot.

import type { EndpointSliceInfo, ServiceInfo } from '../catalog/model.ts'
import type { CatalogChange, CatalogSnapshot } from '../catalog/store.ts'
import { dashedIP, formatIP, parseDashedIP, parseIP, reverseName } from './ip.ts'
import { isValidName, RCODE, TYPE, type RR, type SoaData, type SrvData } from './wire.ts'

export const SCHEMA_VERSION = '1.1.0'
export const DEFAULT_DOMAIN = 'cluster.local'
export const DEFAULT_TTL = 5
/** depth limit for following CNAMEs inside the zone (ExternalName -> another Service) */
const MAX_CHAIN = 8

export interface ZoneOptions {
  /** the cluster domain; default cluster.local */
  domain?: string
  /** TTL of every record and the SOA minimum (negative caching); default 5 */
  ttl?: number
}

/** The answer to a question in our zone. */
export interface ZoneResult {
  rcode: number
  aa: boolean
  answers: RR[]
  authority: RR[]
  additional: RR[]
  /**
   * Set when the answer ends in a CNAME to a name outside our zone (an ExternalName Service):
   * the server should resolve `chase` upstream for the same qtype and append those records.
   */
  chase: string | undefined
}

export interface ZoneChange {
  /** the zone's generation after the change (increases whenever anything changed) */
  generation: number
  /** names whose answers may have changed (lowercase, no trailing dot) */
  names: ReadonlySet<string>
}

interface RecordSet {
  /** canonical address text, sorted */
  a: string[]
  aaaa: string[]
  cname: string | undefined
  /** sorted by target, then port */
  srv: SrvData[]
  /** sorted */
  ptr: string[]
}
type OwnerRecords = Map<string, RecordSet>
const NO_RECORDS: OwnerRecords = new Map()

const newSet = (): RecordSet => ({ a: [], aaaa: [], cname: undefined, srv: [], ptr: [] })

/** A label we can put in a name as is: 1-63 bytes, printable ASCII, no '.' or '\'. */
function isLabel (s: string): boolean {
  if (s.length === 0 || s.length > 63) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) return false
  }
  return true
}

/** A name made of valid labels (escape-free text) fits in 255 wire bytes when its text is <= 253. */
const fits = (name: string): boolean => name.length <= 253

function normalizeDomain (d: string): string {
  const s = d.trim().toLowerCase().replace(/^\.+|\.+$/g, '')
  if (!fits(s) || !s.split('.').every(isLabel)) throw new TypeError(`invalid cluster domain ${JSON.stringify(d)}`)
  return s
}

function addUnique (arr: string[], v: string): void { if (!arr.includes(v)) arr.push(v) }

function srvCompare (x: SrvData, y: SrvData): number {
  return x.target < y.target ? -1 : x.target > y.target ? 1 : x.port - y.port
}

function sortSet (rs: RecordSet): RecordSet {
  rs.a.sort()
  rs.aaaa.sort()
  rs.ptr.sort()
  rs.srv.sort(srvCompare)
  return rs
}

function sameStrings (x: readonly string[], y: readonly string[]): boolean {
  if (x.length !== y.length) return false
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false
  return true
}

function sameSet (x: RecordSet, y: RecordSet): boolean {
  if (x.cname !== y.cname || !sameStrings(x.a, y.a) || !sameStrings(x.aaaa, y.aaaa) || !sameStrings(x.ptr, y.ptr) || x.srv.length !== y.srv.length) return false
  for (let i = 0; i < x.srv.length; i++) {
    const s = x.srv[i]!
    const t = y.srv[i]!
    if (s.target !== t.target || s.port !== t.port || s.priority !== t.priority || s.weight !== t.weight) return false
  }
  return true
}

function sameOwner (x: OwnerRecords, y: OwnerRecords): boolean {
  if (x.size !== y.size) return false
  for (const [name, rs] of x) {
    const other = y.get(name)
    if (other === undefined || !sameSet(rs, other)) return false
  }
  return true
}

/** The records one Service contributes, by name. Empty when it has none (e.g. headless, nothing ready). */
export function serviceRecords (svc: ServiceInfo, slices: ReadonlyMap<string, EndpointSliceInfo> | undefined, domain: string): OwnerRecords {
  const ns = svc.namespace.toLowerCase()
  const name = svc.name.toLowerCase()
  if (!isLabel(ns) || !isLabel(name)) return NO_RECORDS
  const base = `${name}.${ns}.svc.${domain}`
  if (!fits(base)) return NO_RECORDS
  const out: OwnerRecords = new Map()
  const at = (n: string): RecordSet => {
    let rs = out.get(n)
    if (rs === undefined) { rs = newSet(); out.set(n, rs) }
    return rs
  }
  const srvName = (port: string, proto: string): string | undefined => {
    const p = port.toLowerCase()
    const pr = proto.toLowerCase()
    if (!isLabel('_' + p) || !isLabel('_' + pr)) return undefined
    const n = `_${p}._${pr}.${base}`
    return fits(n) ? n : undefined
  }
  /** SRV for a named port (unnamed ports have none), once per target and port */
  const addSrv = (p: { name: string, protocol: string, port: number }, target: string): void => {
    if (p.name === '' || !(p.port > 0 && p.port < 65536)) return
    const sn = srvName(p.name, p.protocol)
    if (sn === undefined) return
    const srv = at(sn).srv
    if (!srv.some((s) => s.target === target && s.port === p.port)) srv.push({ priority: 0, weight: 100, port: p.port, target })
  }
  const addAddress = (rs: RecordSet, ip: Uint8Array): void => addUnique(ip.length === 4 ? rs.a : rs.aaaa, formatIP(ip))

  if (svc.type === 'ExternalName') {
    const rs = at(base)
    const target = (svc.externalName ?? '').trim().toLowerCase().replace(/\.$/, '')
    if (target !== '' && isValidName(target)) rs.cname = target
  } else if (svc.headless) {
    for (const slice of slices?.values() ?? []) {
      if (slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6') continue
      for (const ep of slice.endpoints) {
        if (!ep.ready && !svc.publishNotReadyAddresses) continue
        const hostname = ep.hostname?.toLowerCase()
        for (const addr of ep.addresses) {
          const ip = parseIP(addr)
          if (ip === undefined) continue
          const host = hostname !== undefined && isLabel(hostname) ? hostname : dashedIP(ip)
          const target = `${host}.${base}`
          if (!fits(target)) continue
          addAddress(at(base), ip)
          addAddress(at(target), ip)
          addUnique(at(reverseName(ip)).ptr, target)
          for (const p of slice.ports) addSrv(p, target)
        }
      }
    }
  } else {
    const rs = at(base)
    for (const ipText of svc.clusterIPs) {
      const ip = parseIP(ipText)
      if (ip === undefined) continue
      addAddress(rs, ip)
      addUnique(at(reverseName(ip)).ptr, base)
    }
    for (const p of svc.ports) addSrv(p, base)
  }
  for (const rs of out.values()) sortSet(rs)
  return out
}

export class ClusterZone {
  readonly domain: string
  readonly ttl: number
  private readonly dotDomain: string
  private readonly versionName: string
  private readonly svcApex: string
  private readonly podApex: string
  /** owner ("ns/name") -> name -> records */
  private readonly owners = new Map<string, OwnerRecords>()
  /** name -> owner -> records (PTR names may have several owners) */
  private readonly nodes = new Map<string, Map<string, RecordSet>>()
  /** empty non-terminals: name -> number of names with records below it */
  private readonly ent = new Map<string, number>()
  /** CNAME target -> names pointing at it */
  private readonly deps = new Map<string, Set<string>>()
  private readonly listeners = new Set<(c: ZoneChange) => void>()
  private gen = 0
  private ser = 0

  constructor (opts: ZoneOptions = {}) {
    this.domain = normalizeDomain(opts.domain ?? DEFAULT_DOMAIN)
    const ttl = opts.ttl ?? DEFAULT_TTL
    if (!Number.isInteger(ttl) || ttl < 0 || ttl > 0x7fffffff) throw new TypeError(`invalid DNS ttl ${ttl}`)
    this.ttl = ttl
    this.dotDomain = '.' + this.domain
    this.versionName = 'dns-version.' + this.domain
    this.svcApex = 'svc.' + this.domain
    this.podApex = 'pod.' + this.domain
  }

  static fromSnapshot (snapshot: CatalogSnapshot, opts: ZoneOptions = {}): ClusterZone {
    const z = new ClusterZone(opts)
    z.rebuild(snapshot)
    return z
  }

  /** increases with every apply()/rebuild() that changed an answer */
  get generation (): number { return this.gen }
  /** the SOA serial: the version of the last snapshot applied */
  get serial (): number { return this.ser }

  /** Calls fn after every apply()/rebuild() that changed something; returns an unsubscribe function. */
  onChanged (fn: (c: ZoneChange) => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  /**
   * Applies one catalog commit: recomputes the Services named by its service/endpoints changes
   * (node and peer changes do not affect DNS). Pass every commit in order; after a gap (or
   * for the first snapshot) use rebuild().
   */
  apply (snapshot: CatalogSnapshot, changes: readonly CatalogChange[]): ZoneChange {
    const keys = new Set<string>()
    for (const c of changes) if (c.kind === 'service' || c.kind === 'endpoints') keys.add(c.key)
    return this.update(snapshot, keys)
  }

  /** Brings the zone in line with a whole snapshot (compares every Service; reports what changed). */
  rebuild (snapshot: CatalogSnapshot): ZoneChange {
    const keys = new Set<string>(snapshot.services.keys())
    for (const k of this.owners.keys()) keys.add(k)
    return this.update(snapshot, keys)
  }

  private update (snapshot: CatalogSnapshot, keys: Iterable<string>): ZoneChange {
    this.ser = snapshot.version
    const changed = new Set<string>()
    for (const key of keys) this.updateOwner(key, snapshot, changed)
    if (changed.size === 0) return { generation: this.gen, names: changed }
    // ExternalName Services whose (in-zone) CNAME target changed
    const queue = [...changed]
    for (let i = 0; i < queue.length; i++) {
      for (const src of this.deps.get(queue[i]!) ?? []) {
        if (!changed.has(src)) { changed.add(src); queue.push(src) }
      }
    }
    const c: ZoneChange = { generation: ++this.gen, names: changed }
    for (const fn of this.listeners) fn(c)
    return c
  }

  private updateOwner (key: string, snapshot: CatalogSnapshot, changed: Set<string>): void {
    const svc = snapshot.services.get(key)
    const next = svc === undefined ? NO_RECORDS : serviceRecords(svc, snapshot.endpoints.get(key), this.domain)
    const prev = this.owners.get(key) ?? NO_RECORDS
    if (sameOwner(prev, next)) return
    for (const [name, rs] of prev) {
      if (!next.has(name)) this.unset(name, key, rs, changed)
      changed.add(name)
    }
    for (const [name, rs] of next) {
      this.set(name, key, rs, prev.get(name), changed)
      changed.add(name)
    }
    if (next.size > 0) this.owners.set(key, next)
    else this.owners.delete(key)
  }

  private set (name: string, owner: string, rs: RecordSet, old: RecordSet | undefined, changed: Set<string>): void {
    let node = this.nodes.get(name)
    if (node === undefined) {
      node = new Map()
      this.nodes.set(name, node)
      this.ancestors(name, 1, changed)
    }
    node.set(owner, rs)
    if (old?.cname !== rs.cname) {
      if (old?.cname !== undefined) this.undep(old.cname, name)
      if (rs.cname !== undefined) {
        let s = this.deps.get(rs.cname)
        if (s === undefined) { s = new Set(); this.deps.set(rs.cname, s) }
        s.add(name)
      }
    }
  }

  private unset (name: string, owner: string, rs: RecordSet, changed: Set<string>): void {
    const node = this.nodes.get(name)
    if (node === undefined) return
    node.delete(owner)
    if (node.size === 0) {
      this.nodes.delete(name)
      this.ancestors(name, -1, changed)
    }
    if (rs.cname !== undefined) this.undep(rs.cname, name)
  }

  private undep (target: string, name: string): void {
    const s = this.deps.get(target)
    if (s === undefined) return
    s.delete(name)
    if (s.size === 0) this.deps.delete(target)
  }

  /** Counts a name in (delta 1) or out of (-1) each ancestor strictly between it and the apex. */
  private ancestors (name: string, delta: number, changed: Set<string>): void {
    if (!name.endsWith(this.dotDomain)) return // reverse names: no empty non-terminals of ours
    const stop = name.length - this.dotDomain.length
    for (let i = name.indexOf('.'); i >= 0 && i < stop; i = name.indexOf('.', i + 1)) {
      const a = name.slice(i + 1)
      const n = (this.ent.get(a) ?? 0) + delta
      if (n <= 0) { this.ent.delete(a); changed.add(a) } else { if (n === 1 && delta > 0) changed.add(a); this.ent.set(a, n) }
    }
  }

  /** Is this name ours to answer (in the cluster zone, or a reverse name we hold a PTR for)? */
  isAuthoritative (qname: string): boolean {
    return qname === this.domain || qname.endsWith(this.dotDomain) || this.nodes.has(qname)
  }

  /**
   * Answers qname (lowercase, no trailing dot: Query.qname) / qtype, or undefined when the name
   * is not ours (forward it upstream).
   */
  lookup (qname: string, qtype: number): ZoneResult | undefined {
    return this.resolve(qname, qtype, 0)
  }

  /** Every name that exists in the zone (with records, or as an empty non-terminal). For tests and diagnostics. */
  * names (): IterableIterator<string> {
    yield this.domain
    yield this.versionName
    yield this.svcApex
    yield this.podApex
    yield * this.nodes.keys()
    for (const n of this.ent.keys()) if (!this.nodes.has(n) && n !== this.svcApex && n !== this.podApex) yield n
  }

  private resolve (qname: string, qtype: number, depth: number): ZoneResult | undefined {
    if (qname === this.domain) {
      if (qtype === TYPE.SOA || qtype === TYPE.ANY) return this.result(RCODE.NOERROR, [this.soa(this.domain)], [], [])
      return this.nodata(this.domain)
    }
    if (qname.endsWith(this.dotDomain)) return this.forward(qname, qtype, depth)
    if (qname.endsWith('.in-addr.arpa') || qname.endsWith('.ip6.arpa')) {
      const node = this.nodes.get(qname)
      if (node === undefined) return undefined
      const rs = merged(node)
      if (qtype !== TYPE.PTR && qtype !== TYPE.ANY) return this.nodata(qname.endsWith('.in-addr.arpa') ? 'in-addr.arpa' : 'ip6.arpa')
      return this.result(RCODE.NOERROR, rs.ptr.map((t) => this.rr(qname, TYPE.PTR, t)), [], [])
    }
    return undefined
  }

  private forward (qname: string, qtype: number, depth: number): ZoneResult {
    const node = this.nodes.get(qname)
    if (node !== undefined) return this.answer(qname, merged(node), qtype, depth)
    if (qname === this.versionName) {
      if (qtype === TYPE.TXT || qtype === TYPE.ANY) return this.result(RCODE.NOERROR, [{ name: qname, type: TYPE.TXT, ttl: this.ttl, data: [SCHEMA_VERSION] }], [], [])
      return this.nodata(this.domain)
    }
    if (qname === this.svcApex || qname === this.podApex || this.ent.has(qname)) return this.nodata(this.domain)
    // <ip>.<ns>.pod.<zone>, and the empty non-terminal <ns>.pod.<zone>
    const rel = qname.slice(0, qname.length - this.dotDomain.length)
    if (rel.endsWith('.pod')) {
      const labels = rel.split('.')
      if (labels.length === 2) return this.nodata(this.domain) // <ns>.pod
      if (labels.length === 3) { // <ip>.<ns>.pod
        const ip = parseDashedIP(labels[0]!)
        if (ip !== undefined) {
          const type = ip.length === 4 ? TYPE.A : TYPE.AAAA
          if (qtype === type || qtype === TYPE.ANY) return this.result(RCODE.NOERROR, [this.rr(qname, type, formatIP(ip))], [], [])
          return this.nodata(this.domain)
        }
      }
    }
    return this.result(RCODE.NXDOMAIN, [], [this.soa(this.domain)], [])
  }

  private answer (qname: string, rs: RecordSet, qtype: number, depth: number): ZoneResult {
    if (rs.cname !== undefined) {
      const cname = this.rr(qname, TYPE.CNAME, rs.cname)
      if (qtype === TYPE.CNAME || qtype === TYPE.ANY) return this.result(RCODE.NOERROR, [cname], [], [])
      const next = depth < MAX_CHAIN ? this.resolve(rs.cname, qtype, depth + 1) : undefined
      if (next === undefined) {
        const r = this.result(RCODE.NOERROR, [cname], [], [])
        if (depth < MAX_CHAIN) r.chase = rs.cname
        return r
      }
      next.answers.unshift(cname)
      return next
    }
    const answers: RR[] = []
    const additional: RR[] = []
    const any = qtype === TYPE.ANY
    if (qtype === TYPE.A || any) for (const ip of rs.a) answers.push(this.rr(qname, TYPE.A, ip))
    if (qtype === TYPE.AAAA || any) for (const ip of rs.aaaa) answers.push(this.rr(qname, TYPE.AAAA, ip))
    if (qtype === TYPE.PTR || any) for (const t of rs.ptr) answers.push(this.rr(qname, TYPE.PTR, t))
    if (qtype === TYPE.SRV || any) {
      const seen = new Set<string>()
      for (const s of rs.srv) {
        answers.push({ name: qname, type: TYPE.SRV, ttl: this.ttl, data: s })
        if (seen.has(s.target)) continue
        seen.add(s.target)
        const t = this.nodes.get(s.target)
        if (t === undefined) continue
        const trs = merged(t)
        for (const ip of trs.a) additional.push(this.rr(s.target, TYPE.A, ip))
        for (const ip of trs.aaaa) additional.push(this.rr(s.target, TYPE.AAAA, ip))
      }
    }
    if (answers.length === 0) return this.nodata(this.domain)
    return this.result(RCODE.NOERROR, answers, [], any ? [] : additional)
  }

  private rr (name: string, type: typeof TYPE.A | typeof TYPE.AAAA | typeof TYPE.CNAME | typeof TYPE.PTR, data: string): RR {
    return { name, type, ttl: this.ttl, data }
  }

  private soa (owner: string): RR {
    const data: SoaData = { mname: `ns.dns.${this.domain}`, rname: `hostmaster.${this.domain}`, serial: this.ser >>> 0, refresh: 7200, retry: 1800, expire: 86400, minimum: this.ttl }
    return { name: owner, type: TYPE.SOA, ttl: this.ttl, data }
  }

  private nodata (soaOwner: string): ZoneResult {
    return this.result(RCODE.NOERROR, [], [this.soa(soaOwner)], [])
  }

  private result (rcode: number, answers: RR[], authority: RR[], additional: RR[]): ZoneResult {
    return { rcode, aa: true, answers, authority, additional, chase: undefined }
  }
}

/** The records of a name, merged over its owners (one owner: as is). */
function merged (node: Map<string, RecordSet>): RecordSet {
  if (node.size === 1) return node.values().next().value!
  const out = newSet()
  for (const rs of node.values()) {
    for (const x of rs.a) addUnique(out.a, x)
    for (const x of rs.aaaa) addUnique(out.aaaa, x)
    for (const x of rs.ptr) addUnique(out.ptr, x)
    for (const s of rs.srv) if (!out.srv.some((t) => t.target === s.target && t.port === s.port)) out.srv.push(s)
    out.cname ??= rs.cname
  }
  return sortSet(out)
}
