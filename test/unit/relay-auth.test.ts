// What an agent accepts from a relay (agent/tunnel/relay-auth.ts), with real Ed25519 keys and
// injected clocks; then the rendezvous client wired to it over a fake socket: a forged
// `registered` (new boot id) or an out-of-range keepalive never disturbs anything.
import { afterEach, describe, expect, it, vi } from 'vitest'
import fc from 'fast-check'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { CLOCK_STEP_MS, ECHO_WINDOW_MS, RelayAuth, STAMP_CLASSES } from '../../agent/tunnel/relay-auth.ts'
import { RendezvousClient } from '../../agent/tunnel/rendezvous-client.ts'
import { ed25519Signer, ed25519Verifier } from '../../shared/ed25519.ts'
import { createLogger } from '../../shared/logging.ts'
import type { UdxSocket } from '../../shared/udx.ts'
import {
  ConnectErrorCode, RegisterRefusal, decodeMessage, encodeRelayMessage, isRelayMessage,
  type RegisterMessage, type RelayMessage, type UnsignedRelayMessage
} from '../../shared/wire/rendezvous.ts'

const relayKey = await generateKeyPair('Ed25519')
const otherKey = await generateKeyPair('Ed25519')
const agentKey = await generateKeyPair('Ed25519')
const relaySign = ed25519Signer(relayKey)
const verifyRelay = ed25519Verifier(peerIdFromPrivateKey(relayKey))
const SELF = peerIdFromPrivateKey(agentKey).toMultihash().bytes
const OTHER_AGENT = peerIdFromPrivateKey(otherKey).toMultihash().bytes

/** Encodes as the relay would (or as a forger with another key / for another recipient), then decodes as the agent does. */
function wire (m: UnsignedRelayMessage, opts: { key?: PrivateKey, recipient?: Uint8Array } = {}): { m: RelayMessage, signed: Uint8Array } {
  const sign = opts.key != null ? ed25519Signer(opts.key) : relaySign
  const d = decodeMessage(encodeRelayMessage(m, opts.recipient ?? SELF, sign))
  if (!isRelayMessage(d.message) || d.signed == null) throw new Error('not a relay message')
  return { m: d.message, signed: d.signed }
}

const COOKIE = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8])
const registered = (echo: number, bootId = 1, keepaliveMs = 2000, cookie = COOKIE): UnsignedRelayMessage =>
  ({ type: 'registered', observed: { host: '198.51.100.20', port: 4003 }, bootId, keepaliveMs, cookie, echo })
const peerInfo = (requestId: number, echo: number): UnsignedRelayMessage => ({
  type: 'peer-info', requestId, session: 9n, initiator: requestId !== 0, peer: OTHER_AGENT, peerName: 'edge-b',
  candidates: [{ proto: 'udp', host: '198.51.100.21', port: 4003 }], directLocalId: 1, directRemoteId: 2, relayLocalId: 3, relayRemoteId: 4, echo
})
const connectError = (requestId: number, code: ConnectErrorCode, echo: number): UnsignedRelayMessage =>
  ({ type: 'connect-error', requestId, code, reason: 'x', echo })

/** A RelayAuth on fake clocks; counts signature verifications. */
function setup (): { auth: RelayAuth, clock: { mono: number, wall: number }, verifications: () => number } {
  const clock = { mono: 1_000, wall: 1_700_000_000_000 }
  let n = 0
  const auth = new RelayAuth({
    verify: (d, s) => { n++; return verifyRelay(d, s) },
    self: SELF,
    now: () => clock.mono,
    wallClock: () => clock.wall
  })
  return { auth, clock, verifications: () => n }
}

const none = (): boolean => false
const check = (auth: RelayAuth, x: { m: RelayMessage, signed: Uint8Array }, pending: (id: number) => boolean = none): string => {
  const v = auth.check(x.m, x.signed, pending)
  return v.verdict === 'forged' ? `forged: ${v.reason}` : v.verdict
}

