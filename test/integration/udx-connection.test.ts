// The UDX connection under yamux on loopback, as the agents run it (noise aside): bulk streams
// that write as fast as the connection takes must not pile up in the connection's write buffer.
// libp2p's send() appends to that buffer whatever the answer; if the connection announced
// 'drain' whenever UDX took one batch, every stream wrote again while the rest still waited, and
// the buffer grew until it held every stream's whole yamux window: a new stream's header, a
// ping, the other direction's window updates all waited seconds behind it (proxied connections
// reset by the 3 s header timeout under load).
import { createHash, randomBytes } from 'node:crypto'
import { afterEach, expect, it } from 'vitest'
import { yamux } from '@chainsafe/libp2p-yamux'
import { defaultLogger } from '@libp2p/logger'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream, StreamMuxer } from '@libp2p/interface'
import { UdxConnection } from '../../agent/tunnel/udx-connection.ts'
import { onStreamFinished, send, toBytes } from '../../agent/tunnel/stream-io.ts'
import { createSinkStream, createUdx, type UdxSocket } from '../../shared/udx.ts'
import { meshYamuxOptions } from '../../shared/yamux.ts'

const log = defaultLogger().forComponent('test:udx-connection')
const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

async function udxPair (): Promise<[UdxConnection, UdxConnection]> {
  const udx = createUdx()
  const sockets: UdxSocket[] = [udx.createSocket(), udx.createSocket()]
  for (const s of sockets) s.bind(0, '127.0.0.1')
  const [sa, sb] = [createSinkStream(udx, 1), createSinkStream(udx, 2)]
  sa.connect(sockets[0]!, 2, sockets[1]!.address().port, '127.0.0.1')
  sb.connect(sockets[1]!, 1, sockets[0]!.address().port, '127.0.0.1')
  const addr = multiaddr('/ip4/127.0.0.1/udp/1')
  const a = new UdxConnection({ stream: sa, remoteAddr: addr, direction: 'outbound', log })
  const b = new UdxConnection({ stream: sb, remoteAddr: addr, direction: 'inbound', log })
  cleanups.push(async () => { sa.destroy(); sb.destroy(); for (const s of sockets) await s.close() })
  return [a, b]
}

function muxers (a: UdxConnection, b: UdxConnection): [StreamMuxer, StreamMuxer] {
  const factory = (yamux(meshYamuxOptions) as any)({ logger: defaultLogger() })
  const ma: StreamMuxer = factory.createStreamMuxer(a)
  const mb: StreamMuxer = factory.createStreamMuxer(b)
  cleanups.push(() => { ma.abort(new Error('test over')); mb.abort(new Error('test over')) })
  return [ma, mb]
}

it('8 streams writing 16 MiB each as fast as the connection takes: the write buffer stays within a chunk per stream, a ping waits behind at most that, every byte arrives (SHA-256)', async () => {
  const [a, b] = await udxPair()
  const [ma, mb] = muxers(a, b)
  const STREAMS = 8
  const SIZE = 16 * 1024 * 1024
  const CHUNK = 64 * 1024
  const blob = randomBytes(SIZE)
  const want = createHash('sha256').update(blob).digest('hex')

  // the receiving side: bulk streams hashed; the ping stream echoes each byte it gets
  let bulkReceived = 0
  const received: Array<Promise<string>> = []
  mb.addEventListener('stream', (e: any) => {
    const s: Stream = e.detail
    let first = true
    let echo = false
    const hash = createHash('sha256')
    received.push(new Promise((resolve) => {
      s.addEventListener('message', (m: any) => {
        let bytes = toBytes(m.data)
        if (first) { first = false; echo = bytes[0] === 1; bytes = bytes.subarray(1) }
        if (echo) { if (bytes.length > 0) s.send(bytes); return }
        bulkReceived += bytes.length
        hash.update(bytes)
      })
      let done = false
      const finish = (): void => { if (done) return; done = true; resolve(echo ? 'ping' : hash.digest('hex')) }
      onStreamFinished(s, { end: () => { finish(); void s.close() }, close: finish })
    }))
  })

  let peakQueued = 0
  const sample = setInterval(() => { peakQueued = Math.max(peakQueued, a.writeBufferLength) }, 1)
  cleanups.push(() => { clearInterval(sample) })
  const bulk = await Promise.all(Array.from({ length: STREAMS }, async () => await ma.createStream()))
  const writers = bulk.map(async (s) => {
    await send(s, Uint8Array.of(0))
    for (let off = 0; off < SIZE; off += CHUNK) {
      await send(s, blob.subarray(off, off + CHUNK))
      peakQueued = Math.max(peakQueued, a.writeBufferLength)
    }
    await s.close()
  })

  // pings while the bulk streams run: how many bulk bytes arrived between a ping leaving and its echo
  const ping = await ma.createStream()
  await send(ping, Uint8Array.of(1))
  const ahead: number[] = []
  while (bulkReceived < STREAMS * SIZE * 0.8) {
    const before = bulkReceived
    const echoed = new Promise<void>((resolve) => { ping.addEventListener('message', () => { resolve() }, { once: true }) })
    ping.send(Uint8Array.of(7))
    await echoed
    ahead.push(bulkReceived - before)
  }
  await Promise.all(writers)
  await ping.close()
  const hashes = await Promise.all(received)
  expect(hashes.filter((h) => h !== 'ping')).toEqual(Array(STREAMS).fill(want))
  // a chunk per stream and UDX's own batch, with room to spare; the old 'drain' let it reach
  // the sum of the streams' windows (8 x 4 MiB)
  expect(peakQueued).toBeLessThanOrEqual(2 * 1024 * 1024)
  console.log(`[udx-connection] peak write buffer ${peakQueued} B; bulk bytes ahead of a ping: max ${Math.max(...ahead)} over ${ahead.length} pings`)
  expect(ahead.length).toBeGreaterThan(0)
  expect(Math.max(...ahead)).toBeLessThanOrEqual(4 * 1024 * 1024)
}, 120_000)
