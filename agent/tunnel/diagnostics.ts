// Diagnostic protocols used by `edgemesh` debugging commands, the tests and the benchmarks:
// bulk transfers with SHA-256 verification each way, and dial-to-first-echo timing. Enabled
// per agent (config `diagnostics: true`); they only serve authenticated mesh peers.
import { createHash, randomFillSync } from 'node:crypto'
import type { Connection, Stream } from '@libp2p/interface'
import { readExactly, readStream, send } from './stream-io.ts'
import { PING_PROTOCOL, type Tunnel } from './tunnel.ts'

export const DIAG_SINK = '/edgemesh/diag/sink/1.0.0'
export const DIAG_SOURCE = '/edgemesh/diag/source/1.0.0'
/** counts bytes without hashing: benchmarks measure the transport, not SHA-256 */
export const DIAG_DISCARD = '/edgemesh/diag/discard/1.0.0'

const CHUNK = 64 * 1024
/** the largest transfer a source serves */
export const MAX_TRANSFER_BYTES = 64 * 1024 ** 3

export interface TransferResult {
  direction: 'send' | 'receive'
  bytes: number
  ms: number
  mbps: number
  sha256Local: string
  sha256Remote: string
  match: boolean
  path: string
}

/** Writes `bytes` random bytes, hashing them; returns the digest. */
async function sendRandom (stream: Stream, bytes: number): Promise<string> {
  const hash = createHash('sha256')
  let left = bytes
  while (left > 0) {
    const n = Math.min(CHUNK, left)
    // a fresh buffer each time: the stream may still hold the previous one
    const chunk = randomFillSync(Buffer.allocUnsafe(n))
    hash.update(chunk)
    left -= n
    await send(stream, chunk)
  }
  return hash.digest('hex')
}

export async function serveSink (stream: Stream): Promise<void> {
  try {
    const hash = createHash('sha256')
    let n = 0
    for await (const chunk of readStream(stream)) { hash.update(chunk); n += chunk.byteLength }
    const reply = Buffer.alloc(40)
    reply.writeBigUInt64BE(BigInt(n), 0)
    hash.digest().copy(reply, 8)
    await send(stream, reply)
    await stream.close()
  } catch (err) {
    stream.abort(err as Error)
  }
}

export async function serveSource (stream: Stream): Promise<void> {
  try {
    const it = readStream(stream)[Symbol.asyncIterator]()
    const header = await readExactly(it, 8)
    const bytes = Number(Buffer.from(header).readBigUInt64BE(0))
    if (bytes > MAX_TRANSFER_BYTES) throw new Error('diag source: request too large')
    const digest = await sendRandom(stream, bytes)
    await send(stream, Buffer.from(digest, 'hex'))
    await stream.close()
  } catch (err) {
    stream.abort(err as Error)
  }
}

export async function serveDiscard (stream: Stream): Promise<void> {
  try {
    let n = 0
    for await (const chunk of readStream(stream)) n += chunk.byteLength
    const reply = Buffer.alloc(8)
    reply.writeBigUInt64BE(BigInt(n), 0)
    await send(stream, reply)
    await stream.close()
  } catch (err) {
    stream.abort(err as Error)
  }
}

/** Raw throughput: one constant buffer sent repeatedly, the peer only counts. */
export async function discardTransfer (conn: Connection, path: string, bytes: number): Promise<{ bytes: number, ms: number, mbps: number, path: string }> {
  const chunk = Buffer.alloc(CHUNK, 0x5a)
  const t0 = performance.now()
  const stream = await conn.newStream(DIAG_DISCARD, { runOnLimitedConnection: true })
  const it = readStream(stream)[Symbol.asyncIterator]()
  for (let left = bytes; left > 0; left -= CHUNK) await send(stream, left >= CHUNK ? chunk : chunk.subarray(0, left))
  await stream.close()
  const got = Number(Buffer.from(await readExactly(it, 8)).readBigUInt64BE(0))
  const ms = performance.now() - t0
  if (got !== bytes) throw new Error(`peer counted ${got} of ${bytes} bytes`)
  return { bytes: got, ms: +ms.toFixed(1), mbps: mbps(bytes, ms), path }
}

export async function registerDiagnostics (tunnel: Tunnel): Promise<void> {
  await tunnel.handle(DIAG_DISCARD, (s) => { void serveDiscard(s) })
  await tunnel.handle(DIAG_SINK, (s) => { void serveSink(s) })
  await tunnel.handle(DIAG_SOURCE, (s) => { void serveSource(s) })
}

function mbps (bytes: number, ms: number): number { return +((bytes * 8) / (ms / 1000) / 1e6).toFixed(1) }

export async function transfer (conn: Connection, path: string, direction: 'send' | 'receive', bytes: number): Promise<TransferResult> {
  const t0 = performance.now()
  if (direction === 'send') {
    const stream = await conn.newStream(DIAG_SINK, { runOnLimitedConnection: true })
    const it = readStream(stream)[Symbol.asyncIterator]()
    const local = await sendRandom(stream, bytes)
    await stream.close()
    const reply = Buffer.from(await readExactly(it, 40))
    const ms = performance.now() - t0
    const remote = reply.subarray(8).toString('hex')
    const got = Number(reply.readBigUInt64BE(0))
    return { direction, bytes: got, ms: +ms.toFixed(1), mbps: mbps(bytes, ms), sha256Local: local, sha256Remote: remote, match: remote === local && got === bytes, path }
  }
  const stream = await conn.newStream(DIAG_SOURCE, { runOnLimitedConnection: true })
  const header = Buffer.alloc(8)
  header.writeBigUInt64BE(BigInt(bytes))
  await send(stream, header)
  const hash = createHash('sha256')
  let got = 0
  const tail: Buffer[] = []
  for await (const chunk of readStream(stream)) {
    // the first `bytes` bytes are data, the last 32 the sender's digest
    const dataPart = Math.max(0, Math.min(chunk.byteLength, bytes - got))
    if (dataPart > 0) hash.update(chunk.subarray(0, dataPart))
    if (dataPart < chunk.byteLength) tail.push(Buffer.from(chunk.subarray(dataPart)))
    got += dataPart
  }
  const ms = performance.now() - t0
  const local = hash.digest('hex')
  const remote = Buffer.concat(tail).toString('hex')
  await stream.close().catch(() => {})
  return { direction, bytes: got, ms: +ms.toFixed(1), mbps: mbps(bytes, ms), sha256Local: local, sha256Remote: remote, match: remote === local && got === bytes, path }
}

/** Dial-to-first-echoed-byte on a fresh connection (existing ones are closed first). */
export async function firstByte (tunnel: Tunnel, node: string, via?: string): Promise<{ ms: number, path: string }> {
  await tunnel.disconnect(node)
  const t0 = performance.now()
  const { conn, path } = await tunnel.connectionVia(node, via)
  const stream = await conn.newStream(PING_PROTOCOL, { runOnLimitedConnection: true })
  const it = readStream(stream)[Symbol.asyncIterator]()
  await send(stream, new Uint8Array([42]))
  await readExactly(it, 1)
  const ms = performance.now() - t0
  await stream.close().catch(() => {})
  return { ms: +ms.toFixed(2), path }
}
