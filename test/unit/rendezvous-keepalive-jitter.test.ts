// The rendezvous client's register intervals: jittered within KEEPALIVE_JITTER around the
// nominal interval (the relay's hint while up, at most 1 s while down), mean the nominal one.
import { afterEach, describe, expect, it, vi } from 'vitest'
import fc from 'fast-check'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { KEEPALIVE_JITTER, RendezvousClient, jitteredInterval } from '../../agent/tunnel/rendezvous-client.ts'
import { ed25519Signer, ed25519Verifier } from '../../shared/ed25519.ts'
import { createLogger } from '../../shared/logging.ts'
import type { UdxSocket } from '../../shared/udx.ts'
import { decodeMessage, encodeRelayMessage, isRelayMessage, type RegisterMessage } from '../../shared/wire/rendezvous.ts'

const relayKey = await generateKeyPair('Ed25519')
const agentKey = await generateKeyPair('Ed25519')
const SELF = peerIdFromPrivateKey(agentKey).toMultihash().bytes

describe('jitteredInterval', () => {
  it('stays within +-KEEPALIVE_JITTER of the nominal interval for any draw', () => {
    fc.assert(fc.property(fc.integer({ min: 200, max: 25_000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (nominal, r) => {
      const d = jitteredInterval(nominal, () => r)
      expect(d).toBeGreaterThanOrEqual(Math.floor(nominal * (1 - KEEPALIVE_JITTER)))
      expect(d).toBeLessThanOrEqual(Math.ceil(nominal * (1 + KEEPALIVE_JITTER)))
    }))
  })

  it('varies, with its mean the nominal interval', () => {
    const draws = Array.from({ length: 20_000 }, () => jitteredInterval(2_000))
    const mean = draws.reduce((a, b) => a + b, 0) / draws.length
    // the standard error of the mean is 300/sqrt(3)/sqrt(20000) ~ 1.2 ms: 10 ms is > 8 of them
    expect(Math.abs(mean - 2_000)).toBeLessThan(10)
    expect(Math.min(...draws)).toBeLessThan(1_750)
    expect(Math.max(...draws)).toBeGreaterThan(2_250)
    expect(KEEPALIVE_JITTER).toBeGreaterThanOrEqual(0.1)
    expect(KEEPALIVE_JITTER).toBeLessThanOrEqual(0.2)
  })
})

describe('RendezvousClient register schedule', () => {
  afterEach(() => { vi.useRealTimers() })

  it('registers at jittered intervals: about 1 s while down, about the relay\'s keepalive while up, never in step', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance', 'Date'] })
    const sentAt: number[] = []
    const sent: Uint8Array[] = []
    const sock = { trySend: (buf: Uint8Array) => { sent.push(buf); sentAt.push(performance.now()) } }
    const client = new RendezvousClient({
      relay: { host: '198.51.100.10', peerId: peerIdFromPrivateKey(relayKey).toString(), tcpPort: 4001, udpPort: 4002 },
      endpoint: { host: '198.51.100.10', port: 4002 },
      socket: sock as unknown as UdxSocket,
      privateKey: agentKey,
      peerIdBytes: SELF,
      nodeName: 'edge-a',
      candidates: () => [],
      keepaliveMs: 5_000,
      verifyRelay: ed25519Verifier(peerIdFromPrivateKey(relayKey)),
      log: createLogger({ name: 'test', level: 'silent' })
    })
    const gaps = (from: number): number[] => sentAt.slice(from + 1).map((t, i) => t - sentAt[from + i]!)
    try {
      client.start()
      // down (no answers): 40 retries
      await vi.advanceTimersByTimeAsync(40_000)
      const down = gaps(0)
      expect(down.length).toBeGreaterThan(30)
      for (const g of down) { expect(g).toBeGreaterThanOrEqual(850 - 1); expect(g).toBeLessThanOrEqual(1_150 + 1) }
      expect(new Set(down).size).toBeGreaterThan(10)

      // up: the relay answers each register and asks for 2 s
      const answer = (): void => {
        const reg = decodeMessage(sent.at(-1)!).message as RegisterMessage
        const d = decodeMessage(encodeRelayMessage({ type: 'registered', observed: { host: '198.51.100.20', port: 4003 }, bootId: 1, keepaliveMs: 2_000, cookie: new Uint8Array(8), echo: reg.timestampMs }, SELF, ed25519Signer(relayKey)))
        if (!isRelayMessage(d.message) || d.signed == null) throw new Error('not a relay message')
        expect(client.onMessage(d.message, d.signed)).toBe('handled')
      }
      answer()
      expect(client.up).toBe(true)
      // the interval in flight was drawn while down: count from the first register after it
      await vi.advanceTimersByTimeAsync(1_200)
      answer()
      const first = sentAt.length - 1
      // 200 keepalives, each answered as it goes out (bounded: 200 x 2.3 s is 460 s)
      for (let t = 0; t < 500_000 && sentAt.length - 1 < first + 200; t += 100) {
        const before = sentAt.length
        await vi.advanceTimersByTimeAsync(100)
        if (sentAt.length > before) answer()
      }
      const up = gaps(first)
      expect(up.length).toBeGreaterThanOrEqual(200)
      for (const g of up) { expect(g).toBeGreaterThanOrEqual(1_700 - 1); expect(g).toBeLessThanOrEqual(2_300 + 1) }
      const mean = up.reduce((a, b) => a + b, 0) / up.length
      // uniform +-300 ms: the mean of 200 has a standard error of ~12 ms
      expect(Math.abs(mean - 2_000)).toBeLessThan(60)
      expect(new Set(up).size).toBeGreaterThan(50)
    } finally {
      client.stop()
    }
  })
})