describe('RelayAuth: registered', () => {
  it('accepts the relay\'s answer to a recent register of ours', () => {
    const { auth } = setup()
    const ts = auth.nextRegisterTimestamp()
    expect(check(auth, wire(registered(ts)))).toBe('ok')
    // the relay may answer the same register twice (a duplicated datagram)
    expect(check(auth, wire(registered(ts)))).toBe('ok')
  })

  it('refuses a signature by another key, or one made for another agent', () => {
    const { auth } = setup()
    const ts = auth.nextRegisterTimestamp()
    expect(check(auth, wire(registered(ts, 2), { key: otherKey }))).toBe('forged: registered has a bad signature')
    expect(check(auth, wire(registered(ts, 2), { recipient: OTHER_AGENT }))).toBe('forged: registered has a bad signature')
  })

  it('refuses an echo we never sent, or sent longer ago than the window', () => {
    const { auth, clock } = setup()
    const ts = auth.nextRegisterTimestamp()
    expect(check(auth, wire(registered(ts + 1)))).toBe('forged: registered echoes no recent register of ours')
    clock.mono += ECHO_WINDOW_MS + 1
    expect(check(auth, wire(registered(ts)))).toBe('forged: registered echoes no recent register of ours')
  })

  it('refuses a replay of an older answer (an old boot id) once a newer one was accepted: dropped quietly, like a reordered one', () => {
    const { auth, clock } = setup()
    const t1 = auth.nextRegisterTimestamp()
    const oldBoot = wire(registered(t1, 0xaaaa)) // captured by an attacker
    expect(check(auth, oldBoot)).toBe('ok')
    clock.wall += 2_000; clock.mono += 2_000
    const t2 = auth.nextRegisterTimestamp()
    expect(check(auth, wire(registered(t2, 0xbbbb)))).toBe('ok') // the relay restarted
    expect(check(auth, oldBoot)).toBe('reordered')
  })

  it('an answer to an earlier register arriving after a later one\'s is reordered, not forged', () => {
    const { auth, clock } = setup()
    const t1 = auth.nextRegisterTimestamp()
    clock.wall += 200; clock.mono += 200
    const t2 = auth.nextRegisterTimestamp()
    expect(check(auth, wire(registered(t2)))).toBe('ok')
    expect(check(auth, wire(registered(t1)))).toBe('reordered')
    // still by send order after the wall clock stepped back: t3 < t2 in value, but sent later
    clock.wall -= 3_600_000; clock.mono += 200
    const t3 = auth.nextRegisterTimestamp()
    expect(t3).toBeLessThan(t2)
    expect(check(auth, wire(registered(t3)))).toBe('ok')
    expect(check(auth, wire(registered(t2)))).toBe('reordered')
  })

  it('checks the echo before the signature: a flood of forgeries costs no verification', () => {
    const { auth, verifications } = setup()
    auth.nextRegisterTimestamp()
    const forged = wire(registered(12345), { key: otherKey })
    for (let i = 0; i < 100; i++) expect(check(auth, forged)).toMatch(/^forged/)
    expect(verifications()).toBe(0)
  })
})

