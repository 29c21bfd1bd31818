// A minimal DNS message codec for the node-local DNS server (RFC 1035, EDNS0 per RFC 6891).
//
// The hot path is parseQuery: it reads the header, the one question and the additional section
// (for the OPT record) and nothing else, without building strings. The lowercased question name
// is hashed (FNV-1a over its wire bytes, plus qtype, qclass and the EDNS flag) while it is
// validated, so the response cache can find a pre-encoded answer by comparing bytes; the dotted
// name (Query.qname) is only decoded when something asks for it (a cache miss).
// Measured on the 2-core dev box: a string key costs ~150 ns to create plus ~140 ns to hash in
// a Map, the byte hash + compare ~100 ns and no allocation.
//
// Everything that reads untrusted bytes (parseQuery, parseResponseMeta, decodeMessage,
// questionMatches) never throws: malformed input comes back as an error kind. The encoders take
// trusted input (names from the zone, a parsed Query) and throw TypeError on invalid names.

import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from './ip.ts'

export const TYPE = {
  A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, TXT: 16, AAAA: 28, SRV: 33, OPT: 41,
  IXFR: 251, AXFR: 252, MAILB: 253, MAILA: 254, ANY: 255
} as const
export const CLASS = { IN: 1, CH: 3, HS: 4, ANY: 255 } as const
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16 } as const

/** The UDP payload size we advertise, and the cap on what we send over UDP (DNS flag day 2020). */
export const EDNS_PAYLOAD = 1232
/** The UDP size limit for a query without EDNS. */
export const PLAIN_UDP_MAX = 512
/** The largest DNS message (TCP). */
export const MAX_MESSAGE = 65535

const FNV_OFFSET = 0x811c9dc5 | 0
const FNV_PRIME = 0x01000193

/** Internal errors caught by the never-throw guards (a bug if not 0; the fuzz tests check it). */
export const wireStats = { internalErrors: 0 }

const EMPTY = new Uint8Array(0)

/**
 * A parsed query. The server may pass one instance to parseQuery again and again (the fields are
 * overwritten), as long as it is done with the previous query: the object holds on to `msg`.
 */
export class Query {
  /** the received message; the question is msg[12, questionEnd) */
  msg: Uint8Array = EMPTY
  id = 0
  /** the header's flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE) */
  flags = 0
  /** offset just past the question name: qtype is at qnameEnd */
  qnameEnd = 0
  questionEnd = 0
  qtype = 0
  qclass = 0
  /** the question name uses a compression pointer (legal, but never seen from real stubs) */
  compressed = false
  /** the question name has ASCII uppercase letters (e.g. DNS 0x20 case randomisation) */
  mixedCase = false
  /** the name has bytes that need escaping in text ('.', '\\', non-printable) */
  escaped = false
  /** FNV-1a of the lowercased wire name, qtype, qclass and the EDNS flag */
  hash = 0
  edns = false
  /** the requestor's UDP payload size (0 without EDNS) */
  udpSize = 0
  /** the EDNS DO bit */
  dnssecOk = false
  /** the UDP response size limit: 512 without EDNS, else the client's size clamped to [512, 1232] */
  maxUdp = PLAIN_UDP_MAX
  /** @internal lazily decoded name */
  _qname: string | undefined = undefined

  get rd (): boolean { return (this.flags & 0x0100) !== 0 }
  get cd (): boolean { return (this.flags & 0x0010) !== 0 }
  /** The lowercased name without the trailing dot (root = ''), '.' and '\\' escaped, non-printable bytes as \DDD. */
  get qname (): string { return (this._qname ??= decodeQname(this)) }
  /** A string cache key for slower paths (e.g. an upstream cache): name, type, class, EDNS flag. */
  get key (): string { return `${this.qname}|${this.qtype}|${this.qclass}|${this.edns ? 1 : 0}` }
}

export type ParseErrorKind = 'formerr' | 'notimp' | 'badvers'
export interface QueryFailure {
  readonly error: ParseErrorKind
  readonly id: number
  readonly flags: number
  /** > 12 when the question parsed and can be echoed (msg[12, questionEnd)), else 0 */
  readonly questionEnd: number
  /** the query had a valid OPT record: the error response carries one too */
  readonly edns: boolean
  readonly dnssecOk: boolean
}
export interface QueryDrop { readonly error: 'drop' }
export type QueryError = QueryDrop | QueryFailure

const DROP: QueryDrop = Object.freeze({ error: 'drop' as const })

const u16 = (m: Uint8Array, i: number): number => (m[i]! << 8) | m[i + 1]!

function fail (error: ParseErrorKind, id: number, flags: number, questionEnd: number, edns: boolean, dnssecOk: boolean): QueryFailure {
  return { error, id, flags, questionEnd, edns, dnssecOk }
}

/**
 * Skips a (possibly compressed) name at off without following pointers: the offset after it,
 * or -1 when it runs past the end or uses a reserved label type.
 */
export function skipName (msg: Uint8Array, off: number): number {
  const len = msg.length
  for (;;) {
    if (off >= len) return -1
    const l = msg[off]!
    if (l === 0) return off + 1
    if (l < 64) { off += l + 1; continue }
    if (l >= 0xc0) return off + 2 <= len ? off + 2 : -1
    return -1
  }
}

/**
 * Parses a query: header, exactly one question, and the OPT record if any.
 * - `{ error: 'drop' }`: shorter than a header, or a response (QR=1): never answer those.
 * - `formerr` / `notimp` / `badvers`: answer with encodeError(msg, failure).
 *   notimp: opcode other than QUERY, or qtype AXFR/IXFR/MAILA/MAILB (no zone transfers here);
 *   formerr: question count != 1, bad name (labels > 63, name > 255, bad pointer), truncated
 *   RRs, an OPT not in the additional section / not owned by the root / twice / bad options,
 *   qtype OPT; badvers: EDNS version > 0 (RFC 6891 6.1.3).
 * Compression pointers in the question are accepted only strictly backwards, past the header.
 */
export function parseQuery (msg: Uint8Array, into?: Query): Query | QueryError {
  try {
    return parse(msg, into ?? new Query())
  } catch {
    wireStats.internalErrors++
    return DROP
  }
}

