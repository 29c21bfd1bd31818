// The relay's rendezvous server (server/rendezvous.ts) on a fake socket, with real Ed25519 keys
// and fake clocks: what a host that spoofs an agent's public address, or replays what it once
// captured, can make the relay do (nothing), and what each refused request costs (no signature).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import fc from 'fast-check'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { REGISTERS_PER_SECOND, RendezvousServer, UNPROVEN_REPLIES_PER_SECOND } from '../../server/rendezvous.ts'
import type { BlindRelay } from '../../server/blind-relay.ts'
import { ed25519Signer } from '../../shared/ed25519.ts'
import { createLogger } from '../../shared/logging.ts'
import { Metrics } from '../../shared/metrics.ts'
import type { UdxSocket } from '../../shared/udx.ts'
import type { Endpoint } from '../../shared/wire/addr.ts'
import {
  COOKIE_BYTES, ConnectErrorCode, RegisterRefusal, VERSION, decodeMessage, encodeMessage, encodeRegister, encodeRegisterBody,
  type RendezvousMessage
} from '../../shared/wire/rendezvous.ts'

const relayKey = await generateKeyPair('Ed25519')
const keyA = await generateKeyPair('Ed25519')
const keyB = await generateKeyPair('Ed25519')
const idBytes = (k: PrivateKey): Uint8Array => peerIdFromPrivateKey(k).toMultihash().bytes
const A_AT: Endpoint = { host: '198.51.100.21', port: 40001 }
const B_AT: Endpoint = { host: '198.51.100.22', port: 40002 }
const KEEPALIVE_MS = 2_000

interface Sent { m: RendezvousMessage, to: Endpoint }

let server: RendezvousServer
let metrics: Metrics
let sent: Sent[]
let signatures: number
let warnings: string[]

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date', 'performance', 'setInterval', 'clearInterval'] })
  metrics = new Metrics({ processMetrics: false })
  sent = []
  signatures = 0
  warnings = []
  const relaySign = ed25519Signer(relayKey)
  let ids = 1
  const log = createLogger({ name: 'test', level: 'silent' })
  log.warn = ((obj: unknown, msg?: string) => { warnings.push(`${msg ?? ''} ${JSON.stringify(obj)}`) }) as typeof log.warn
  server = new RendezvousServer({
    socket: { trySend: (buf: Uint8Array, port: number, host: string) => { sent.push({ m: decodeMessage(buf).message, to: { host, port } }) } } as unknown as UdxSocket,
    relay: { allocateId: () => ids++, open: () => true } as unknown as BlindRelay,
    log,
    metrics,
    keepaliveMs: KEEPALIVE_MS,
    maxAgents: 100,
    sign: (d) => { signatures++; return relaySign(d) },
    limits: { maxAgentsPerIp: 10, connectsPerSecond: 1, connectBurst: 2 }
  })
})

afterEach(() => {
  server.stop()
  vi.useRealTimers()
})

/** Lets the server's async signature check finish. */
const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => { queueMicrotask(resolve) })
  await vi.advanceTimersByTimeAsync(0)
}

async function registerDatagram (key: PrivateKey, timestampMs: number, name: string): Promise<Uint8Array> {
  const body = encodeRegisterBody({ timestampMs, peerId: idBytes(key), nodeName: name, candidates: [] })
  return encodeRegister(body, await key.sign(body), new Uint8Array(0))
}

async function deliver (buf: Uint8Array, from: Endpoint): Promise<Sent[]> {
  const before = sent.length
  server.onDatagram(buf, from)
  await settle()
  // the signature check is async (libp2p's verify); give it real time too
  for (let i = 0; i < 20 && sent.length === before; i++) await new Promise<void>((resolve) => { setImmediate(resolve) })
  return sent.slice(before)
}

async function register (key: PrivateKey, timestampMs: number, from: Endpoint): Promise<Sent[]> {
  return await deliver(await registerDatagram(key, timestampMs, key === keyA ? 'edge-a' : 'edge-b'), from)
}

const connect = (requestId: number, cookie: Uint8Array, wantRelay = false): Uint8Array =>
  encodeMessage({ type: 'connect', requestId, target: idBytes(keyB), wantRelay, requester: idBytes(keyA), cookie })