describe('RelayAuth: peer-info and connect-error', () => {
  it('an answer must match a request we wait on, carry a recent echo and the relay\'s signature', () => {
    const { auth } = setup()
    const ts = auth.nextRegisterTimestamp()
    const waiting = (id: number): boolean => id === 77
    expect(check(auth, wire(peerInfo(77, ts)), waiting)).toBe('ok')
    expect(check(auth, wire(peerInfo(78, ts)), waiting)).toBe('unexpected') // late duplicate or a guess
    expect(check(auth, wire(peerInfo(77, ts + 5)), waiting)).toBe('forged: peer-info echoes no recent register of ours')
    expect(check(auth, wire(peerInfo(77, ts), { key: otherKey }), waiting)).toBe('forged: peer-info has a bad signature')
  })

  it('an introduction (request id 0) needs an echo within the window', () => {
    const { auth, clock } = setup()
    const ts = auth.nextRegisterTimestamp()
    expect(check(auth, wire(peerInfo(0, ts)))).toBe('ok')
    expect(check(auth, wire(peerInfo(0, ts), { recipient: OTHER_AGENT }))).toBe('forged: peer-info has a bad signature')
    clock.mono += ECHO_WINDOW_MS + 1
    expect(check(auth, wire(peerInfo(0, ts)))).toBe('forged: peer-info echoes no recent register of ours')
    const ts2 = auth.nextRegisterTimestamp()
    expect(check(auth, wire(peerInfo(0, ts2)))).toBe('ok')
  })

  it('connect-error: echo 0 only for "register first" (the relay does not know us)', () => {
    const { auth } = setup()
    const ts = auth.nextRegisterTimestamp()
    const waiting = (id: number): boolean => id === 5
    expect(check(auth, wire(connectError(5, ConnectErrorCode.notRegistered, 0)), waiting)).toBe('ok')
    expect(check(auth, wire(connectError(5, ConnectErrorCode.peerNotOnUdp, 0)), waiting)).toBe('forged: connect-error echoes no recent register of ours')
    expect(check(auth, wire(connectError(5, ConnectErrorCode.peerNotOnUdp, ts)), waiting)).toBe('ok')
    expect(check(auth, wire(connectError(6, ConnectErrorCode.peerNotOnUdp, ts)), waiting)).toBe('unexpected')
    expect(check(auth, wire(connectError(5, ConnectErrorCode.notRegistered, 0), { key: otherKey }), waiting)).toBe('forged: connect-error has a bad signature')
  })

  it('property: a message signed by any other key, or altered in any byte, is never accepted', () => {
    const { auth } = setup()
    const ts = auth.nextRegisterTimestamp()
    const genuine = [registered(ts), peerInfo(0, ts), peerInfo(3, ts), connectError(3, ConnectErrorCode.overloaded, ts)]
    const waiting = (id: number): boolean => id === 3
    fc.assert(fc.property(fc.constantFrom(...genuine), fc.nat(), fc.integer({ min: 1, max: 255 }), (m, at, x) => {
      const { m: msg, signed } = wire(m)
      const altered = signed.slice(); const i = at % altered.byteLength; altered[i] = altered[i]! ^ x
      let d
      try { d = decodeMessage(new Uint8Array([...altered, ...msg.signature])) } catch { return } // no longer decodes
      const v = auth.check(d.message as RelayMessage, d.signed!, waiting)
      expect(v.verdict).not.toBe('ok')
    }), { numRuns: 300 })
  })
})

describe('RelayAuth: register timestamps', () => {
  const within = (ts: number, wall: number): boolean => ts >= wall && ts < wall + STAMP_CLASSES

  it('follow the wall clock (to the relay, within its 10 minute skew), strictly increasing while it does not step back', () => {
    const { auth, clock } = setup()
    const a = auth.nextRegisterTimestamp()
    expect(within(a, clock.wall)).toBe(true)
    const b = auth.nextRegisterTimestamp() // same millisecond
    expect(b).toBeGreaterThan(a)
    clock.wall -= CLOCK_STEP_MS / 2 // jitter, not a step: still increasing
    expect(auth.nextRegisterTimestamp()).toBeGreaterThan(b)
    clock.wall += 120_000
    expect(within(auth.nextRegisterTimestamp(), clock.wall)).toBe(true)
  })

  it('follow the wall clock down when it steps back (a box booted an hour fast, then NTP), and the answers to them are accepted', () => {
    const { auth, clock } = setup()
    const t1 = auth.nextRegisterTimestamp()
    expect(check(auth, wire(registered(t1)))).toBe('ok')
    clock.wall -= 3_600_000; clock.mono += 2_000
    const t2 = auth.nextRegisterTimestamp()
    expect(within(t2, clock.wall)).toBe(true) // the relay's skew check passes at once
    expect(check(auth, wire(registered(t2)))).toBe('ok')
    clock.wall += 2_000; clock.mono += 2_000
    const t3 = auth.nextRegisterTimestamp()
    expect(t3).toBeGreaterThan(t2)
    expect(check(auth, wire(registered(t3, 2)))).toBe('ok')
  })

  it('after a step back never reuse a timestamp sent before it: a captured answer (old boot id) cannot be replayed when the clock comes round again', () => {
    const { auth, clock } = setup()
    const t1 = auth.nextRegisterTimestamp()
    const oldBoot = wire(registered(t1, 0xaaaa)) // captured
    expect(check(auth, oldBoot)).toBe('ok')
    clock.wall -= 3_600_000; clock.mono += 2_000 // stepped back an hour; the relay restarts meanwhile
    const afterStep = auth.nextRegisterTimestamp()
    expect(check(auth, wire(registered(afterStep, 0xbbbb)))).toBe('ok')
    // the wall clock reaches t1 again (within the echo window of the monotonic clock, the worst case)
    clock.wall = t1; clock.mono += 1_000
    const again = auth.nextRegisterTimestamp()
    expect(again).not.toBe(t1)
    expect(within(again, clock.wall)).toBe(true)
    expect(check(auth, oldBoot)).not.toBe('ok')
    for (let i = 1; i < STAMP_CLASSES; i++) { // every millisecond around it
      clock.wall = t1 + i; clock.mono += 1
      expect(auth.nextRegisterTimestamp()).not.toBe(t1)
      expect(check(auth, oldBoot)).not.toBe('ok')
    }
  })

  it('property: whatever the wall clock does, no timestamp repeats until it stepped back STAMP_CLASSES times', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: -4_000, max: 4_000 }), { maxLength: 200 }), (moves) => {
      const { auth, clock } = setup()
      const seen = new Set<number>()
      let steps = 0
      let last = 0
      for (const d of moves) {
        clock.wall += d; clock.mono += 1
        const ts = auth.nextRegisterTimestamp()
        if (ts < last - CLOCK_STEP_MS) steps++
        last = ts
        if (steps >= STAMP_CLASSES) return
        expect(seen.has(ts)).toBe(false)
        seen.add(ts)
        expect(ts).toBeGreaterThanOrEqual(clock.wall)
      }
    }))
  })
})

