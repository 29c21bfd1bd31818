// Everything outside the cluster zone goes to the node's upstream resolvers: a cache (positive
// and negative, for as long as the TTLs allow, with TTLs counted down in what we serve),
// identical in-flight queries coalesced, failover between upstreams, and quick SERVFAIL while
// every upstream is down (one probe a second finds out when one is back).
import { createSocket, type Socket } from 'node:dgram'
import { connect } from 'node:net'
import { randomInt } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { isIPv4 } from 'node:net'
import type { Logger } from 'pino'
import { RCODE, encodeRcode, nameEquals, parseResponseMeta, patchHeader, skipName, type Query, type QuestionSource } from './wire.ts'

export interface Upstream { host: string, port: number }

/** nameserver lines of a resolv.conf (IPv4), without the addresses we serve on ourselves. */
export function parseResolvConf (text: string, exclude: string[] = []): Upstream[] {
  const out: Upstream[] = []
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim()
    const m = /^nameserver\s+(\S+)$/.exec(line)
    if (m == null) continue
    const host = m[1]!
    if (!isIPv4(host) || exclude.includes(host) || host === '0.0.0.0') continue
    if (!out.some((u) => u.host === host)) out.push({ host, port: 53 })
  }
  return out
}

export async function upstreamsFromResolvConf (file: string, exclude: string[]): Promise<Upstream[]> {
  return parseResolvConf(await readFile(file, 'utf8'), exclude)
}

/** Offsets of the TTL fields of every RR except OPT (whose "TTL" holds EDNS flags). */
export function ttlOffsets (msg: Uint8Array): number[] {
  const out: number[] = []
  if (msg.length < 12) return out
  const count = (i: number): number => (msg[i]! << 8) | msg[i + 1]!
  let off = 12
  for (let i = count(4); i > 0; i--) {
    off = skipName(msg, off)
    if (off < 0 || off + 4 > msg.length) return out
    off += 4
  }
  const rrs = count(6) + count(8) + count(10)
  for (let i = 0; i < rrs; i++) {
    off = skipName(msg, off)
    if (off < 0 || off + 10 > msg.length) return out
    const type = count(off)
    if (type !== 41) out.push(off + 4)
    off += 10 + count(off + 8)
  }
  return out
}

interface CacheEntry { bytes: Buffer, ttlAt: number[], storedAt: number, expiresAt: number }
/** What an answer needs from a query once the caller has reused its Query object. */
type Question = QuestionSource & { mixedCase: boolean }
interface Waiter { q: Question, reply: (bytes: Uint8Array) => void }
interface InFlight { key: string, query: Buffer, waiters: Waiter[], tried: number, upstreamId: number, upstream: string, timer: NodeJS.Timeout | undefined, tcp: boolean }

export interface ForwarderStats { queries: number, cacheHits: number, upstreamTimeouts: number, servfails: number, malformed: number }

export interface ForwarderOptions {
  upstreams: Upstream[]
  /** per-attempt wait for an upstream's answer */
  timeoutMs?: number
  /** an upstream that timed out is skipped this long (a probe a second checks it) */
  downForMs?: number
  cacheEntries?: number
  maxTtlSeconds?: number
  maxNegativeTtlSeconds?: number
  log: Logger
}

export class Forwarder {
  readonly stats: ForwarderStats = { queries: 0, cacheHits: 0, upstreamTimeouts: 0, servfails: 0, malformed: 0 }
  private readonly opts: Required<Omit<ForwarderOptions, 'log'>> & { log: Logger }
  private socket: Socket | undefined
  private readonly cache = new Map<string, CacheEntry>()
  private readonly inflight = new Map<string, InFlight>()
  private readonly byUpstreamId = new Map<number, InFlight>()
  private readonly downUntil = new Map<string, number>()
  private lastProbe = 0