function parse (msg: Uint8Array, q: Query): Query | QueryError {
  const len = msg.length
  if (len < 12) return DROP
  const b2 = msg[2]!
  if ((b2 & 0x80) !== 0) return DROP
  const id = (msg[0]! << 8) | msg[1]!
  const flags = (b2 << 8) | msg[3]!
  const qd = u16(msg, 4)
  if (((b2 >> 3) & 0x0f) !== 0) {
    // opcode not QUERY: echo the question when there is exactly one that parses
    let qe = 0
    if (qd === 1) { const e = skipName(msg, 12); if (e > 0 && e + 4 <= len) qe = e + 4 }
    return fail('notimp', id, flags, qe, false, false)
  }
  if (qd !== 1) return fail('formerr', id, flags, 0, false, false)

  // the question name: validate, lowercase-hash, note case and escapes
  let p = 12
  let h = FNV_OFFSET
  let wire = 0
  let end = 0
  let compressed = false
  let mixed = false
  let escaped = false
  for (;;) {
    if (p >= len) return fail('formerr', id, flags, 0, false, false)
    const l = msg[p]!
    if (l === 0) {
      h = Math.imul(h, FNV_PRIME)
      if (end === 0) end = p + 1
      break
    }
    if (l < 64) {
      const next = p + 1 + l
      wire += l + 1
      if (wire > 254 || next > len) return fail('formerr', id, flags, 0, false, false)
      h = Math.imul(h ^ l, FNV_PRIME)
      for (let i = p + 1; i < next; i++) {
        let c = msg[i]!
        if (c >= 0x41 && c <= 0x5a) {
          c |= 0x20
          mixed = true
        } else if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) {
          escaped = true
        }
        h = Math.imul(h ^ c, FNV_PRIME)
      }
      p = next
    } else if (l >= 0xc0) {
      if (p + 1 >= len) return fail('formerr', id, flags, 0, false, false)
      const t = ((l & 0x3f) << 8) | msg[p + 1]!
      if (t < 12 || t >= p) return fail('formerr', id, flags, 0, false, false)
      if (end === 0) end = p + 2
      compressed = true
      p = t
    } else {
      return fail('formerr', id, flags, 0, false, false)
    }
  }
  const questionEnd = end + 4
  if (questionEnd > len) return fail('formerr', id, flags, 0, false, false)
  const qtype = u16(msg, end)
  const qclass = u16(msg, end + 2)

  // answer and authority (normally empty) and additional: find the OPT record
  let edns = false
  let udp = 0
  let version = 0
  let dok = false
  const anns = u16(msg, 6) + u16(msg, 8)
  const total = anns + u16(msg, 10)
  let off = questionEnd
  for (let i = 0; i < total; i++) {
    const owner = off
    off = skipName(msg, off)
    if (off < 0 || off + 10 > len) return fail('formerr', id, flags, questionEnd, false, false)
    const rdata = off + 10
    const rdEnd = rdata + u16(msg, off + 8)
    if (rdEnd > len) return fail('formerr', id, flags, questionEnd, false, false)
    if (msg[off] === 0 && msg[off + 1] === TYPE.OPT) {
      if (i < anns || edns || msg[owner] !== 0) return fail('formerr', id, flags, questionEnd, false, false)
      edns = true
      udp = u16(msg, off + 2)
      version = msg[off + 5]!
      dok = (msg[off + 6]! & 0x80) !== 0
      let o = rdata
      while (o < rdEnd) {
        if (o + 4 > rdEnd) return fail('formerr', id, flags, questionEnd, false, false)
        o += 4 + u16(msg, o + 2)
      }
      if (o !== rdEnd) return fail('formerr', id, flags, questionEnd, false, false)
    }
    off = rdEnd
  }
  if (edns && version !== 0) return fail('badvers', id, flags, questionEnd, true, dok)
  if (qtype === TYPE.OPT) return fail('formerr', id, flags, questionEnd, edns, dok)
  if (qtype >= TYPE.IXFR && qtype <= TYPE.MAILA) return fail('notimp', id, flags, questionEnd, edns, dok)

  h = Math.imul(h ^ (qtype >> 8), FNV_PRIME)
  h = Math.imul(h ^ (qtype & 0xff), FNV_PRIME)
  h = Math.imul(h ^ (qclass >> 8), FNV_PRIME)
  h = Math.imul(h ^ (qclass & 0xff), FNV_PRIME)
  h = Math.imul(h ^ (edns ? 1 : 0), FNV_PRIME)

  q.msg = msg
  q.id = id
  q.flags = flags
  q.qnameEnd = end
  q.questionEnd = questionEnd
  q.qtype = qtype
  q.qclass = qclass
  q.compressed = compressed
  q.mixedCase = mixed
  q.escaped = escaped
  q.hash = h
  q.edns = edns
  q.udpSize = udp
  q.dnssecOk = dok
  q.maxUdp = edns ? (udp < PLAIN_UDP_MAX ? PLAIN_UDP_MAX : udp > EDNS_PAYLOAD ? EDNS_PAYLOAD : udp) : PLAIN_UDP_MAX
  q._qname = undefined
  return q
}

// ---- names: wire <-> text ---------------------------------------------------------------------

const TEXT = Buffer.allocUnsafe(1024)

/**
 * Reads a name at off (following backward pointers, at most 255 bytes of name) into text form,
 * lowercased, or undefined when it is malformed. Used by decodeMessage; the query's name is
 * decoded the same way.
 */
export function readName (msg: Uint8Array, off: number, lowercase = true): { name: string, end: number } | undefined {
  const len = msg.length
  let p = off
  let end = 0
  let wire = 0
  let n = 0
  let slow = false
  let hops = 0
  for (;;) {
    if (p >= len) return undefined
    const l = msg[p]!
    if (l === 0) { if (end === 0) end = p + 1; break }
    if (l < 64) {
      if (p + 1 + l > len) return undefined
      wire += l + 1
      if (wire > 254) return undefined
      if (n > 0) TEXT[n++] = 0x2e
      for (let i = p + 1; i <= p + l; i++) {
        let c = msg[i]!
        if (lowercase && c >= 0x41 && c <= 0x5a) c |= 0x20
        if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) slow = true
        TEXT[n++] = c
      }
      p += l + 1
    } else if (l >= 0xc0) {
      if (p + 1 >= len) return undefined
      const t = ((l & 0x3f) << 8) | msg[p + 1]!
      if (t >= p || ++hops > 127) return undefined
      if (end === 0) end = p + 2
      p = t
    } else {
      return undefined
    }
  }
  if (!slow) return { name: TEXT.toString('latin1', 0, n), end }
  // escape: re-walk the text form, where 0x2e bytes inside labels are ambiguous, so decode again
  return { name: escapedName(msg, off, lowercase), end }
}

