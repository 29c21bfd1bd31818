// What an agent accepts from a relay (agent/tunnel/relay-auth.ts), with real Ed25519 keys and
// injected clocks; then the rendezvous client wired to it over a fake socket: a forged
// `registered` (new boot id) or an out-of-range keepalive never disturbs anything.
import { afterEach, describe, expect, it, vi } from 'vitest'
import fc from 'fast-check'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { ECHO_WINDOW_MS, RelayAuth } from '../../agent/tunnel/relay-auth.ts'
import { RendezvousClient } from '../../agent/tunnel/rendezvous-client.ts'
import { ed25519Signer, ed25519Verifier } from '../../shared/ed25519.ts'
import { createLogger } from '../../shared/logging.ts'
import type { UdxSocket } from '../../shared/udx.ts'
import {
  ConnectErrorCode, decodeMessage, encodeRelayMessage, isRelayMessage,
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

const registered = (echo: number, bootId = 1, keepaliveMs = 2000): UnsignedRelayMessage =>
  ({ type: 'registered', observed: { host: '198.51.100.20', port: 4003 }, bootId, keepaliveMs, echo })
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

  it('refuses a replay of an older answer (an old boot id) once a newer one was accepted', () => {
    const { auth, clock } = setup()
    const t1 = auth.nextRegisterTimestamp()
    const oldBoot = wire(registered(t1, 0xaaaa)) // captured by an attacker
    expect(check(auth, oldBoot)).toBe('ok')
    clock.wall += 2_000; clock.mono += 2_000
    const t2 = auth.nextRegisterTimestamp()
    expect(check(auth, wire(registered(t2, 0xbbbb)))).toBe('ok') // the relay restarted
    expect(check(auth, oldBoot)).toBe('forged: registered is older than one already accepted (replayed)')
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
  it('strictly increase even when the wall clock steps back', () => {
    const { auth, clock } = setup()
    const a = auth.nextRegisterTimestamp()
    clock.wall -= 60_000
    const b = auth.nextRegisterTimestamp()
    const c = auth.nextRegisterTimestamp()
    expect([b - a, c - b]).toEqual([1, 1])
    clock.wall += 120_000
    expect(auth.nextRegisterTimestamp()).toBe(clock.wall)
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
      log
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