// --- the rendezvous client wired to it ---------------------------------------------------------

class FakeSocket {
  sent: Uint8Array[] = []
  trySend (buf: Uint8Array): void { this.sent.push(buf) }
  registers (): RegisterMessage[] {
    return this.sent.map((b) => decodeMessage(b).message).filter((m): m is RegisterMessage => m.type === 'register')
  }
}

describe('RendezvousClient', () => {
  afterEach(() => { vi.useRealTimers() })

  async function started (): Promise<{ client: RendezvousClient, sock: FakeSocket, restarts: () => number, warnings: string[] }> {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance', 'Date'] })
    const sock = new FakeSocket()
    const log = createLogger({ name: 'test', level: 'silent' })
    const warnings: string[] = []
    log.warn = ((obj: unknown, msg?: string) => { warnings.push(`${msg ?? ''} ${JSON.stringify(obj)}`) }) as typeof log.warn
    const client = new RendezvousClient({
      relay: { host: '198.51.100.10', peerId: peerIdFromPrivateKey(relayKey).toString(), tcpPort: 4001, udpPort: 4002 },
      endpoint: { host: '198.51.100.10', port: 4002 },
      socket: sock as unknown as UdxSocket,
      privateKey: agentKey,
      peerIdBytes: SELF,
      nodeName: 'edge-a',
      candidates: () => [],
      keepaliveMs: 5_000,
      verifyRelay,
      log,
      random: () => 0.5 // no keepalive jitter: these tests count registers over exact intervals
    })
    let restarts = 0
    client.on('restarted', () => { restarts++ })
    client.start()
    await vi.advanceTimersByTimeAsync(0)
    return { client, sock, restarts: () => restarts, warnings }
  }
  const deliver = (client: RendezvousClient, x: { m: RelayMessage, signed: Uint8Array }): string => client.onMessage(x.m, x.signed)

  it('a forged registered with a new boot id, or a keepalive of 0, changes nothing; the genuine relay is followed', async () => {
    const { client, sock, restarts, warnings } = await started()
    const ts = sock.registers().at(-1)!.timestampMs
    expect(deliver(client, wire(registered(ts, 0x1111)))).toBe('handled')
    expect([client.up, client.bootId]).toEqual([true, 0x1111])

    // forgeries: another key, a replay for another agent, a guessed echo
    expect(deliver(client, wire(registered(ts, 0x2222), { key: otherKey }))).toBe('forged')
    expect(deliver(client, wire(registered(ts, 0x2222), { recipient: OTHER_AGENT }))).toBe('forged')
    expect(deliver(client, wire(registered(ts + 1, 0x2222)))).toBe('forged')
    expect([client.up, client.bootId, restarts()]).toEqual([true, 0x1111, 0])
    // logged once, however many arrive
    expect(warnings.filter((w) => w.includes('forged'))).toHaveLength(1)

    // keepalives keep their pace (2 s from the relay's genuine hint after the first 1 s one), no re-register loop
    const before = sock.registers().length
    await vi.advanceTimersByTimeAsync(3_000)
    expect(sock.registers().length - before).toBe(2)

    // the genuine relay restarting is still noticed
    const last = sock.registers().at(-1)!.timestampMs
    expect(deliver(client, wire(registered(last, 0x3333)))).toBe('handled')
    expect([client.bootId, restarts()]).toEqual([0x3333, 1])
    client.stop()
  })

  it('connect carries the cookie of the latest accepted registered (zeros before one), re-read on every retransmission', async () => {
    const { client, sock } = await started()
    const connects = (): Array<{ requestId: number, cookie: number[] }> => sock.sent.map((b) => decodeMessage(b).message)
      .flatMap((m) => m.type === 'connect' ? [{ requestId: m.requestId, cookie: Array.from(m.cookie) }] : [])
    const pending = client.connect(OTHER_AGENT, false, 5_000)
    pending.catch(() => {})
    expect(connects().at(-1)!.cookie).toEqual([0, 0, 0, 0, 0, 0, 0, 0])
    const ts = sock.registers().at(-1)!.timestampMs
    expect(deliver(client, wire(registered(ts, 1, 2000, COOKIE)))).toBe('handled')
    await vi.advanceTimersByTimeAsync(200)
    expect(connects().at(-1)!.cookie).toEqual(Array.from(COOKIE))
    // a forged registered cannot plant another cookie
    expect(deliver(client, wire(registered(ts, 1, 2000, new Uint8Array(8).fill(9)), { key: otherKey }))).toBe('forged')
    await vi.advanceTimersByTimeAsync(200)
    expect(connects().at(-1)!.cookie).toEqual(Array.from(COOKIE))
    client.stop()
  })

  it('after the wall clock steps back an hour, the next registers carry the new time (the relay accepts them), not the old one plus 1', async () => {
    const { client, sock } = await started()
    const ts = sock.registers().at(-1)!.timestampMs
    expect(deliver(client, wire(registered(ts, 1)))).toBe('handled')
    vi.setSystemTime(Date.now() - 3_600_000)
    await vi.advanceTimersByTimeAsync(2_000)
    const next = sock.registers().at(-1)!.timestampMs
    expect(Math.abs(next - Date.now())).toBeLessThan(STAMP_CLASSES + 2_000)
    expect(deliver(client, wire(registered(next, 1)))).toBe('handled')
    expect([client.up, client.bootId]).toEqual([true, 1])
    client.stop()
  })

  it('a relay of another protocol version is said once, plainly (not as a forgery)', async () => {
    const { client, warnings } = await started()
    for (let i = 0; i < 5; i++) client.onOtherVersion(1)
    expect(warnings.filter((w) => w.includes('relay speaks rendezvous protocol v1, this agent v2: upgrade both'))).toHaveLength(1)
    expect(warnings.filter((w) => w.includes('forged'))).toHaveLength(0)
    client.stop()
  })

  it('a refused registration is said once, naming the limit; a forged refusal is not believed', async () => {
    const { client, sock, warnings } = await started()
    const ts = sock.registers().at(-1)!.timestampMs
    const refused = (echo: number): UnsignedRelayMessage => ({ type: 'register-refused', reason: RegisterRefusal.perIp, echo })
    expect(deliver(client, wire(refused(ts), { key: otherKey }))).toBe('forged')
    expect(deliver(client, wire(refused(ts + 1)))).toBe('forged') // no register of ours
    expect(warnings.filter((w) => w.includes('refused our registration'))).toHaveLength(0)
    for (let i = 0; i < 3; i++) expect(deliver(client, wire(refused(ts)))).toBe('handled')
    expect(warnings.filter((w) => w.includes('relay refused our registration: it has as many agents from our public IP as it allows'))).toHaveLength(1)
    expect(client.up).toBe(false)
    client.stop()
  })

  it('a keepalive hint below the minimum cannot be signed into a tight loop: the client clamps it', async () => {
    const { client, sock } = await started()
    const ts = sock.registers().at(-1)!.timestampMs
    // what a decoded message can never hold, handed to the client directly
    const x = wire(registered(ts, 7))
    const m = { ...x.m, keepaliveMs: 0 } as RelayMessage
    expect(client.onMessage(m, x.signed)).toBe('handled') // the signature covers the wire bytes, not this object
    const before = sock.registers().length
    await vi.advanceTimersByTimeAsync(2_000)
    // the pending 1 s timer, then every 200 ms (the minimum); a 0 would have sent thousands
    expect(sock.registers().length - before).toBe(6)
    client.stop()
  })
})