function escapedName (msg: Uint8Array, off: number, lowercase: boolean): string {
  let s = ''
  let p = off
  let first = true
  for (;;) {
    const l = msg[p]!
    if (l === 0) break
    if (l >= 0xc0) { p = ((l & 0x3f) << 8) | msg[p + 1]!; continue }
    if (!first) s += '.'
    first = false
    for (let i = p + 1; i <= p + l; i++) {
      let c = msg[i]!
      if (lowercase && c >= 0x41 && c <= 0x5a) c |= 0x20
      if (c === 0x2e || c === 0x5c) s += '\\' + String.fromCharCode(c)
      else if (c <= 0x20 || c >= 0x7f) s += '\\' + String(c).padStart(3, '0')
      else s += String.fromCharCode(c)
    }
    p += l + 1
  }
  return s
}

function decodeQname (q: Query): string {
  return readName(q.msg, 12)?.name ?? ''
}

const NW = new Uint8Array(512)

/**
 * A name in text form (no trailing dot needed; '\\.', '\\\\' and '\\DDD' escapes) to wire form.
 * Throws TypeError for empty labels, labels > 63 or names > 255 bytes, characters > 0xff.
 */
export function nameToWire (name: string): Uint8Array {
  const n = textToWire(name)
  const b = Buffer.allocUnsafe(n)
  b.set(NW.subarray(0, n))
  return b
}

/** nameToWire into the NW scratch; returns the wire length. */
function textToWire (name: string): number {
  if (name === '' || name === '.') { NW[0] = 0; return 1 }
  const bad = (why: string): TypeError => new TypeError(`${why} in DNS name ${JSON.stringify(name.slice(0, 300))}`)
  let end = name.length
  if (name.charCodeAt(end - 1) === 0x2e && !(end > 1 && name.charCodeAt(end - 2) === 0x5c)) end--
  if (end > 400) throw bad('too long')
  let n = 1
  let lenAt = 0
  for (let i = 0; i < end; i++) {
    let c = name.charCodeAt(i)
    if (c === 0x2e) {
      if (n - lenAt - 1 === 0) throw bad('empty label')
      NW[lenAt] = n - lenAt - 1
      lenAt = n++
      continue
    }
    if (c === 0x5c) {
      if (i + 3 < end + 1 && isDigit(name.charCodeAt(i + 1)) && isDigit(name.charCodeAt(i + 2)) && isDigit(name.charCodeAt(i + 3))) {
        c = (name.charCodeAt(i + 1) - 0x30) * 100 + (name.charCodeAt(i + 2) - 0x30) * 10 + (name.charCodeAt(i + 3) - 0x30)
        i += 3
      } else if (i + 1 < end) {
        c = name.charCodeAt(++i)
      } else {
        throw bad('bad escape')
      }
    }
    if (c > 255) throw bad('bad character')
    NW[n++] = c
    if (n - lenAt - 1 > 63) throw bad('label longer than 63 bytes')
    if (n > 255) throw bad('name longer than 255 bytes')
  }
  if (n - lenAt - 1 === 0) throw bad('empty label')
  NW[lenAt] = n - lenAt - 1
  NW[n++] = 0
  if (n > 255) throw bad('name longer than 255 bytes')
  return n
}

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39

/** Is this text a valid domain name for nameToWire (lowercase or not)? */
export function isValidName (name: string): boolean {
  try { nameToWire(name); return true } catch { return false }
}

// ---- response encoding -------------------------------------------------------------------------

export interface SrvData { priority: number, weight: number, port: number, target: string }
export interface SoaData { mname: string, rname: string, serial: number, refresh: number, retry: number, expire: number, minimum: number }

/** A record to encode. A/AAAA data is the address text; CNAME/PTR/NS data a name. Class IN. */
export type RR =
  | { name: string, type: typeof TYPE.A | typeof TYPE.AAAA, ttl: number, data: string }
  | { name: string, type: typeof TYPE.CNAME | typeof TYPE.PTR | typeof TYPE.NS, ttl: number, data: string }
  | { name: string, type: typeof TYPE.SRV, ttl: number, data: SrvData }
  | { name: string, type: typeof TYPE.TXT, ttl: number, data: readonly string[] }
  | { name: string, type: typeof TYPE.SOA, ttl: number, data: SoaData }

export interface ResponseSections {
  rcode: number
  /** authoritative answer */
  aa?: boolean
  answers?: readonly RR[]
  authority?: readonly RR[]
  /** may be dropped (without TC) when the response does not fit, per RFC 2181 9 */
  additional?: readonly RR[]
}

/** What the encoders need from a query (a parsed Query has it all). */
export interface QuestionSource {
  readonly msg: Uint8Array
  readonly id: number
  readonly flags: number
  readonly qnameEnd: number
  readonly questionEnd: number
  readonly compressed: boolean
  readonly qname: string
  readonly qtype: number
  readonly qclass: number
  readonly edns: boolean
  readonly dnssecOk: boolean
  readonly maxUdp: number
}

export interface EncodeOptions {
  /** the size limit: default the query's UDP limit (q.maxUdp); MAX_MESSAGE for TCP */
  maxSize?: number
  /** set RA (recursion available); default true, we forward everything else */
  ra?: boolean
}

const OUT = Buffer.allocUnsafe(MAX_MESSAGE + 8192)
let pos = 0
// The compression table: hash of a lowercased wire suffix -> offset of its first copy in OUT.
// Open addressing over typed arrays, entries of older messages told apart by a generation stamp,
// so starting a message costs nothing and nothing is allocated. Full, it just stops remembering.
const TBITS = 12
const TSIZE = 1 << TBITS
const T_KEY = new Int32Array(TSIZE)
const T_VAL = new Int32Array(TSIZE)
const T_GEN = new Int32Array(TSIZE)
let tgen = 0
let tcount = 0

