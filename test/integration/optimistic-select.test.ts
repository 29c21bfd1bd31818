// Optimistic multistream-select against real libp2p listeners (TCP on loopback, noise, yamux):
// the proposal and the request leave in one write, the handler gets the request, the answer
// comes back; a peer without the protocol (an old agent) gives UnsupportedProtocolError, the
// error the SOCKS server maps to 0x02 node-not-serving.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import type { Connection, Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { muxerOf, openOptimistic, MULTISTREAM_ID } from '../../agent/tunnel/optimistic-select.ts'
import { readPrefix } from '../../agent/proxy/pipe.ts'
import { meshYamux } from '../../shared/yamux.ts'

const PROTO = '/edgemesh/test-request/1.0.0'
const EAGER = '/edgemesh/test-eager/1.0.0'
const nodes: Libp2p[] = []
let conn: Connection
const received: string[] = []

async function node (): Promise<Libp2p> {
  const n = await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [meshYamux()] })
  nodes.push(n)
  return n
}

beforeAll(async () => {
  const client = await node()
  const server = await node()
  // answers "ok <request>" once the request arrived, like the socks5-node and proxy handlers
  await server.handle(PROTO, (stream: Stream) => {
    void readPrefix(stream, (b) => { const end = b.indexOf(0x0a); return end < 0 ? 'short' : { value: Buffer.from(b.subarray(0, end)).toString(), length: end + 1 } }, 5_000).then(({ value }) => {
      received.push(value)
      stream.send(Buffer.from(`ok ${value}\n`))
      void stream.close()
    })
  }, { maxInboundStreams: 256 }) // as the tunnel's handle() raises libp2p's 32
  // answers and closes without reading: its answer and FIN can land with the negotiation's
  await server.handle(EAGER, (stream: Stream) => { stream.send(Buffer.from('status\n')); void stream.close() }, { maxInboundStreams: 256 })
  conn = await client.dial(server.getMultiaddrs()[0]!)
})

afterAll(async () => { await Promise.all(nodes.map(async (n) => { await n.stop() })) })

async function answer (stream: Stream): Promise<string> {
  const { value } = await readPrefix(stream, (b) => { const end = b.indexOf(0x0a); return end < 0 ? 'short' : { value: Buffer.from(b.subarray(0, end)).toString(), length: end + 1 } }, 5_000)
  return value
}

describe('optimistic multistream-select', () => {
  it('libp2p still exposes the connection muxer (else the tunnel falls back to a second round trip)', () => {
    expect(muxerOf(conn)).not.toBeNull()
  })

  it('header, protocol and request go out in one write; the peer\'s handler gets the request and answers', async () => {
    const muxer = muxerOf(conn)!
    const writes: number[] = []
    const createStream = muxer.createStream.bind(muxer)
    const spied = { createStream: async (...args: any[]) => { const s = await createStream(...args); const send = s.send.bind(s); s.send = (d: any) => { writes.push(d.byteLength); return send(d) }; return s } }
    const request = Buffer.from('node-a:22\n')
    const stream = await openOptimistic(Object.assign(Object.create(muxer), spied), PROTO, request, { signal: AbortSignal.timeout(5_000) })
    expect(stream.protocol).toBe(PROTO)
    const expected = new Uint8ArrayList(Uint8Array.of(MULTISTREAM_ID.length + 1), Buffer.from(`${MULTISTREAM_ID}\n`), Uint8Array.of(PROTO.length + 1), Buffer.from(`${PROTO}\n`), request).byteLength
    expect(writes).toEqual([expected])
    expect(await answer(stream)).toBe('ok node-a:22')
    expect(received).toContain('node-a:22')
  })

  it('many at once on one connection: every request answered by its own stream', async () => {
    const muxer = muxerOf(conn)!
    const answers = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
      const s = await openOptimistic(muxer, PROTO, Buffer.from(`r${i}\n`))
      return await answer(s)
    }))
    expect(answers).toEqual(Array.from({ length: 50 }, (_, i) => `ok r${i}`))
  })

  it('an answer and FIN right behind the negotiation (a refusal status) are still read, not lost to the end', async () => {
    const muxer = muxerOf(conn)!
    const answers = await Promise.all(Array.from({ length: 50 }, async () => await answer(await openOptimistic(muxer, EAGER, Buffer.from('x\n')))))
    expect(answers).toEqual(Array.from({ length: 50 }, () => 'status'))
  })

  it('a peer that does not serve the protocol (an old agent): UnsupportedProtocolError, the request never reaches a handler', async () => {
    const before = received.length
    const err = await openOptimistic(muxerOf(conn)!, '/edgemesh/not-served/1.0.0', Buffer.from('node-a:22\n'), { signal: AbortSignal.timeout(5_000) }).then(() => null, (e: Error) => e)
    expect(err?.name).toBe('UnsupportedProtocolError')
    expect(received.length).toBe(before)
    // the connection survives the refused stream
    expect(await answer(await openOptimistic(muxerOf(conn)!, PROTO, Buffer.from('after\n')))).toBe('ok after')
  })
})
