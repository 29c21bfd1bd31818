// The hot path for cluster answers: question -> pre-encoded response bytes. A hit costs a hash
// probe (the hash comes from parseQuery), a byte compare of the question name, one copy of the
// response into the caller's buffer and a few byte patches (ID, RD/CD, DO, the client's
// spelling of the name); nothing is allocated. Separate from the upstream cache: entries here
// never expire, they are dropped by name when the zone changes (ClusterZone.onChanged).
//
// Keys: the lowercased wire question name + qtype + qclass + the EDNS flag (whether the response
// carries an OPT). The DO bit, RD, CD and the ID are patched per query; the size limit picks one
// of three pre-encoded shapes (full / without additional / TC), so one entry serves UDP clients
// of any payload size and TCP. Names sent with compression pointers are not cached.
//
// Bounded: at most maxEntries entries, evicted by CLOCK (second chance). Entries also remember
// "not ours" (respondInto returns FORWARD) so names bound upstream skip the zone lookup.
//
// Multiple A/AAAA answers are rotated per hit (round robin, like CoreDNS's loadbalance plugin):
// a headless Service's clients then spread over its pods. Only plain address answers rotate
// (same-size records, nothing pointing into them).

import { CLASS, encodeResponse, encodeResponseSet, RCODE, TYPE, writeResponse, type Query, type ResponseSections } from './wire.ts'
import type { ClusterZone } from './zone.ts'

/** respondInto / answerInto: the name is not ours, forward the query upstream. */
export const FORWARD = -1
/** answerInto: the zone's answer ends in a CNAME out of the zone; see ClusterZone.lookup().chase. */
export const CHASE = -2

export interface ResponseCacheOptions {
  /** default 20000 */
  maxEntries?: number
  /** rotate multi-address answers per hit; default true */
  rotate?: boolean
}

class Entry {
  hash: number
  /** lowercased wire name */
  key: Uint8Array
  qtype: number
  qclass: number
  edns: boolean
  name: string
  /** undefined: a "not ours" marker */
  full: Buffer | undefined
  noAdditional: Buffer | undefined
  truncated: Buffer | undefined
  rotStart = 0
  rotSize = 0
  rotCount = 0
  rotNext = 0
  ref = false
  slot = -1
  next: Entry | undefined = undefined

  constructor (hash: number, key: Uint8Array, q: Query, name: string, full: Buffer | undefined, noAdditional: Buffer | undefined, truncated: Buffer | undefined) {
    this.hash = hash
    this.key = key
    this.qtype = q.qtype
    this.qclass = q.qclass
    this.edns = q.edns
    this.name = name
    this.full = full
    this.noAdditional = noAdditional
    this.truncated = truncated
  }
}

const REFUSED: ResponseSections = { rcode: RCODE.REFUSED }

export interface ResponseCacheStats { hits: number, misses: number, evictions: number, invalidations: number }

export class ResponseCache {
  readonly maxEntries: number
  private readonly rotate: boolean
  private buckets: Array<Entry | undefined>
  private mask: number
  private ring: Array<Entry | undefined>
  private readonly free: number[] = []
  private used = 0
  private hand = 0
  private count = 0
  private readonly byName = new Map<string, Entry[]>()
  readonly stats: ResponseCacheStats = { hits: 0, misses: 0, evictions: 0, invalidations: 0 }

  constructor (opts: ResponseCacheOptions = {}) {
    const max = opts.maxEntries ?? 20_000
    if (!Number.isInteger(max) || max < 1) throw new TypeError(`invalid maxEntries ${max}`)
    this.maxEntries = max
    this.rotate = opts.rotate ?? true
    let size = 16
    while (size < max * 2) size *= 2
    this.buckets = new Array<Entry | undefined>(size).fill(undefined)
    this.mask = size - 1
    this.ring = new Array<Entry | undefined>(max).fill(undefined)
  }

  get size (): number { return this.count }

  private find (q: Query): Entry | undefined {
    const h = q.hash
    const msg = q.msg
    const len = q.qnameEnd - 12
    let e = this.buckets[h & this.mask]
    outer: while (e !== undefined) {
      if (e.hash === h && e.qtype === q.qtype && e.qclass === q.qclass && e.edns === q.edns && e.key.length === len) {
        const key = e.key
        for (let i = 0; i < len; i++) {
          let c = msg[12 + i]!
          if (c >= 0x41 && c <= 0x5a) c |= 0x20
          if (c !== key[i]) { e = e.next; continue outer }
        }
        return e
      }
      e = e.next
    }
    return undefined
  }