function tableReset (): void {
  tcount = 0
  if (++tgen === 0x7fffffff) { T_GEN.fill(0); tgen = 1 }
}

function tableGet (h: number): number {
  for (let i = h & (TSIZE - 1); ; i = (i + 1) & (TSIZE - 1)) {
    if (T_GEN[i] !== tgen) return -1
    if (T_KEY[i] === h) return T_VAL[i]!
  }
}

function tableSet (h: number, v: number): void {
  if (tcount >= TSIZE >> 1) return
  let i = h & (TSIZE - 1)
  while (T_GEN[i] === tgen) i = (i + 1) & (TSIZE - 1)
  T_GEN[i] = tgen
  T_KEY[i] = h
  T_VAL[i] = v
  tcount++
}

const STARTS = new Int32Array(128)
const HASHES = new Int32Array(128)

/**
 * The hashes of every suffix of the uncompressed wire name at buf[i] (ASCII-lowercased), in one
 * backward pass: HASHES[k] is the hash of the suffix starting at STARTS[k]. Returns the label count.
 */
function suffixHashes (buf: Uint8Array, i: number): number {
  let n = 0
  for (let l = buf[i]!; l !== 0; l = buf[i]!) { STARTS[n++] = i; i += l + 1 }
  let h = FNV_OFFSET
  for (let k = n - 1; k >= 0; k--) {
    const at = STARTS[k]!
    const l = buf[at]!
    for (let j = at + 1; j <= at + l; j++) {
      const c = buf[j]!
      h = Math.imul(h ^ (c >= 0x41 && c <= 0x5a ? c | 0x20 : c), FNV_PRIME)
    }
    h = Math.imul(h ^ l, FNV_PRIME)
    HASHES[k] = h
  }
  return n
}

/** Does the name at OUT[o] (which may end in pointers, all backwards) equal wire[i..]? ASCII case-insensitive. */
function sameSuffix (o: number, wire: Uint8Array, i: number): boolean {
  for (;;) {
    let l = OUT[o]!
    while (l >= 0xc0) { o = ((l & 0x3f) << 8) | OUT[o + 1]!; l = OUT[o]! }
    if (l !== wire[i]) return false
    if (l === 0) return true
    if (!labelEquals(OUT, o + 1, wire, i + 1, l)) return false
    o += l + 1
    i += l + 1
  }
}

function put16 (v: number): void { OUT[pos++] = v >> 8; OUT[pos++] = v & 0xff }
function put32 (v: number): void { OUT[pos++] = v >>> 24; OUT[pos++] = (v >>> 16) & 0xff; OUT[pos++] = (v >>> 8) & 0xff; OUT[pos++] = v & 0xff }

/**
 * Writes a wire name, pointing at an earlier copy of its longest known suffix when compress is
 * set (RFC 1035 4.1.4). Suffixes written in full are remembered as pointer targets either way.
 */
function writeName (wire: Uint8Array, compress: boolean): void {
  const n = suffixHashes(wire, 0)
  for (let k = 0; k < n; k++) {
    const i = STARTS[k]!
    const at = tableGet(HASHES[k]!)
    if (at >= 0 && sameSuffix(at, wire, i)) {
      if (compress) { put16(0xc000 | at); return }
      // an SRV target: the rest in full (its suffixes are in the table already)
      const end = STARTS[n - 1]! + wire[STARTS[n - 1]!]! + 1
      for (let j = i; j < end; j++) OUT[pos++] = wire[j]!
      break
    }
    if (at < 0 && pos < 0x3fff) tableSet(HASHES[k]!, pos)
    for (let j = i, e = i + wire[i]! + 1; j < e; j++) OUT[pos++] = wire[j]!
  }
  OUT[pos++] = 0
}

function txtChunks (strings: readonly string[]): Uint8Array[] {
  const out: Uint8Array[] = []
  for (const s of strings) {
    const b = Buffer.from(s, 'utf8')
    if (b.length === 0) { out.push(b); continue }
    for (let i = 0; i < b.length; i += 255) out.push(b.subarray(i, i + 255))
  }
  return out
}

/** Writes one RR; false when it does not fit in the scratch buffer (the message is too big). */
/**
 * Writes a name given as text: the common case (no escapes) in one pass into the scratch, dots
 * becoming label lengths; anything unusual (escapes, characters > 0xff, bad lengths) takes the
 * strict path, which throws TypeError for what is invalid.
 */
function writeText (name: string, compress: boolean): void {
  const len = name.length
  if (len === 0 || len > 254) { textToWire(name); writeName(NW, compress); return }
  let end = len + 1
  if (name.charCodeAt(len - 1) === 0x2e) end-- // trailing dot
  let lenAt = 0
  for (let i = 1; i < end; i++) {
    const c = name.charCodeAt(i - 1)
    if (c === 0x2e) {
      const ll = i - lenAt - 1
      if (ll === 0 || ll > 63) { textToWire(name); writeName(NW, compress); return }
      NW[lenAt] = ll
      lenAt = i
    } else if (c === 0x5c || c > 0xff) {
      textToWire(name); writeName(NW, compress); return
    } else {
      NW[i] = c
    }
  }
  const ll = end - lenAt - 1
  if (ll === 0 || ll > 63 || end > 255) { textToWire(name); writeName(NW, compress); return }
  NW[lenAt] = ll
  NW[end] = 0
  writeName(NW, compress)
}

