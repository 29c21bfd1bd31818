// The blind relay on real UDX sockets over loopback: it forwards without decrypting, keeps
// pairs that carry traffic, and frees pairs nobody uses.
import { afterEach, describe, expect, it } from 'vitest'
import { BlindRelay } from '../../server/blind-relay.ts'
import { createLogger } from '../../shared/logging.ts'
import { Metrics } from '../../shared/metrics.ts'
import { createUdx, type UdxSocket, type UdxStream } from '../../shared/udx.ts'
import { eventually, sleep } from '../lab/wait.ts'

const udx = createUdx()
const sockets: UdxSocket[] = []
const streams: UdxStream[] = []
let relay: BlindRelay | undefined

function socket (): UdxSocket {
  const s = udx.createSocket()
  s.bind(0, '127.0.0.1')
  sockets.push(s)
  return s
}

function setup (idleMs: number): { a: UdxStream, b: UdxStream, relay: BlindRelay } {
  const A = socket(); const B = socket(); const R = socket()
  relay = new BlindRelay({ udx, socket: R, log: createLogger({ name: 'test', level: 'silent' }), metrics: new Metrics({ processMetrics: false }), idleMs })
  const ra = relay.allocateId(); const rb = relay.allocateId()
  const a = udx.createStream(1); const b = udx.createStream(2)
  streams.push(a, b)
  a.connect(A, ra, R.address().port, '127.0.0.1')
  b.connect(B, rb, R.address().port, '127.0.0.1')
  expect(relay.open(ra, { endpoint: { host: '127.0.0.1', port: A.address().port }, remoteId: 1 }, rb, { endpoint: { host: '127.0.0.1', port: B.address().port }, remoteId: 2 })).toBe(true)
  return { a, b, relay }
}

afterEach(async () => {
  relay?.stop()
  for (const s of streams.splice(0)) s.destroy()
  await Promise.all(sockets.splice(0).map(async (s) => { await s.close() }))
})

describe('blind relay', () => {
  it('forwards bytes unchanged both ways', async () => {
    const { a, b } = setup(5_000)
    const fromA: Buffer[] = []; const fromB: Buffer[] = []
    b.on('data', (d: Buffer) => fromA.push(d))
    a.on('data', (d: Buffer) => fromB.push(d))
    const payload = Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 251))
    a.write(payload)
    b.write(Buffer.from('pong'))
    await sleep(500)
    expect(Buffer.concat(fromA).equals(payload)).toBe(true)
    expect(Buffer.concat(fromB).toString()).toBe('pong')
  })

  it('counts the bytes it forwarded, also after the pair closed (edgemesh_blind_relay_bytes_total)', async () => {
    const { a, b, relay } = setup(5_000)
    let received = 0
    b.on('data', (d: Buffer) => { received += d.byteLength })
    a.write(Buffer.alloc(100_000, 7))
    await eventually(async () => { expect(received).toBe(100_000) }, 5_000)
    const forwarded = relay.forwardedBytes()
    // payload plus UDX headers and acks, not more than a fifth on top
    expect(forwarded).toBeGreaterThanOrEqual(100_000)
    expect(forwarded).toBeLessThan(120_000)
    relay.stop()
    expect(relay.size).toBe(0)
    expect(relay.forwardedBytes()).toBe(forwarded)
  })

  it('keeps a pair alive while it carries traffic, longer than the idle timeout', async () => {
    const { a, b, relay } = setup(400)
    let received = 0
    b.on('data', (d: Buffer) => { received += d.byteLength })
    for (let i = 0; i < 15; i++) { a.write(Buffer.alloc(1000, i)); await sleep(100) }
    expect(relay.size).toBe(1)
    expect(received).toBe(15_000)
  })

  it('frees a pair that carries nothing for the idle timeout', async () => {
    const { relay } = setup(300)
    expect(relay.size).toBe(1)
    await sleep(1_200)
    expect(relay.size).toBe(0)
  })
})