  /**
   * Writes the cached response for q into out (at offset 0; out must hold MAX_MESSAGE bytes, or at
   * least maxSize) and returns its length; 0 on a miss; FORWARD when the name is known not to be
   * ours. maxSize (>= 512): q.maxUdp for UDP (the default), MAX_MESSAGE for TCP.
   * Do not reuse `out` while a send of it may still be queued (dgram may keep the buffer).
   */
  respondInto (q: Query, out: Uint8Array, maxSize: number = q.maxUdp): number {
    const e = q.compressed ? undefined : this.find(q)
    if (e === undefined) { this.stats.misses++; return 0 }
    this.stats.hits++
    e.ref = true
    return this.serve(e, q, out, maxSize)
  }

  private serve (e: Entry, q: Query, out: Uint8Array, maxSize: number): number {
    const full = e.full
    if (full === undefined) return FORWARD
    if (full.length <= maxSize) {
      const n = writeResponse(full, q, out)
      if (e.rotCount > 1) {
        const r = e.rotNext
        e.rotNext = r + 1 === e.rotCount ? 0 : r + 1
        if (r !== 0) {
          const start = e.rotStart
          const cut = start + r * e.rotSize
          const end = start + e.rotCount * e.rotSize
          full.copy(out, start, cut, end)
          full.copy(out, start + end - cut, start, cut)
        }
      }
      return n
    }
    const na = e.noAdditional
    return writeResponse(na !== undefined && na.length <= maxSize ? na : e.truncated ?? full, q, out)
  }

  private static sizeFor (e: Entry, maxSize: number): number {
    const full = e.full!
    if (full.length <= maxSize) return full.length
    const na = e.noAdditional
    return na !== undefined && na.length <= maxSize ? na.length : (e.truncated ?? full).length
  }

  /** respondInto into a fresh Buffer: the bytes, FORWARD, or undefined on a miss. */
  respond (q: Query, maxSize: number = q.maxUdp): Buffer | typeof FORWARD | undefined {
    const e = q.compressed ? undefined : this.find(q)
    if (e === undefined) { this.stats.misses++; return undefined }
    this.stats.hits++
    e.ref = true
    if (e.full === undefined) return FORWARD
    const b = Buffer.allocUnsafe(ResponseCache.sizeFor(e, maxSize))
    this.serve(e, q, b, maxSize)
    return b
  }

  /**
   * The cluster side of the server's hot path. Writes the answer for q into out and returns its
   * length; FORWARD when the name is not ours (forward upstream); CHASE when the zone's answer
   * is a CNAME leaving the zone (an ExternalName: call zone.lookup(q.qname, q.qtype) and resolve
   * `.chase` upstream). A miss is answered from the zone and cached. Class: the zone answers
   * IN; another class for a name of ours is REFUSED, for anything else forwarded.
   */
  answerInto (zone: ClusterZone, q: Query, out: Uint8Array, maxSize: number = q.maxUdp): number {
    const n = this.respondInto(q, out, maxSize)
    if (n !== 0) return n
    const name = q.qname
    const r: ResponseSections | undefined = q.qclass === CLASS.IN
      ? zone.lookup(name, q.qtype)
      : zone.isAuthoritative(name) ? REFUSED : undefined
    if (r === undefined) {
      this.storeForward(q)
      return FORWARD
    }
    if ((r as { chase?: string }).chase !== undefined) return CHASE
    if (q.compressed) {
      const b = encodeResponse(q, r, { maxSize })
      out.set(b)
      return b.length
    }
    return this.serve(this.storeEntry(q, r), q, out, maxSize)
  }

  /** Caches the response sections for q's question (encoded once, three shapes). */
  store (q: Query, r: ResponseSections): void {
    if (!q.compressed) this.storeEntry(q, r)
  }

  private storeEntry (q: Query, r: ResponseSections): Entry {
    const set = encodeResponseSet(q, r)
    const e = this.insert(q, set.full, set.noAdditional, set.truncated)
    if (this.rotate) this.setRotation(e, q, r)
    return e
  }

  /** Remembers that q's name is not ours (respondInto returns FORWARD) until invalidated. */
  storeForward (q: Query): void {
    if (q.compressed) return
    this.insert(q, undefined, undefined, undefined)
  }