function writeRR (rr: RR): boolean {
  let rdata: Uint8Array | undefined
  let chunks: Uint8Array[] | undefined
  // an upper bound of the RR's size: a name's wire form is at most its text length + 2
  let bound = rr.name.length + 12
  switch (rr.type) {
    case TYPE.A: rdata = parseIPv4(rr.data); if (rdata == null) throw new TypeError(`bad A address ${rr.data}`); bound += 4; break
    case TYPE.AAAA: rdata = parseIPv6(rr.data); if (rdata == null) throw new TypeError(`bad AAAA address ${rr.data}`); bound += 16; break
    case TYPE.CNAME: case TYPE.PTR: case TYPE.NS: bound += rr.data.length + 2; break
    case TYPE.SRV: bound += 8 + rr.data.target.length; break
    case TYPE.SOA: bound += rr.data.mname.length + rr.data.rname.length + 24; break
    case TYPE.TXT: chunks = txtChunks(rr.data); for (const c of chunks) bound += c.length + 1; break
    default: throw new TypeError(`unsupported RR type ${(rr as { type: number }).type}`)
  }
  if (pos + bound > OUT.length) return false
  writeText(rr.name, true)
  put16(rr.type)
  put16(CLASS.IN)
  put32(rr.ttl >>> 0)
  const rdlenAt = pos
  pos += 2
  switch (rr.type) {
    case TYPE.A: case TYPE.AAAA: for (let i = 0; i < rdata!.length; i++) OUT[pos++] = rdata![i]!; break
    case TYPE.CNAME: case TYPE.PTR: case TYPE.NS: writeText(rr.data, true); break
    case TYPE.SRV:
      put16(rr.data.priority); put16(rr.data.weight); put16(rr.data.port)
      writeText(rr.data.target, false) // RFC 2782: the target is not compressed
      break
    case TYPE.SOA:
      writeText(rr.data.mname, true); writeText(rr.data.rname, true)
      put32(rr.data.serial >>> 0); put32(rr.data.refresh >>> 0); put32(rr.data.retry >>> 0); put32(rr.data.expire >>> 0); put32(rr.data.minimum >>> 0)
      break
    case TYPE.TXT:
      if (chunks!.length === 0) OUT[pos++] = 0
      for (const c of chunks!) { OUT[pos++] = c.length; OUT.set(c, pos); pos += c.length }
      break
  }
  const rdlen = pos - rdlenAt - 2
  OUT[rdlenAt] = rdlen >> 8
  OUT[rdlenAt + 1] = rdlen & 0xff
  return true
}

function writeOpt (rcode: number, dnssecOk: boolean): void {
  OUT[pos++] = 0 // root
  put16(TYPE.OPT)
  put16(EDNS_PAYLOAD)
  OUT[pos++] = (rcode >> 4) & 0xff // extended rcode
  OUT[pos++] = 0 // version
  OUT[pos++] = dnssecOk ? 0x80 : 0
  OUT[pos++] = 0
  put16(0) // no options
}

/** Size of the OPT record we append. */
export const OPT_SIZE = 11

function responseFlags (q: QuestionSource, rcode: number, aa: boolean, tc: boolean, ra: boolean): number {
  return 0x8000 | (aa ? 0x0400 : 0) | (tc ? 0x0200 : 0) | (q.flags & 0x0100) | (ra ? 0x0080 : 0) | (q.flags & 0x0010) | (rcode & 0x0f)
}

/** Writes header + question (the client's bytes, lowercased for the compression table). */
function writeHead (q: QuestionSource, flags: number, an: number, ns: number, ar: number): void {
  tableReset()
  pos = 0
  put16(q.id); put16(flags); put16(1); put16(an); put16(ns); put16(ar)
  if (!q.compressed && q.questionEnd > 12 && q.questionEnd <= q.msg.length) {
    const msg = q.msg
    for (let i = 12, e = q.questionEnd; i < e; i++) OUT[i] = msg[i]!
    pos = q.questionEnd
    // register the question name's suffixes (all of them point into the question)
    const n = suffixHashes(OUT, 12)
    for (let k = 0; k < n; k++) tableSet(HASHES[k]!, STARTS[k]!)
  } else {
    writeText(q.qname, false)
    put16(q.qtype)
    put16(q.qclass)
  }
}

/** Encodes into OUT; returns the length, or -1 when it does not fit in a DNS message. */
function encodeInto (q: QuestionSource, r: ResponseSections, mode: 'full' | 'noadditional' | 'truncated', ra: boolean): number {
  const answers = mode === 'truncated' ? [] : r.answers ?? []
  const authority = mode === 'truncated' ? [] : r.authority ?? []
  const additional = mode === 'full' ? r.additional ?? [] : []
  const ar = additional.length + (q.edns ? 1 : 0)
  writeHead(q, responseFlags(q, r.rcode, r.aa === true, mode === 'truncated', ra), answers.length, authority.length, ar)
  for (const rr of answers) if (!writeRR(rr)) return -1
  for (const rr of authority) if (!writeRR(rr)) return -1
  for (const rr of additional) if (!writeRR(rr)) return -1
  if (q.edns) writeOpt(r.rcode, q.dnssecOk)
  return pos <= MAX_MESSAGE ? pos : -1
}

/** A copy of OUT[0, n) from Node's buffer pool: for responses that are sent and dropped. */
function copyOut (n: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  OUT.copy(b, 0, 0, n)
  return b
}

/** A copy in its own memory: for responses kept in a cache (pool slabs would stay pinned). */
function keepOut (n: number): Buffer {
  const b = Buffer.allocUnsafeSlow(n)
  OUT.copy(b, 0, 0, n)
  return b
}

/**
 * Encodes a response to q. When it does not fit in maxSize, first the additional section is left
 * out (no TC, RFC 2181 9), then, if it still does not fit, the response is header + question
 * (+ OPT) with TC=1, like BIND over UDP. The question is the client's bytes (case preserved);
 * owner names equal to the question point at offset 12, other names use a per-message
 * compression table (SRV targets are written in full, RFC 2782). RD and CD are echoed; an OPT
 * (1232 bytes, the query's DO bit, the extended rcode) is added when the query had EDNS.
 */
export function encodeResponse (q: QuestionSource, r: ResponseSections, opts: EncodeOptions = {}): Buffer {
  const max = opts.maxSize ?? q.maxUdp
  const ra = opts.ra ?? true
  let n = encodeInto(q, r, 'full', ra)
  if ((n < 0 || n > max) && (r.additional?.length ?? 0) > 0) n = encodeInto(q, r, 'noadditional', ra)
  if (n < 0 || n > max) n = encodeInto(q, r, 'truncated', ra)
  return copyOut(n)
}

/**
 * The three shapes a cached response can take, so the cache can serve any size limit without
 * re-encoding: full (the whole answer, or TC when even 65535 bytes are not enough), noAdditional
 * and truncated (TC=1, no records) only exist when full is over 512 bytes (a limit is never
 * below 512). A size limit picks full if it fits, else noAdditional if that fits, else truncated:
 * what encodeResponse does.
 */