async function counter (c: Metrics['droppedDatagrams'], reason: string): Promise<number> {
  return (await c.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0
}

/** A and B registered; returns A's cookie and the echo of its registration. */
async function both (): Promise<{ cookie: Uint8Array, echo: number }> {
  const t = Date.now()
  const [r] = await register(keyA, t, A_AT)
  await register(keyB, t, B_AT)
  if (r?.m.type !== 'registered') throw new Error(`A not registered: ${JSON.stringify(r)}`)
  return { cookie: r.m.cookie, echo: r.m.echo }
}

describe('connect needs the cookie of the sender\'s registration', () => {
  it('a connect from a spoofed agent address with a wrong or no cookie is dropped and counted: no reply, no signature, none of the agent\'s tokens', async () => {
    const { cookie } = await both()
    expect(cookie.byteLength).toBe(COOKIE_BYTES)
    const signedBefore = signatures
    const wrong = cookie.map((b) => b ^ 0x5a)
    for (let i = 0; i < 50; i++) {
      expect(await deliver(connect(100 + i, wrong, true), A_AT)).toEqual([])
      expect(await deliver(connect(200 + i, new Uint8Array(COOKIE_BYTES)), A_AT)).toEqual([])
    }
    expect(signatures).toBe(signedBefore)
    expect(await counter(metrics.relayRefusals, 'connect-bad-cookie')).toBe(100)
    // the agent's own connects still get through: its bucket (burst 2) is untouched
    for (const id of [1, 2]) {
      const replies = await deliver(connect(id, cookie, true), A_AT)
      expect(replies.map((r) => [r.m.type, r.to])).toEqual([['peer-info', B_AT], ['peer-info', A_AT]])
    }
    expect(await counter(metrics.relayRefusals, 'connect-rate')).toBe(0)
    expect(warnings.filter((w) => w.includes('connect-bad-cookie'))).toHaveLength(1)
  })

  it('a registration from a new address gets a new cookie; the old one no longer works', async () => {
    const { cookie } = await both()
    vi.advanceTimersByTime(KEEPALIVE_MS)
    const moved = { host: A_AT.host, port: A_AT.port + 1 }
    const [r] = await register(keyA, Date.now(), moved)
    expect(r?.m.type).toBe('registered')
    const fresh = (r!.m as { cookie: Uint8Array }).cookie
    expect(Buffer.from(fresh).equals(Buffer.from(cookie))).toBe(false)
    expect(await deliver(connect(5, cookie), moved)).toEqual([])
    expect((await deliver(connect(6, fresh), moved)).map((x) => x.m.type)).toEqual(['peer-info', 'peer-info'])
  })
})

describe('a replayed register', () => {
  it('from the agent\'s own (spoofed) address is dropped before its signature is checked, and the echo never moves back', async () => {
    const t1 = Date.now()
    const old = await registerDatagram(keyA, t1, 'edge-a') // captured
    expect((await deliver(old, A_AT)).map((x) => x.m.type)).toEqual(['registered'])
    await register(keyB, t1, B_AT)
    vi.advanceTimersByTime(KEEPALIVE_MS)
    const t2 = Date.now()
    const [r2] = await register(keyA, t2, A_AT)
    expect(r2?.m).toMatchObject({ type: 'registered', echo: t2 })
    const cookie = (r2!.m as { cookie: Uint8Array }).cookie
    for (let i = 0; i < 3; i++) expect(await deliver(old, A_AT)).toEqual([])
    expect(await counter(metrics.droppedDatagrams, 'replay')).toBe(3)
    // what the relay tells A still echoes t2
    const replies = await deliver(connect(9, cookie), A_AT)
    expect(replies.find((x) => x.to.port === A_AT.port)?.m).toMatchObject({ type: 'peer-info', echo: t2 })
  })

  it('an older register from the registered address starts afresh only once the registration went quiet (restarted agent, clock stepped back); from elsewhere it waits for expiry', async () => {
    await both()
    const t = Date.now()
    vi.advanceTimersByTime(KEEPALIVE_MS)
    const [r] = await register(keyA, Date.now(), A_AT)
    expect(r?.m.type).toBe('registered')
    // the clock stepped back an hour minus a few minutes (within the relay's 10 minute skew)
    const older = t - 5 * 60_000
    expect(await register(keyA, older, A_AT)).toEqual([]) // live: a replay as far as anyone can tell
    expect(await register(keyA, older + 1, { host: '203.0.113.9', port: 1 })).toEqual([])
    vi.advanceTimersByTime(3 * KEEPALIVE_MS - 1_000)
    expect(await register(keyA, older + 2, A_AT)).toEqual([])
    vi.advanceTimersByTime(3_000) // no register accepted for over 3 keepalives (and 5 s)
    expect(await register(keyA, older + 3, { host: '203.0.113.9', port: 1 })).toEqual([])
    const [again] = await register(keyA, older + 4, A_AT)
    expect(again?.m).toMatchObject({ type: 'registered', echo: older + 4 })
    // and from there on only newer ones
    expect(await register(keyA, older + 4, A_AT)).toEqual([])
    expect((await register(keyA, older + 2_000, A_AT)).map((x) => x.m.type)).toEqual(['registered'])
  })
})

describe('signed answers to requests that prove nothing are bounded', () => {
  it('"register first" to unknown (possibly spoofed) sources: at most the relay-wide budget, the rest dropped and counted', async () => {
    const n = UNPROVEN_REPLIES_PER_SECOND * 3
    let answered = 0
    for (let i = 0; i < n; i++) {
      const replies = await deliver(connect(i + 1, new Uint8Array(COOKIE_BYTES)), { host: '203.0.113.50', port: 1000 + i })
      if (replies.some((x) => x.m.type === 'connect-error' && x.m.code === ConnectErrorCode.notRegistered)) answered++
    }
    expect(answered).toBe(UNPROVEN_REPLIES_PER_SECOND)
    expect(signatures).toBe(UNPROVEN_REPLIES_PER_SECOND)
    expect(await counter(metrics.droppedDatagrams, 'unanswered-over-reply-budget')).toBe(n - UNPROVEN_REPLIES_PER_SECOND)
    expect(await counter(metrics.relayRefusals, 'connect-not-registered')).toBe(n)
    vi.advanceTimersByTime(1_000) // refilled
    expect((await deliver(connect(1, new Uint8Array(COOKIE_BYTES)), { host: '203.0.113.50', port: 1 })).map((x) => x.m.type)).toEqual(['connect-error'])
  })

  it('"overloaded" beyond an agent\'s connect budget draws from the same budget', async () => {
    const { cookie } = await both()
    const before = signatures
    for (let i = 0; i < UNPROVEN_REPLIES_PER_SECOND + 50; i++) await deliver(connect(1000 + i, cookie), A_AT)
    // 2 connects within the burst (2 peer-infos each), then overloaded answers up to the budget
    expect(signatures - before).toBe(2 * 2 + UNPROVEN_REPLIES_PER_SECOND)
    expect(await counter(metrics.relayRefusals, 'connect-rate')).toBe(UNPROVEN_REPLIES_PER_SECOND + 48)
  })
})

describe('registers are answered at a bounded rate per agent', () => {
  it('a key flooding valid registers (newer timestamps each) gets at most the burst signed, then one per 1/rate s', async () => {
    const t = Date.now()
    const datagrams = await Promise.all(Array.from({ length: 60 }, async (_, i) => await registerDatagram(keyA, t + i, 'edge-a')))
    let answered = 0
    for (const d of datagrams) answered += (await deliver(d, A_AT)).length
    expect(answered).toBe(2 * REGISTERS_PER_SECOND)
    expect(signatures).toBe(answered)
    expect(await counter(metrics.relayRefusals, 'register-rate')).toBe(60 - answered)
    vi.advanceTimersByTime(1_000 / REGISTERS_PER_SECOND)
    expect((await register(keyA, t + 100, A_AT)).map((x) => x.m.type)).toEqual(['registered'])
  })
})

describe('a refused registration', () => {
  it('gets a signed register-refused naming the limit (not silence), within the reply budget', async () => {
    const site = '203.0.113.77'
    const keys = await Promise.all(Array.from({ length: 11 }, async () => await generateKeyPair('Ed25519')))
    const t = Date.now()
    for (const [i, k] of keys.slice(0, 10).entries()) {
      const body = encodeRegisterBody({ timestampMs: t, peerId: idBytes(k), nodeName: `n${i}`, candidates: [] })
      expect((await deliver(encodeRegister(body, await k.sign(body), new Uint8Array(0)), { host: site, port: 1000 + i })).map((x) => x.m.type)).toEqual(['registered'])
    }
    const last = keys[10]!
    const body = encodeRegisterBody({ timestampMs: t + 1, peerId: idBytes(last), nodeName: 'n10', candidates: [] })
    const replies = await deliver(encodeRegister(body, await last.sign(body), new Uint8Array(0)), { host: site, port: 2000 })
    expect(replies.map((x) => x.m)).toMatchObject([{ type: 'register-refused', reason: RegisterRefusal.perIp, echo: t + 1 }])
    expect(await counter(metrics.relayRefusals, 'registrations-per-ip')).toBe(1)
  })
})

describe('register signatures', () => {
  it('a register not signed by the peer id\'s key is dropped and counted, before and after that peer registered (the key is kept per registration)', async () => {
    const forged = async (ts: number): Promise<Uint8Array> => {
      const body = encodeRegisterBody({ timestampMs: ts, peerId: idBytes(keyA), nodeName: 'edge-a', candidates: [] })
      return encodeRegister(body, await keyB.sign(body), new Uint8Array(0))
    }
    const t = Date.now()
    expect(await deliver(await forged(t), A_AT)).toEqual([])
    expect(await counter(metrics.droppedDatagrams, 'bad-signature')).toBe(1)
    expect((await register(keyA, t + 1, A_AT)).map((x) => x.m.type)).toEqual(['registered'])
    expect(await deliver(await forged(t + 2), A_AT)).toEqual([])
    expect(await counter(metrics.droppedDatagrams, 'bad-signature')).toBe(2)
    expect((await register(keyA, t + 3, A_AT)).map((x) => x.m.type)).toEqual(['registered'])
  })
})

describe('a registration refreshed in place', () => {
  it('keeps its endpoint, name and candidates against forged, replayed and moved-back registers from its own or another address', async () => {
    const withCandidates = async (key: PrivateKey, ts: number, name: string, lan: string): Promise<Uint8Array> => {
      const body = encodeRegisterBody({ timestampMs: ts, peerId: idBytes(keyA), nodeName: name, candidates: [{ proto: 'udp', host: lan, port: 4003 }] })
      return encodeRegister(body, await key.sign(body), new Uint8Array(0))
    }
    const t = Date.now()
    const captured = await withCandidates(keyA, t, 'edge-a-old', '10.0.0.1')
    expect((await deliver(captured, A_AT)).map((x) => x.m.type)).toEqual(['registered'])
    vi.advanceTimersByTime(KEEPALIVE_MS)
    const [live] = await deliver(await withCandidates(keyA, t + KEEPALIVE_MS, 'edge-a', '10.0.0.2'), A_AT)
    expect(live?.m.type).toBe('registered')
    const cookie = (live!.m as { cookie: Uint8Array }).cookie
    const elsewhere = { host: '203.0.113.9', port: 1 }
    // newer but signed by another key, from A's address and from elsewhere
    for (const from of [A_AT, elsewhere]) expect(await deliver(await withCandidates(keyB, t + 10 * KEEPALIVE_MS, 'evil', '10.6.6.6'), from)).toEqual([])
    // the captured (older) one, from A's address and from elsewhere
    for (const from of [A_AT, elsewhere]) expect(await deliver(captured, from)).toEqual([])
    expect(await counter(metrics.droppedDatagrams, 'bad-signature')).toBe(2)
    expect(await counter(metrics.droppedDatagrams, 'replay')).toBe(2)
    expect(server.registration(peerIdFromPrivateKey(keyA).toString())).toEqual({ nodeName: 'edge-a', observed: A_AT })
    // what B is told of A when A asks for B: the live name and candidates; A's cookie still works
    await register(keyB, Date.now(), B_AT)
    const replies = await deliver(connect(4, cookie), A_AT)
    const aInfo = replies.find((x) => x.to.port === B_AT.port)?.m
    expect(aInfo).toMatchObject({ type: 'peer-info', peerName: 'edge-a', candidates: [{ proto: 'udp', ...A_AT }, { proto: 'udp', host: '10.0.0.2', port: 4003 }] })
  })
})

describe('fuzz: what a host off the agent\'s path can send', () => {
  const total = async (c: Metrics['droppedDatagrams']): Promise<number> => (await c.get()).values.reduce((n, v) => n + v.value, 0)

  it('arbitrary datagrams and mutated copies of a captured register, from anywhere, change no registration and are each counted', async () => {
    const t = Date.now()
    const captured = await registerDatagram(keyA, t, 'edge-a')
    expect((await deliver(captured, A_AT)).map((x) => x.m.type)).toEqual(['registered'])
    vi.advanceTimersByTime(KEEPALIVE_MS)
    expect((await register(keyA, Date.now(), A_AT)).map((x) => x.m.type)).toEqual(['registered'])
    const a = peerIdFromPrivateKey(keyA).toString()
    const before = server.registration(a)
    const from = fc.constantFrom(A_AT, { host: '203.0.113.9', port: 1 }, { host: A_AT.host, port: A_AT.port + 1 })
    const mutated = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }).map((flips) => {
      const b = captured.slice()
      for (const [i, v] of flips) b[i % b.length] = v
      return b
    })
    const truncated = fc.nat().map((n) => captured.slice(0, n % captured.length))
    await fc.assert(fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 300 }), mutated, truncated), from, async (buf, at) => {
      const counted = await total(metrics.droppedDatagrams) + await total(metrics.relayRefusals)
      const replies = await deliver(buf, at)
      expect(replies.filter((x) => x.m.type === 'registered' || x.m.type === 'peer-info')).toEqual([])
      expect(server.registration(a)).toEqual(before)
      expect(server.registeredCount).toBe(1)
      expect(await total(metrics.droppedDatagrams) + await total(metrics.relayRefusals)).toBeGreaterThan(counted)
    }), { numRuns: 300 })
  })
})

