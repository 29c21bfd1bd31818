// Optimistic multistream-select: the protocol proposal and the caller's first bytes leave in one
// flight, so a request/answer protocol (socks5-node, proxy) costs one tunnel round trip instead
// of two. libp2p 3.3's newStream() always negotiates fully before returning (its
// `negotiateFully: false` option is declared but @libp2p/multistream-select 7.0.28's select()
// never reads it), so we speak the dialer's side ourselves on a bare muxer stream. The listener
// side is libp2p's unchanged mss.handle(): it answers the header and the protocol, then hands
// the bytes that followed to the handler. A peer that does not serve the protocol answers "na"
// (and drops the stream when it reads our bytes as its next proposal): UnsupportedProtocolError,
// as newStream() would throw.
import { UnsupportedProtocolError, type AbortOptions, type Connection, type Stream, type StreamMuxer } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'

/** multistream-select's header line (libp2p speaks 1.0.0). */
export const MULTISTREAM_ID = '/multistream/1.0.0'
/** What libp2p allows for a protocol line. */
const MAX_PROTOCOL_LENGTH = 1024
/** Negotiation deadline when the caller gave no signal (libp2p's outbound default is 10 s). */
const DEFAULT_TIMEOUT_MS = 10_000

/** The connection's muxer, which libp2p keeps private (a test checks it is still there); null when closed. */
export function muxerOf (conn: Connection): StreamMuxer | null {
  const muxer = (conn as unknown as { muxer?: StreamMuxer }).muxer
  return muxer != null && typeof muxer.createStream === 'function' && muxer.status === 'open' && conn.status === 'open' ? muxer : null
}

/** One multistream-select message: varint length, then the line. */
export function encodeSelectLine (line: string): Uint8Array {
  const text = Buffer.from(`${line}\n`, 'utf8')
  const len: number[] = []
  let n = text.byteLength
  while (n >= 0x80) { len.push((n & 0x7f) | 0x80); n >>>= 7 }
  len.push(n)
  return Buffer.concat([Uint8Array.from(len), text])
}

/** Reads one length-prefixed line at `at`: the line and where the next begins, 'short', or an error. */
function readSelectLine (buf: Uint8Array, at: number): { line: string, next: number } | 'short' | string {
  let len = 0
  let shift = 0
  let i = at
  for (;;) {
    if (i >= buf.byteLength) return 'short'
    const b = buf[i++]!
    len |= (b & 0x7f) << shift
    if ((b & 0x80) === 0) break
    shift += 7
    if (shift > 14) return 'malformed length'
  }
  if (len === 0 || len > MAX_PROTOCOL_LENGTH) return `bad line length ${len}`
  if (i + len > buf.byteLength) return 'short'
  if (buf[i + len - 1] !== 0x0a) return 'missing newline'
  return { line: Buffer.from(buf.subarray(i, i + len - 1)).toString('utf8'), next: i + len }
}

/**
 * The listener's two answers (multistream header, then the protocol echoed or "na"): how many
 * bytes they took, 'short' until both arrived, or why the protocol was not selected.
 */
export function parseSelectAnswers (buf: Uint8Array, protocol: string): { length: number } | 'short' | { refused: string } {
  const header = readSelectLine(buf, 0)
  if (header === 'short') return 'short'
  if (typeof header === 'string') return { refused: `malformed multistream answer (${header})` }
  if (header.line !== MULTISTREAM_ID) return { refused: `peer answered "${header.line.slice(0, 64)}" instead of the multistream header` }
  const answer = readSelectLine(buf, header.next)
  if (answer === 'short') return 'short'
  if (typeof answer === 'string') return { refused: `malformed multistream answer (${answer})` }
  if (answer.line !== protocol) return { refused: `could not negotiate ${protocol} (peer answered "${answer.line.slice(0, 64)}")` }
  return { length: answer.next }
}

/**
 * Opens a stream on `muxer`, sends the multistream header, `protocol` and `firstData` at once,
 * and resolves once the peer accepted the protocol. Bytes the peer sent behind its answer are
 * put back in the stream's read buffer from inside the message handler that found them, so they
 * are delivered to the next reader and the stream's 'end' (the peer's FIN right behind a status
 * byte) waits for them.
 */
export async function openOptimistic (muxer: StreamMuxer, protocol: string, firstData: Uint8Array, opts: AbortOptions = {}): Promise<Stream> {
  const signal = opts.signal ?? AbortSignal.timeout(DEFAULT_TIMEOUT_MS)
  const stream = await muxer.createStream()
  stream.send(new Uint8ArrayList(encodeSelectLine(MULTISTREAM_ID), encodeSelectLine(protocol), firstData))
  return await new Promise<Stream>((resolve, reject) => {
    let buf = new Uint8Array(0)
    const cleanup = (): void => {
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('close', onClose)
      stream.removeEventListener('end', onEnd)
      signal.removeEventListener('abort', onAbort)
    }
    const fail = (err: Error): void => { cleanup(); stream.abort(err); reject(err) }
    const onMessage = (evt: any): void => {
      const chunk: Uint8Array = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
      const merged = new Uint8Array(buf.byteLength + chunk.byteLength)
      merged.set(buf); merged.set(chunk, buf.byteLength)
      buf = merged
      const r = parseSelectAnswers(buf, protocol)
      if (r === 'short') return
      if ('refused' in r) { fail(new UnsupportedProtocolError(`Protocol selection failed - ${r.refused}`)); return }
      cleanup()
      if (buf.byteLength > r.length) stream.unshift(buf.subarray(r.length))
      stream.protocol = protocol
      resolve(stream)
    }
    const onClose = (evt: any): void => { cleanup(); reject(evt?.error ?? new Error(`stream closed while negotiating ${protocol}`)) }
    const onEnd = (): void => { fail(new Error(`stream ended while negotiating ${protocol}`)) }
    const onAbort = (): void => { fail(signal.reason ?? new Error('aborted')) }
    if (signal.aborted) { onAbort(); return }
    stream.addEventListener('message', onMessage)
    stream.addEventListener('close', onClose)
    stream.addEventListener('end', onEnd)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