export interface ResponseSet { full: Buffer, noAdditional: Buffer | undefined, truncated: Buffer | undefined }
export function encodeResponseSet (q: QuestionSource, r: ResponseSections, opts: { ra?: boolean } = {}): ResponseSet {
  const ra = opts.ra ?? true
  let n = encodeInto(q, r, 'full', ra)
  if (n < 0 && (r.additional?.length ?? 0) > 0) n = encodeInto(q, r, 'noadditional', ra)
  if (n < 0) n = encodeInto(q, r, 'truncated', ra)
  const full = keepOut(n)
  if (full.length <= PLAIN_UDP_MAX) return { full, noAdditional: undefined, truncated: undefined }
  const noAdditional = (r.additional?.length ?? 0) > 0 ? keepOut(encodeInto(q, r, 'noadditional', ra)) : undefined
  const truncated = keepOut(encodeInto(q, r, 'truncated', ra))
  return { full, noAdditional, truncated }
}

/**
 * The response to a query parseQuery refused (FORMERR, NOTIMP, BADVERS): the ID, opcode, RD and
 * CD copied, the question echoed when it parsed, an OPT when the query had valid EDNS (BADVERS:
 * always, carrying the extended rcode).
 */
export function encodeError (msg: Uint8Array, f: QueryFailure): Buffer {
  const rcode = f.error === 'formerr' ? RCODE.FORMERR : f.error === 'notimp' ? RCODE.NOTIMP : RCODE.BADVERS
  const qe = f.questionEnd > 12 && f.questionEnd <= msg.length ? f.questionEnd : 0
  pos = 0
  put16(f.id)
  put16(0x8000 | (f.flags & 0x7800) | (f.flags & 0x0100) | 0x0080 | (f.flags & 0x0010) | (rcode & 0x0f))
  put16(qe > 0 ? 1 : 0); put16(0); put16(0); put16(f.edns ? 1 : 0)
  if (qe > 0) { OUT.set(msg.subarray(12, qe), 12); pos = qe }
  if (f.edns) writeOpt(rcode, f.dnssecOk)
  return copyOut(pos)
}

/**
 * A response with only a header, the question and an rcode (e.g. SERVFAIL when upstreams fail,
 * REFUSED). Same flags rules as encodeResponse.
 */
export function encodeRcode (q: QuestionSource, rcode: number, opts: { ra?: boolean, aa?: boolean } = {}): Buffer {
  return copyOut(encodeInto(q, { rcode, aa: opts.aa }, 'full', opts.ra ?? true))
}

// ---- hot-path patching ---------------------------------------------------------------------------

/** Sets a response's ID and copies RD and CD from the query's flags word. */
export function patchHeader (buf: Uint8Array, id: number, queryFlags: number): void {
  buf[0] = id >> 8
  buf[1] = id & 0xff
  buf[2] = (buf[2]! & 0xfe) | ((queryFlags >> 8) & 0x01)
  buf[3] = (buf[3]! & 0xef) | (queryFlags & 0x10)
}

/**
 * Copies a pre-encoded response (made for a query with the same name, type, class and EDNS flag)
 * into out for query q: new ID, the query's RD/CD, the client's spelling of the question (when
 * it was mixed case), the DO bit in the OPT (our OPT is always the last 11 bytes). out must be at
 * least template.length long. Returns the length.
 */
export function writeResponse (template: Uint8Array, q: Query, out: Uint8Array): number {
  const n = template.length
  out.set(template)
  const id = q.id
  const flags = q.flags
  out[0] = id >> 8
  out[1] = id & 0xff
  out[2] = (out[2]! & 0xfe) | ((flags >> 8) & 0x01)
  out[3] = (out[3]! & 0xef) | (flags & 0x10)
  if (q.mixedCase) {
    const msg = q.msg
    for (let i = 12, e = q.qnameEnd; i < e; i++) out[i] = msg[i]!
  }
  if (q.edns) out[n - 4] = q.dnssecOk ? 0x80 : 0
  return n
}

/** writeResponse into a fresh Buffer. */
export function copyResponse (template: Uint8Array, q: Query): Buffer {
  const b = Buffer.allocUnsafe(template.length)
  writeResponse(template, q, b)
  return b
}

// ---- responses from upstream --------------------------------------------------------------------

export interface ResponseMeta {
  id: number
  flags: number
  /** the full rcode: header bits plus the OPT's extended rcode */
  rcode: number
  tc: boolean
  aa: boolean
  qdcount: number
  ancount: number
  nscount: number
  arcount: number
  /** offset after the question when there is exactly one, else -1 */
  questionEnd: number
  qtype: number
  qclass: number
  /**
   * How long the response may be cached, in seconds: the minimum TTL over the answer RRs; for a
   * negative answer (NXDOMAIN, or NOERROR without answers) also min(SOA TTL, SOA MINIMUM) of the
   * authority SOA (RFC 2308 5). -1 when there is nothing to base it on (no answers and no SOA).
   * TTLs with the top bit set count as 0 (RFC 2181 8).
   */
  minTtl: number
  negative: boolean
  /** the response carries an OPT record */
  edns: boolean
}
export interface ResponseMalformed { error: 'malformed' }
const MALFORMED: ResponseMalformed = Object.freeze({ error: 'malformed' as const })

/**
 * Header facts and cacheability of an upstream response, walking every RR without following
 * compression pointers (so no loops are possible). Malformed: shorter than a header, QR=0, or an
 * RR running past the end — unless TC is set, where a cut-off tail is expected and the walk
 * just stops.
 */
export function parseResponseMeta (msg: Uint8Array): ResponseMeta | ResponseMalformed {
  try {
    return parseMeta(msg)
  } catch {
    wireStats.internalErrors++
    return MALFORMED
  }
}