describe('new registrations per source IP are rate-limited (joins), not counted as a cap', () => {
  it('beyond joinsPerIpPerSecond new agents from one IP are dropped unanswered and counted; refreshes, port changes and other IPs pass; a second later more join', async () => {
    server.stop()
    const relaySign = ed25519Signer(relayKey)
    server = new RendezvousServer({
      socket: { trySend: (buf: Uint8Array, port: number, host: string) => { sent.push({ m: decodeMessage(buf).message, to: { host, port } }) } } as unknown as UdxSocket,
      relay: { allocateId: () => 1, open: () => true } as unknown as BlindRelay,
      log: createLogger({ name: 'test', level: 'silent' }),
      metrics,
      keepaliveMs: KEEPALIVE_MS,
      maxAgents: 100,
      sign: (d) => { signatures++; return relaySign(d) },
      limits: { maxAgentsPerIp: 100, connectsPerSecond: 1, connectBurst: 2, joinsPerIpPerSecond: 3 }
    })
    const site = '203.0.113.80'
    const keys = await Promise.all(Array.from({ length: 5 }, async () => await generateKeyPair('Ed25519')))
    const t = Date.now()
    const reg = async (k: PrivateKey, ts: number, from: Endpoint): Promise<string[]> => {
      const body = encodeRegisterBody({ timestampMs: ts, peerId: idBytes(k), nodeName: 'n', candidates: [] })
      return (await deliver(encodeRegister(body, await k.sign(body), new Uint8Array(0)), from)).map((x) => x.m.type)
    }
    for (const [i, k] of keys.slice(0, 3).entries()) expect(await reg(k, t, { host: site, port: 1000 + i })).toEqual(['registered'])
    const signed = signatures
    expect(await reg(keys[3]!, t, { host: site, port: 1003 })).toEqual([])
    expect(signatures).toBe(signed) // no answer, no signature
    expect(await counter(metrics.relayRefusals, 'registrations-per-ip-rate')).toBe(1)
    // the agents already registered refresh, and one whose NAT changed its port stays registered
    expect(await reg(keys[0]!, t + 1, { host: site, port: 1000 })).toEqual(['registered'])
    expect(await reg(keys[1]!, t + 1, { host: site, port: 1101 })).toEqual(['registered'])
    // another site is not held back by this one
    expect(await reg(keys[4]!, t, { host: '203.0.113.81', port: 1000 })).toEqual(['registered'])
    vi.advanceTimersByTime(1_000)
    expect(await reg(keys[3]!, t + 2, { host: site, port: 1003 })).toEqual(['registered'])
    expect(await counter(metrics.relayRefusals, 'registrations-per-ip-rate')).toBe(1)
  })
})

describe('another protocol version', () => {
  it('is counted as unsupported-version (not malformed) and logged once', async () => {
    const v1 = await registerDatagram(keyA, Date.now(), 'edge-a')
    v1[2] = VERSION - 1
    for (let i = 0; i < 5; i++) expect(await deliver(v1, A_AT)).toEqual([])
    expect(await counter(metrics.droppedDatagrams, 'unsupported-version')).toBe(5)
    expect(await counter(metrics.droppedDatagrams, 'malformed')).toBe(0)
    expect(warnings.filter((w) => w.includes(`rendezvous protocol v${VERSION - 1}, this relay v${VERSION}`))).toHaveLength(1)
  })
})