  constructor (opts: ForwarderOptions) {
    this.opts = { timeoutMs: 1_000, downForMs: 5_000, cacheEntries: 10_000, maxTtlSeconds: 3_600, maxNegativeTtlSeconds: 300, ...opts }
  }

  async start (): Promise<void> {
    const s = createSocket({ type: 'udp4' })
    s.on('message', (msg) => { this.onUpstreamMessage(msg) })
    s.on('error', (err) => { this.opts.log.warn({ err: err.message }, 'upstream DNS socket error') })
    await new Promise<void>((resolve) => { s.bind(0, resolve) })
    this.socket = s
  }

  get upstreams (): Upstream[] { return this.opts.upstreams }

  /** Answers q from the cache or an upstream; reply is called exactly once. */
  forward (q: Query, reply: (bytes: Uint8Array) => void, tcp = false): void {
    this.stats.queries++
    const key = q.key
    const hit = this.cache.get(key)
    if (hit != null) {
      const now = Date.now()
      if (now < hit.expiresAt) {
        this.stats.cacheHits++
        // LRU: move to the back
        this.cache.delete(key)
        this.cache.set(key, hit)
        reply(this.fromCache(hit, q, now))
        return
      }
      this.cache.delete(key)
    }
    // the caller reuses its Query object: keep what the answer needs
    const waiter: Waiter = {
      q: { msg: q.msg, id: q.id, flags: q.flags, qnameEnd: q.qnameEnd, questionEnd: q.questionEnd, compressed: q.compressed, qname: q.qname, qtype: q.qtype, qclass: q.qclass, edns: q.edns, dnssecOk: q.dnssecOk, maxUdp: q.maxUdp, mixedCase: q.mixedCase },
      reply
    }
    const pending = this.inflight.get(key)
    if (pending != null) { pending.waiters.push(waiter); return }
    if (this.opts.upstreams.length === 0) { this.fail([waiter]); return }
    const flight: InFlight = { key, query: Buffer.from(q.msg), waiters: [waiter], tried: 0, upstreamId: 0, upstream: '', timer: undefined, tcp }
    this.inflight.set(key, flight)
    this.attempt(flight)
  }

  private fromCache (e: CacheEntry, q: Question, now: number): Buffer {
    const b = Buffer.from(e.bytes)
    patchHeader(b, q.id, q.flags)
    const elapsed = Math.floor((now - e.storedAt) / 1000)
    for (let i = 0; i < e.ttlAt.length; i++) {
      const at = e.ttlAt[i]!
      const ttl = Math.max(0, b.readUInt32BE(at) - elapsed)
      b.writeUInt32BE(ttl, at)
    }
    this.echoQuestionCase(b, q)
    return b
  }

  private echoQuestionCase (b: Buffer, q: Question): void {
    if (!q.mixedCase) return
    for (let i = 12; i < q.qnameEnd && i < b.length; i++) b[i] = q.msg[i]!
  }

  private healthyOrder (): Upstream[] {
    const now = Date.now()
    return this.opts.upstreams.filter((u) => (this.downUntil.get(`${u.host}:${u.port}`) ?? 0) <= now)
  }