function parseMeta (msg: Uint8Array): ResponseMeta | ResponseMalformed {
  const len = msg.length
  if (len < 12 || (msg[2]! & 0x80) === 0) return MALFORMED
  const flags = u16(msg, 2)
  const tc = (flags & 0x0200) !== 0
  const qd = u16(msg, 4)
  const an = u16(msg, 6)
  const ns = u16(msg, 8)
  const ar = u16(msg, 10)
  const meta: ResponseMeta = {
    id: u16(msg, 0), flags, rcode: flags & 0x0f, tc, aa: (flags & 0x0400) !== 0, qdcount: qd, ancount: an, nscount: ns, arcount: ar,
    questionEnd: -1, qtype: 0, qclass: 0, minTtl: -1, negative: false, edns: false
  }
  let off = 12
  for (let i = 0; i < qd; i++) {
    const e = skipName(msg, off)
    if (e < 0 || e + 4 > len) return tc ? finish(meta, -1, -1) : MALFORMED
    if (qd === 1) { meta.qtype = u16(msg, e); meta.qclass = u16(msg, e + 2); meta.questionEnd = e + 4 }
    off = e + 4
  }
  let ansTtl = -1
  let soaTtl = -1
  const total = an + ns + ar
  for (let i = 0; i < total; i++) {
    const e = skipName(msg, off)
    if (e < 0 || e + 10 > len) return tc ? finish(meta, ansTtl, soaTtl) : MALFORMED
    const type = u16(msg, e)
    const rdata = e + 10
    const rdEnd = rdata + u16(msg, e + 8)
    if (rdEnd > len) return tc ? finish(meta, ansTtl, soaTtl) : MALFORMED
    let ttl = ((msg[e + 4]! << 24) | (msg[e + 5]! << 16) | (msg[e + 6]! << 8) | msg[e + 7]!)
    if (ttl < 0) ttl = 0 // top bit set
    if (i < an) {
      if (ansTtl < 0 || ttl < ansTtl) ansTtl = ttl
    } else if (i < an + ns) {
      if (type === TYPE.SOA && rdEnd - rdata >= 22) {
        let min = ((msg[rdEnd - 4]! << 24) | (msg[rdEnd - 3]! << 16) | (msg[rdEnd - 2]! << 8) | msg[rdEnd - 1]!)
        if (min < 0) min = 0
        const t = min < ttl ? min : ttl
        if (soaTtl < 0 || t < soaTtl) soaTtl = t
      }
    } else if (type === TYPE.OPT && !meta.edns) {
      meta.edns = true
      meta.rcode |= msg[e + 4]! << 4
    }
    off = rdEnd
  }
  return finish(meta, ansTtl, soaTtl)
}

function finish (meta: ResponseMeta, ansTtl: number, soaTtl: number): ResponseMeta {
  const rc = meta.rcode
  meta.negative = rc === RCODE.NXDOMAIN || (rc === RCODE.NOERROR && meta.ancount === 0)
  if (!meta.negative) meta.minTtl = ansTtl
  else meta.minTtl = soaTtl < 0 ? -1 : ansTtl >= 0 && ansTtl < soaTtl ? ansTtl : soaTtl
  return meta
}

/** len label bytes at a[ai] and b[bi] are equal, ASCII case-insensitively. */
function labelEquals (a: Uint8Array, ai: number, b: Uint8Array, bi: number, len: number): boolean {
  for (let k = 0; k < len; k++) {
    let x = a[ai + k]!
    let y = b[bi + k]!
    if (x >= 0x41 && x <= 0x5a) x |= 0x20
    if (y >= 0x41 && y <= 0x5a) y |= 0x20
    if (x !== y) return false
  }
  return true
}

/** Compares two names in two messages, ASCII case-insensitively, following backward pointers (bounds-checked). */
export function nameEquals (a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  let hops = 0
  for (;;) {
    if (ao >= a.length || bo >= b.length) return false
    let la = a[ao]!
    while (la >= 0xc0) {
      if (ao + 1 >= a.length || ++hops > 255) return false
      const t = ((la & 0x3f) << 8) | a[ao + 1]!
      if (t >= ao) return false
      ao = t
      la = a[ao]!
    }
    let lb = b[bo]!
    while (lb >= 0xc0) {
      if (bo + 1 >= b.length || ++hops > 255) return false
      const t = ((lb & 0x3f) << 8) | b[bo + 1]!
      if (t >= bo) return false
      bo = t
      lb = b[bo]!
    }
    if (la !== lb || la > 63) return false
    if (la === 0) return true
    if (ao + 1 + la > a.length || bo + 1 + lb > b.length) return false
    if (!labelEquals(a, ao + 1, b, bo + 1, la)) return false
    ao += la + 1
    bo += lb + 1
  }
}

/**
 * Does an upstream response answer this query: same ID, one question with the same name (case-
 * insensitive; compare bytes yourself if you use 0x20 randomisation), type and class?
 */
export function questionMatches (q: Query, response: Uint8Array, meta: ResponseMeta): boolean {
  try {
    return meta.id === q.id && meta.qdcount === 1 && meta.questionEnd > 0 && meta.qtype === q.qtype && meta.qclass === q.qclass &&
      nameEquals(q.msg, 12, response, 12)
  } catch {
    wireStats.internalErrors++
    return false
  }
}

// ---- queries and full decoding (tests, forwarder CNAME chasing, diagnostics) --------------------

export interface QueryOptions {
  id: number
  name: string
  type: number
  class?: number
  rd?: boolean
  cd?: boolean
  edns?: { udpSize?: number, do?: boolean, version?: number, options?: ReadonlyArray<{ code: number, data: Uint8Array }> }
}

/** Encodes a query (one question, optional OPT). The name is not compressed. */
export function encodeQuery (o: QueryOptions): Buffer {
  const name = nameToWire(o.name)
  const opts = o.edns?.options ?? []
  let optLen = 0
  for (const op of opts) optLen += 4 + op.data.length
  const n = 12 + name.length + 4 + (o.edns != null ? 11 + optLen : 0)
  const b = Buffer.alloc(n)
  b.writeUInt16BE(o.id & 0xffff, 0)
  b.writeUInt16BE((o.rd === true ? 0x0100 : 0) | (o.cd === true ? 0x0010 : 0), 2)
  b.writeUInt16BE(1, 4)
  b.writeUInt16BE(o.edns != null ? 1 : 0, 10)
  b.set(name, 12)
  let p = 12 + name.length
  b.writeUInt16BE(o.type, p); b.writeUInt16BE(o.class ?? CLASS.IN, p + 2); p += 4
  if (o.edns != null) {
    b[p++] = 0
    b.writeUInt16BE(TYPE.OPT, p); b.writeUInt16BE(o.edns.udpSize ?? EDNS_PAYLOAD, p + 2)
    b[p + 4] = 0; b[p + 5] = o.edns.version ?? 0; b[p + 6] = o.edns.do === true ? 0x80 : 0; b[p + 7] = 0
    b.writeUInt16BE(optLen, p + 8)
    p += 10
    for (const op of opts) { b.writeUInt16BE(op.code, p); b.writeUInt16BE(op.data.length, p + 2); b.set(op.data, p + 4); p += 4 + op.data.length }
  }
  return b
}

