// Helpers for libp2p v3 streams that respect backpressure. Note: @libp2p/utils 7.4.1's
// onDrain() caches a resolved promise after the first drain and then never waits again, so
// we wait for the next 'drain' event ourselves.
import type { Stream } from '@libp2p/interface'

type Chunk = Uint8Array | { subarray: () => Uint8Array }

export function toBytes (d: Chunk): Uint8Array {
  return d instanceof Uint8Array ? d : d.subarray()
}

/**
 * Waits until the stream takes writes again. A yamux stream hears 'drain' when the connection
 * below drained and also when the peer granted window; then it first flushes what it holds and
 * may find the connection still saturated (writableNeedsDrain set again before we run). Writing
 * then would only queue behind the connection's backlog, so we wait for the next 'drain'.
 */
export async function waitDrain (stream: Stream): Promise<void> {
  while (stream.writableNeedsDrain) await nextDrain(stream)
}

async function nextDrain (stream: Stream): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onDrain = (): void => { cleanup(); resolve() }
    const onClose = (evt: any): void => { cleanup(); reject(evt?.error ?? new Error('stream closed')) }
    const cleanup = (): void => {
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
    }
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
  })
}

// libp2p's resume() (@libp2p/utils 7.4.1 AbstractMessageStream) first dispatches what waited in
// the read buffer and only then tells the muxer to resume (sendResume). A consumer that pauses
// again in that dispatch (its sink is still full) is overridden: readStatus says 'paused' but
// yamux is back to granting window on every frame it receives, the read buffer grows without
// bound and the stream is aborted with StreamBufferError (a slow reader's download cut). So a
// pause requested during our own resume() is applied once resume() has returned.
const resuming = new WeakSet<Stream>()
const pauseAfterResume = new WeakSet<Stream>()

/** Pauses reading (yamux stops granting window), also from a 'message' handler. */
export function pauseReading (stream: Stream): void {
  if (stream.readStatus !== 'readable') return
  if (resuming.has(stream)) { pauseAfterResume.add(stream); return }
  stream.pause()
}

/** Resumes reading: delivers what waited, then grants window again unless that made the consumer pause. */
export function resumeReading (stream: Stream): void {
  if (stream.readStatus !== 'paused') return
  resuming.add(stream)
  try { stream.resume() } finally { resuming.delete(stream) }
  // (a string compare: TypeScript narrowed readStatus to 'paused' above, but resume() changed it)
  if (pauseAfterResume.delete(stream) && (stream.readStatus as string) === 'readable') stream.pause()
}

/** Sends one chunk, waiting for drain when the stream's buffer is full. */
export async function send (stream: Stream, data: Uint8Array): Promise<void> {
  if (!stream.send(data)) await waitDrain(stream)
}

/**
 * Reads a stream as an async iterable with backpressure: the stream is paused while more than
 * `highWaterMark` bytes wait unread.
 */
export async function * readStream (stream: Stream, highWaterMark = 1 << 20): AsyncGenerator<Uint8Array> {
  const queue: Uint8Array[] = []
  let queued = 0
  let ended = false
  let error: Error | undefined
  let wake: (() => void) | undefined
  const notify = (): void => { const w = wake; wake = undefined; w?.() }
  const onMessage = (evt: any): void => {
    const b = toBytes(evt.data)
    queue.push(b); queued += b.byteLength
    if (queued > highWaterMark) pauseReading(stream)
    notify()
  }
  stream.addEventListener('message', onMessage)
  const detach = onStreamFinished(stream, {
    end: () => { ended = true; notify() },
    close: (err) => { if (err != null) error = err; ended = true; notify() }
  })
  try {
    for (;;) {
      const b = queue.shift()
      if (b !== undefined) {
        queued -= b.byteLength
        if (queued <= highWaterMark / 2) resumeReading(stream)
        yield b
        continue
      }
      if (error != null) throw error
      if (ended) return
      await new Promise<void>((resolve) => { wake = resolve })
    }
  } finally {
    stream.removeEventListener('message', onMessage)
    detach()
  }
}

/** Reads exactly n bytes (or throws if the stream ends first). */
export async function readExactly (it: AsyncIterator<Uint8Array>, n: number, carry: { rest?: Uint8Array } = {}): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  let have = 0
  if (carry.rest != null) { parts.push(carry.rest); have += carry.rest.byteLength; carry.rest = undefined }
  while (have < n) {
    const r = await it.next()
    if (r.done === true) throw new Error(`stream ended after ${have} of ${n} bytes`)
    parts.push(r.value); have += r.value.byteLength
  }
  const all = parts.length === 1 ? parts[0]! : Buffer.concat(parts)
  if (all.byteLength > n) carry.rest = all.subarray(n)
  return all.subarray(0, n)
}

/**
 * Calls `end` once everything the remote sent has been delivered and it closed its writable end,
 * and `close` once the stream is finished (with the error if it was aborted or reset). Either is
 * also called, at once, if it happened before: a prefix reader that handed the stream over may
 * have missed nothing, but the next owner attaches a few microtasks later, and yamux delivers a
 * data frame and the FIN behind it in the same tick. ('end' is used, not 'remoteCloseWrite':
 * the latter fires while data still waits in a paused stream's buffer.) Returns a detach function.
 */
export function onStreamFinished (stream: Stream, on: { end?: () => void, close: (err?: Error) => void }): () => void {
  let ended = false
  let closed = false
  const end = (): void => { if (ended) return; ended = true; on.end?.() }
  const close = (evt?: any): void => { if (closed) return; closed = true; on.close(evt?.error) }
  stream.addEventListener('end', end)
  stream.addEventListener('close', close)
  if (stream.readableEnded) end()
  if (stream.status === 'aborted' || stream.status === 'reset') close({ error: new Error(`stream ${stream.status}`) })
  else if (stream.status === 'closed') close()
  return () => {
    stream.removeEventListener('end', end)
    stream.removeEventListener('close', close)
  }
}