  private attempt (f: InFlight): void {
    const healthy = this.healthyOrder()
    let target: Upstream | undefined
    if (healthy.length > 0) {
      target = healthy[f.tried % healthy.length]
      if (f.tried >= this.opts.upstreams.length) target = undefined
    } else if (f.tried === 0 && Date.now() - this.lastProbe >= 1_000) {
      // every upstream is down: let one query a second through as a probe, answer the rest now
      this.lastProbe = Date.now()
      target = this.opts.upstreams[0]
      const waiters = f.waiters
      f.waiters = []
      this.fail(waiters)
    }
    if (target == null) { this.finish(f); this.fail(f.waiters); return }
    f.tried++
    let id = randomInt(0, 65536)
    while (this.byUpstreamId.has(id)) id = (id + 1) & 0xffff
    f.upstreamId = id
    f.upstream = `${target.host}:${target.port}`
    f.query.writeUInt16BE(id, 0)
    this.byUpstreamId.set(id, f)
    const upstream = target
    f.timer = setTimeout(() => {
      this.stats.upstreamTimeouts++
      const where = `${upstream.host}:${upstream.port}`
      if ((this.downUntil.get(where) ?? 0) < Date.now()) {
        this.opts.log.warn({ upstream: `${upstream.host}:${upstream.port}`, forMs: this.opts.downForMs }, 'upstream DNS server did not answer; skipping it for a while')
      }
      this.downUntil.set(where, Date.now() + this.opts.downForMs)
      this.byUpstreamId.delete(f.upstreamId)
      this.attempt(f)
    }, this.opts.timeoutMs)
    if (f.tcp) this.sendTcp(f, upstream)
    else this.socket?.send(f.query, upstream.port, upstream.host)
  }

  /** A query that came over TCP (its answer may be large) goes upstream over TCP too. */
  private sendTcp (f: InFlight, u: Upstream): void {
    const id = f.upstreamId
    const sock = connect({ host: u.host, port: u.port })
    const frame = Buffer.alloc(2 + f.query.length)
    frame.writeUInt16BE(f.query.length, 0)
    f.query.copy(frame, 2)
    let buf = Buffer.alloc(0)
    sock.setTimeout(this.opts.timeoutMs, () => { sock.destroy() })
    sock.on('error', () => { sock.destroy() })
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0))
        sock.end()
        if (this.byUpstreamId.get(id) === f) this.onUpstreamMessage(Buffer.from(msg))
      }
    })
    sock.end(frame)
  }

  private onUpstreamMessage (msg: Buffer): void {
    const meta = parseResponseMeta(msg)
    if ('error' in meta) { this.stats.malformed++; return }
    const f = this.byUpstreamId.get(meta.id)
    if (f == null) return // late, or not ours
    // the answer must be for the question we asked (an off-path spoof has to guess id and name)
    const q = f.query
    const qEnd = skipName(q, 12)
    if (meta.qdcount !== 1 || qEnd < 0 || meta.questionEnd !== qEnd + 4 || !nameEquals(q, 12, msg, 12)) { this.stats.malformed++; return }
    this.finish(f)
    this.downUntil.delete(f.upstream)
    const cacheable = !meta.tc && (meta.rcode === RCODE.NOERROR || meta.rcode === RCODE.NXDOMAIN) && meta.minTtl > 0
    if (cacheable) {
      const ttl = Math.min(meta.minTtl, meta.negative ? this.opts.maxNegativeTtlSeconds : this.opts.maxTtlSeconds)
      const now = Date.now()
      this.cache.set(f.key, { bytes: msg, ttlAt: ttlOffsets(msg), storedAt: now, expiresAt: now + ttl * 1000 })
      while (this.cache.size > this.opts.cacheEntries) this.cache.delete(this.cache.keys().next().value!)
    }
    for (const w of f.waiters) {
      const b = Buffer.from(msg)
      patchHeader(b, w.q.id, w.q.flags)
      this.echoQuestionCase(b, w.q)
      w.reply(b)
    }
  }

  private finish (f: InFlight): void {
    if (f.timer != null) clearTimeout(f.timer)
    this.byUpstreamId.delete(f.upstreamId)
    this.inflight.delete(f.key)
  }

  private fail (waiters: Waiter[]): void {
    for (const w of waiters) { this.stats.servfails++; w.reply(encodeRcode(w.q, RCODE.SERVFAIL)) }
  }

  /** Cached answers (tests and metrics). */
  get cacheSize (): number { return this.cache.size }

  stop (): void {
    for (const f of this.inflight.values()) { if (f.timer != null) clearTimeout(f.timer) }
    this.inflight.clear()
    this.byUpstreamId.clear()
    this.socket?.close()
    this.socket = undefined
  }
}