export interface DecodedRR {
  name: string
  type: number
  class: number
  ttl: number
  /** A/AAAA: address text; CNAME/PTR/NS: name; SRV/SOA: objects; TXT: strings (latin1); else bytes */
  data: string | string[] | SrvData | SoaData | Uint8Array
}
export interface DecodedMessage {
  id: number
  flags: number
  qr: boolean
  opcode: number
  aa: boolean
  tc: boolean
  rd: boolean
  ra: boolean
  cd: boolean
  /** header rcode plus the OPT's extended rcode */
  rcode: number
  questions: Array<{ name: string, type: number, class: number }>
  answers: DecodedRR[]
  authority: DecodedRR[]
  /** without the OPT record, which is described by `opt` */
  additional: DecodedRR[]
  opt?: { udpSize: number, version: number, do: boolean, extRcode: number, options: Uint8Array }
}

/** Decodes a whole message (names lowercased only if asked); undefined when malformed. Never throws. */
export function decodeMessage (msg: Uint8Array, lowercase = false): DecodedMessage | undefined {
  try {
    return decode(msg, lowercase)
  } catch {
    wireStats.internalErrors++
    return undefined
  }
}

function decode (msg: Uint8Array, lower: boolean): DecodedMessage | undefined {
  if (msg.length < 12) return undefined
  const flags = u16(msg, 2)
  const m: DecodedMessage = {
    id: u16(msg, 0), flags, qr: (flags & 0x8000) !== 0, opcode: (flags >> 11) & 0xf, aa: (flags & 0x0400) !== 0, tc: (flags & 0x0200) !== 0,
    rd: (flags & 0x0100) !== 0, ra: (flags & 0x0080) !== 0, cd: (flags & 0x0010) !== 0, rcode: flags & 0xf,
    questions: [], answers: [], authority: [], additional: []
  }
  let off = 12
  for (let i = 0, qd = u16(msg, 4); i < qd; i++) {
    const n = readName(msg, off, lower)
    if (n == null || n.end + 4 > msg.length) return undefined
    m.questions.push({ name: n.name, type: u16(msg, n.end), class: u16(msg, n.end + 2) })
    off = n.end + 4
  }
  const counts = [u16(msg, 6), u16(msg, 8), u16(msg, 10)]
  const sections = [m.answers, m.authority, m.additional]
  for (let s = 0; s < 3; s++) {
    for (let i = 0; i < counts[s]!; i++) {
      const n = readName(msg, off, lower)
      if (n == null || n.end + 10 > msg.length) return undefined
      const e = n.end
      const type = u16(msg, e)
      const cls = u16(msg, e + 2)
      const ttl = ((msg[e + 4]! << 24) | (msg[e + 5]! << 16) | (msg[e + 6]! << 8) | msg[e + 7]!) >>> 0
      const rd = e + 10
      const rdEnd = rd + u16(msg, e + 8)
      if (rdEnd > msg.length) return undefined
      off = rdEnd
      if (type === TYPE.OPT && s === 2) {
        m.opt = { udpSize: cls, extRcode: msg[e + 4]!, version: msg[e + 5]!, do: (msg[e + 6]! & 0x80) !== 0, options: msg.slice(rd, rdEnd) }
        m.rcode |= msg[e + 4]! << 4
        continue
      }
      const data = decodeRdata(msg, type, rd, rdEnd, lower)
      if (data === undefined) return undefined
      sections[s]!.push({ name: n.name, type, class: cls, ttl, data })
    }
  }
  return m
}

function decodeRdata (msg: Uint8Array, type: number, rd: number, rdEnd: number, lower: boolean): DecodedRR['data'] | undefined {
  const size = rdEnd - rd
  const nameIn = (at: number): { name: string, end: number } | undefined => {
    const n = readName(msg, at, lower)
    return n != null && n.end <= rdEnd ? n : undefined
  }
  switch (type) {
    case TYPE.A: return size === 4 ? formatIPv4(msg.subarray(rd, rdEnd)) : undefined
    case TYPE.AAAA: return size === 16 ? formatIPv6(msg.subarray(rd, rdEnd)) : undefined
    case TYPE.CNAME: case TYPE.PTR: case TYPE.NS: {
      const n = nameIn(rd)
      return n != null && n.end === rdEnd ? n.name : undefined
    }
    case TYPE.SRV: {
      if (size < 7) return undefined
      const n = nameIn(rd + 6)
      return n != null && n.end === rdEnd ? { priority: u16(msg, rd), weight: u16(msg, rd + 2), port: u16(msg, rd + 4), target: n.name } : undefined
    }
    case TYPE.SOA: {
      const a = nameIn(rd)
      const b = a != null ? nameIn(a.end) : undefined
      if (a == null || b == null || b.end + 20 !== rdEnd) return undefined
      const at = (i: number): number => ((msg[b.end + i]! << 24) | (msg[b.end + i + 1]! << 16) | (msg[b.end + i + 2]! << 8) | msg[b.end + i + 3]!) >>> 0
      return { mname: a.name, rname: b.name, serial: at(0), refresh: at(4), retry: at(8), expire: at(12), minimum: at(16) }
    }
    case TYPE.TXT: {
      const out: string[] = []
      let p = rd
      while (p < rdEnd) {
        const l = msg[p]!
        if (p + 1 + l > rdEnd) return undefined
        out.push(Buffer.from(msg.buffer, msg.byteOffset + p + 1, l).toString('latin1'))
        p += 1 + l
      }
      return out
    }
    default: return msg.slice(rd, rdEnd)
  }
}
