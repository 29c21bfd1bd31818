// joinCircuit on libp2p's in-memory stream pairs: dialer <-> [relaySrc | relayDst] <-> listener.
import { streamPair } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { describe, expect, it } from 'vitest'
import { joinCircuit, joinCircuitsWithBackpressure } from '../../server/circuit-join.ts'
import { createLogger } from '../../shared/logging.ts'
import { eventually } from '../lab/wait.ts'

const KiB = 1024

async function circuit (limit: Partial<Parameters<typeof joinCircuit>[2]> = {}): Promise<{ dialer: Stream, listener: Stream, relaySrc: Stream, relayDst: Stream }> {
  const [dialer, relaySrc] = await streamPair()
  const [relayDst, listener] = await streamPair()
  joinCircuit(relaySrc, relayDst, { signals: [], ...limit })
  return { dialer, listener, relaySrc, relayDst }
}

/** Collects what `s` receives until its remote closes its writable end. */
function received (s: Stream): Promise<Uint8Array> {
  const got = new Uint8ArrayList()
  s.addEventListener('message', (evt) => { got.append(evt.data) })
  return new Promise((resolve, reject) => {
    s.addEventListener('end', () => { resolve(got.subarray()) })
    s.addEventListener('close', (evt) => { if (evt.error != null) reject(evt.error) })
  })
}

/** Sends `data` in 16 KiB messages, waiting for 'drain' whenever the stream asks for it, then closes. */
async function sendAll (s: Stream, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length; at += 16 * KiB) {
    if (!s.send(data.subarray(at, at + 16 * KiB))) await s.onDrain()
  }
  await s.close()
}

/** A receiving stream whose send buffer is full while `full` is set, until drain(). */
class WaitingStream extends EventTarget {
  status = 'open'
  writeStatus = 'writable'
  readStatus = 'readable'
  readableEnded = false
  full = false
  readonly sent = new Uint8ArrayList()
  private needsDrain = false
  private drained?: () => void
  send (data: Uint8Array | Uint8ArrayList): boolean {
    this.sent.append(data)
    if (this.full) this.needsDrain = true
    return !this.full
  }

  async onDrain (): Promise<void> { if (this.needsDrain) await new Promise<void>((resolve) => { this.drained = resolve }) }
  drain (): void { this.needsDrain = false; this.drained?.() }
  async close (): Promise<void> {}
  abort (): void { this.status = 'aborted' }
  pause (): void {}
  resume (): void {}
}

const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff)

describe('joinCircuit', () => {
  it('relays both directions byte for byte and passes each half-close on; when both ends closed the relay streams are closed too', async () => {
    const { dialer, listener, relaySrc, relayDst } = await circuit()
    const up = pattern(300 * KiB, 1)
    const down = pattern(200 * KiB, 7)
    const atListener = received(listener)
    const atDialer = received(dialer)
    await Promise.all([sendAll(dialer, up), sendAll(listener, down)])
    expect(Buffer.from(await atListener).equals(Buffer.from(up))).toBe(true)
    expect(Buffer.from(await atDialer).equals(Buffer.from(down))).toBe(true)
    await eventually(async () => {
      for (const s of [dialer, listener, relaySrc, relayDst]) expect(s.status).toBe('closed')
    }, 5_000, 20)
  })

  it('pauses the sending stream while the receiving stream asks to wait, forwards nothing meanwhile, and resumes on drain', async () => {
    const [dialer, relaySrc] = await streamPair()
    const dst = new WaitingStream()
    joinCircuit(relaySrc, dst as unknown as Stream, { signals: [] })
    dst.full = true
    dialer.send(pattern(16 * KiB, 1))
    await eventually(async () => { expect(relaySrc.readStatus).toBe('paused') }, 5_000, 10)
    dialer.send(pattern(16 * KiB, 2))
    // the second message waits in the relay stream's read buffer (yamux grants no window for it)
    await eventually(async () => { expect(relaySrc.readBufferLength).toBe(16 * KiB) }, 5_000, 10)
    expect(dst.sent.byteLength).toBe(16 * KiB)
    dst.full = false
    dst.drain()
    await eventually(async () => { expect(dst.sent.byteLength).toBe(32 * KiB) }, 5_000, 10)
    expect(relaySrc.readStatus).toBe('readable')
    expect(Buffer.from(dst.sent.subarray()).equals(Buffer.concat([pattern(16 * KiB, 1), pattern(16 * KiB, 2)]))).toBe(true)
  })

  it('an abort on one side resets the other', async () => {
    const { dialer, listener, relaySrc, relayDst } = await circuit()
    const closed = new Promise<Error | undefined>((resolve) => { listener.addEventListener('close', (evt) => { resolve(evt.error) }) })
    dialer.abort(new Error('gone'))
    expect(await closed).toBeInstanceOf(Error)
    expect(listener.status).toBe('reset')
    expect(relaySrc.status).not.toBe('open')
    expect(relayDst.status).toBe('aborted')
  })

  it('aborts both sides past the data limit (both directions counted together), after the duration limit and when a signal fires', async () => {
    const limited = await circuit({ dataBytes: 10n * BigInt(KiB) })
    limited.dialer.send(pattern(6 * KiB, 0))
    limited.listener.send(pattern(6 * KiB, 0))
    await eventually(async () => {
      expect(limited.dialer.status).toBe('reset')
      expect(limited.listener.status).toBe('reset')
    }, 5_000, 20)

    const timed = await circuit({ durationMs: 30 })
    await eventually(async () => {
      expect(timed.dialer.status).toBe('reset')
      expect(timed.listener.status).toBe('reset')
    }, 5_000, 20)

    const ac = new AbortController()
    const signalled = await circuit({ signals: [ac.signal] })
    ac.abort(new Error('relay stopping'))
    await eventually(async () => {
      expect(signalled.dialer.status).toBe('reset')
      expect(signalled.listener.status).toBe('reset')
    }, 5_000, 20)
  })

  it('refuses to start when the relay service lacks the internals it replaces', () => {
    expect(() => { joinCircuitsWithBackpressure({}, createLogger({ name: 'test', level: 'silent' })) }).toThrow(/internals changed/)
  })
})
