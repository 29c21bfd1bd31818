// Splices a TCP socket and a tunnel stream, both ways, with backpressure and half-close: a
// full stream pauses the socket, a socket that cannot keep up pauses the stream; a FIN on one
// side becomes a FIN on the other. Event driven (no async iterators per chunk): this is the
// proxy's data path. (libp2p 3.x onDrain() is broken, see stream-io.ts: we wait for 'drain'.)
import type { Socket } from 'node:net'
import type { Stream } from '@libp2p/interface'
import { onStreamFinished, pauseReading, resumeReading, toBytes, waitDrain } from '../tunnel/stream-io.ts'

/** Why a splice ended early: the tunnel stream failed (buffer overflow, reset by the peer, aborted), or the socket did. */
export type PipeFailureCause = 'stream-buffer' | 'stream-reset' | 'stream-aborted' | 'socket-error' | 'socket-closed'
export interface PipeStats { up: number, down: number, failure?: { cause: PipeFailureCause, error: Error } }

function streamFailureCause (err: Error): PipeFailureCause {
  if (err.name === 'StreamBufferError') return 'stream-buffer'
  if (err.name === 'StreamResetError' || /stream reset/.test(err.message)) return 'stream-reset'
  return 'stream-aborted'
}

/**
 * Writes a stream message to the socket without joining it: a yamux frame usually spans two noise
 * messages, and Uint8ArrayList.subarray() would copy the whole frame to make one buffer. The
 * parts go out corked, in one writev. Returns what the last write() said (false: wait for drain).
 */
function writeParts (socket: Socket, data: Uint8Array | Iterable<Uint8Array>): boolean {
  if (data instanceof Uint8Array) return socket.write(data)
  let ok = true
  socket.cork()
  for (const part of data) ok = socket.write(part)
  socket.uncork()
  return ok
}

/**
 * Splices `socket` and `stream` until both directions ended or either side failed; `head` is
 * sent on the stream first (bytes already read from the socket). Resolves with the byte counts.
 */
export async function spliceSocketStream (socket: Socket, stream: Stream, head?: Uint8Array, streamHead?: Uint8Array): Promise<PipeStats> {
  const stats: PipeStats = { up: 0, down: 0 }
  return await new Promise<PipeStats>((resolve) => {
    let done = false
    let socketEnded = false // we saw the socket's FIN (and half-closed the stream)
    let streamEnded = false // everything the remote sent is written to the socket (and we half-closed it)
    let streamPaused = false
    let detach = (): void => {}
    const finish = (err?: Error, cause?: PipeFailureCause): void => {
      if (done) return
      done = true
      if (err != null) stats.failure = { cause: cause ?? streamFailureCause(err), error: err }
      socket.off('data', onData)
      stream.removeEventListener('message', onMessage)
      detach()
      if (err != null) {
        stream.abort(err)
        socket.destroy()
      } else {
        socket.end()
      }
      resolve(stats)
    }
    const maybeDone = (): void => { if (socketEnded && streamEnded) finish() }
    const resumeStream = (): void => {
      streamPaused = false
      if (done) return
      resumeReading(stream) // delivers what waited in the stream's buffer, then 'end' if the remote is done
    }

    const onDrain = (): void => { if (!done) socket.resume() }
    const onData = (chunk: Buffer): void => {
      stats.up += chunk.length
      if (!stream.send(chunk)) {
        socket.pause()
        waitDrain(stream).then(onDrain, (e: Error) => { finish(e) })
      }
    }
    const onMessage = (evt: any): void => {
      stats.down += evt.data.byteLength
      if (!writeParts(socket, evt.data) && !streamPaused) {
        streamPaused = true
        pauseReading(stream)
        socket.once('drain', resumeStream)
      }
    }
    socket.on('data', onData)
    socket.once('end', () => {
      socketEnded = true
      stream.close().then(maybeDone, (e: Error) => { finish(e) })
    })
    socket.once('error', (e) => { finish(e, 'socket-error') })
    socket.once('close', () => { if (!socketEnded || !streamEnded) finish(new Error('socket closed'), 'socket-closed') })
    stream.addEventListener('message', onMessage)
    if (head != null && head.length > 0) {
      stats.up += head.length
      if (!stream.send(head)) { socket.pause(); waitDrain(stream).then(onDrain, (e: Error) => { finish(e) }) }
    }
    if (streamHead != null && streamHead.length > 0) onMessage({ data: streamHead })
    let streamClosed = false
    detach = onStreamFinished(stream, {
      end: () => {
        streamEnded = true
        socket.end()
        if (streamClosed) finish(); else maybeDone()
      },
      close: (err) => {
        if (err != null) { finish(err); return }
        streamClosed = true
        // closed both ways; if data still waits in the paused stream, 'end' follows once it is written
        if (streamEnded || stream.readStatus !== 'paused') { streamEnded = true; finish() }
      }
    })
    if (!done) socket.resume()
    if (!done && !streamPaused) resumeReading(stream)
  })
}