  private setRotation (e: Entry, q: Query, r: ResponseSections): void {
    const answers = r.answers ?? []
    if (answers.length < 2 || (r.authority?.length ?? 0) > 0 || (r.additional?.length ?? 0) > 0) return
    const type = answers[0]!.type
    if (type !== TYPE.A && type !== TYPE.AAAA) return
    for (const rr of answers) if (rr.type !== type || rr.name !== e.name) return
    const size = 2 + 10 + (type === TYPE.A ? 4 : 16) // owner = pointer to the question
    const start = q.questionEnd
    if (start + answers.length * size + (q.edns ? 11 : 0) !== e.full!.length) return
    e.rotStart = start
    e.rotSize = size
    e.rotCount = answers.length
  }

  private insert (q: Query, full: Buffer | undefined, noAdditional: Buffer | undefined, truncated: Buffer | undefined): Entry {
    const old = this.find(q)
    if (old !== undefined) this.remove(old)
    const name = q.qname
    const len = q.qnameEnd - 12
    // the key is the lowercased wire name: in the template when there is one (one allocation
    // per entry), else its own small array (<= 64 bytes stays on the V8 heap)
    const key = full !== undefined ? full.subarray(12, 12 + len) : new Uint8Array(len)
    for (let i = 0; i < len; i++) {
      const c = q.msg[12 + i]!
      key[i] = c >= 0x41 && c <= 0x5a ? c | 0x20 : c
    }
    // the templates carry the lowercase name (writeResponse restores a client's mixed case) and ID 0
    for (const t of [full, noAdditional, truncated]) if (t !== undefined) { if (t !== full) t.set(key, 12); t[0] = 0; t[1] = 0 }
    const e = new Entry(q.hash, key, q, name, full, noAdditional, truncated)
    let slot: number
    if (this.free.length > 0) slot = this.free.pop()!
    else if (this.used < this.maxEntries) slot = this.used++
    else slot = this.evict()
    e.slot = slot
    this.ring[slot] = e
    const b = q.hash & this.mask
    e.next = this.buckets[b]
    this.buckets[b] = e
    const list = this.byName.get(name)
    if (list === undefined) this.byName.set(name, [e])
    else list.push(e)
    this.count++
    return e
  }

  /** CLOCK: the first entry without a recent hit goes; returns its slot. */
  private evict (): number {
    for (;;) {
      const i = this.hand
      this.hand = i + 1 === this.maxEntries ? 0 : i + 1
      const e = this.ring[i]
      if (e === undefined) return i
      if (e.ref) { e.ref = false; continue }
      this.unlink(e)
      this.stats.evictions++
      return i
    }
  }

  private unlink (e: Entry): void {
    const b = e.hash & this.mask
    let p = this.buckets[b]
    if (p === e) this.buckets[b] = e.next
    else {
      while (p !== undefined && p.next !== e) p = p.next
      if (p !== undefined) p.next = e.next
    }
    e.next = undefined
    this.ring[e.slot] = undefined
    const list = this.byName.get(e.name)
    if (list !== undefined) {
      const i = list.indexOf(e)
      if (i >= 0) list.splice(i, 1)
      if (list.length === 0) this.byName.delete(e.name)
    }
    this.count--
  }

  private remove (e: Entry): void {
    this.unlink(e)
    this.free.push(e.slot)
  }

  /** Drops every entry for these names (any type); returns how many. */
  invalidate (names: Iterable<string>): number {
    let n = 0
    for (const name of names) {
      const list = this.byName.get(name)
      if (list === undefined) continue
      for (const e of [...list]) { this.remove(e); n++ }
    }
    this.stats.invalidations += n
    return n
  }

  clear (): void {
    this.buckets.fill(undefined)
    this.ring.fill(undefined)
    this.free.length = 0
    this.used = 0
    this.hand = 0
    this.count = 0
    this.byName.clear()
  }

  /** Keeps the cache in step with the zone; returns the unsubscribe function. */
  follow (zone: ClusterZone): () => void {
    return zone.onChanged((c) => { this.invalidate(c.names) })
  }
}

/** cache.answerInto(zone, q, out, maxSize) as a function. */
export function answerInto (zone: ClusterZone, cache: ResponseCache, q: Query, out: Uint8Array, maxSize: number = q.maxUdp): number {
  return cache.answerInto(zone, q, out, maxSize)
}