/**
 * Reads a prefix (a request, a status byte) off a stream without an iterator: bytes accumulate
 * until `parse` stops answering 'short'; then the stream is paused — later data waits in
 * libp2p's read buffer until whoever takes the stream over resumes it — and the parsed value
 * comes back with the bytes that followed it.
 */
export async function readPrefix<T> (stream: Stream, parse: (buf: Uint8Array) => { value: T, length: number } | 'short' | string, timeoutMs: number): Promise<{ value: T, rest: Uint8Array }> {
  return await new Promise((resolve, reject) => {
    let buf = new Uint8Array(0)
    let settled = false
    let detach = (): void => {}
    const settle = (): void => {
      settled = true
      clearTimeout(timer)
      stream.removeEventListener('message', onMessage)
      detach()
    }
    const onMessage = (evt: any): void => {
      if (settled) return
      const chunk = toBytes(evt.data)
      const merged = new Uint8Array(buf.length + chunk.length)
      merged.set(buf); merged.set(chunk, buf.length)
      buf = merged
      const r = parse(buf)
      if (r === 'short') return
      settle()
      if (typeof r === 'string') { reject(new Error(r)); return }
      pauseReading(stream)
      resolve({ value: r.value, rest: buf.slice(r.length) })
    }
    const timer = setTimeout(() => { settle(); reject(new Error(`no header within ${timeoutMs} ms`)) }, timeoutMs)
    stream.addEventListener('message', onMessage)
    resumeReading(stream)
    if (settled) return
    detach = onStreamFinished(stream, {
      end: () => { if (!settled) { settle(); reject(new Error('stream ended before its header')) } },
      close: (err) => { if (!settled) { settle(); reject(err ?? new Error('stream closed before its header')) } }
    })
  })
}

/** Splices two TCP sockets (an endpoint the agent dials itself): Node's pipe handles backpressure and FIN. */
export async function spliceSockets (a: Socket, b: Socket, head?: Uint8Array): Promise<PipeStats> {
  const stats: PipeStats = { up: 0, down: 0 }
  return await new Promise<PipeStats>((resolve) => {
    let closed = 0
    // a side torn down before both its directions ended (destroyed by its owner's stop(), a
    // linger timer): the other has nothing left to carry and goes too, instead of staying open
    // with nobody to end it. A normal close (both ways ended, everything flushed) leaves the
    // other side to finish flushing on its own.
    const onClose = (side: Socket, other: Socket) => (): void => {
      if (!(side.readableEnded && side.writableFinished)) other.destroy()
      if (++closed === 2) resolve(stats)
    }
    a.on('data', (c: Buffer) => { stats.up += c.length })
    b.on('data', (c: Buffer) => { stats.down += c.length })
    if (head != null && head.length > 0) { stats.up += head.length; b.write(head) }
    a.pipe(b)
    b.pipe(a)
    const fail = (): void => { a.destroy(); b.destroy() }
    a.once('error', fail)
    b.once('error', fail)
    a.once('close', onClose(a, b))
    b.once('close', onClose(b, a))
    a.resume()
  })
}
