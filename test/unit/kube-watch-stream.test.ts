// agent/catalog/kube-client.ts watch stream framing, fuzzed: the apiserver's newline-delimited
// JSON events arrive cut anywhere (inside a line, inside a multi-byte UTF-8 character); every
// event comes out whole and in order, and edgemesh_catalog_watch_bytes_total's source (onBytes)
// counts exactly the body's bytes. Arbitrary bytes end the watch with an error (the reflector
// retries), never a hang or an event made of garbage. A loopback HTTP server plays the apiserver.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KubeClient, type WatchEvent } from '../../agent/catalog/kube-client.ts'

/** the body the next watch gets, as chunks written one by one */
let chunks: Buffer[] = []
let server: Server
let client: KubeClient

beforeAll(async () => {
  server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.flushHeaders()
    const body = chunks
    void (async () => {
      for (const c of body) {
        await new Promise<void>((resolve) => { res.write(c, () => { resolve() }) })
        await new Promise((resolve) => setImmediate(resolve))
      }
      res.end()
    })()
  })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  client = new KubeClient({ server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, watchIdleMs: 10_000 })
})

afterAll(async () => {
  client.close()
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
})

/** cut a buffer at the given (sorted, deduplicated) offsets */
function cut (buf: Buffer, at: number[]): Buffer[] {
  const points = [...new Set(at.map((n) => n % (buf.length + 1)))].sort((a, b) => a - b)
  const out: Buffer[] = []
  let start = 0
  for (const p of [...points, buf.length]) { if (p > start) out.push(buf.subarray(start, p)); start = Math.max(start, p) }
  return out
}

async function watchBody (body: Buffer, at: number[]): Promise<{ events: WatchEvent[], bytes: number }> {
  chunks = cut(body, at)
  const events: WatchEvent[] = []
  let bytes = 0
  await client.watch('/api/v1/services', { resourceVersion: '1', timeoutSeconds: 60, bookmarks: false, onBytes: (n) => { bytes += n } }, (ev) => { events.push(ev) })
  return { events, bytes }
}

const event = fc.record({
  type: fc.constantFrom('ADDED' as const, 'MODIFIED' as const, 'DELETED' as const, 'BOOKMARK' as const),
  object: fc.record({ metadata: fc.record({ name: fc.string({ unit: 'grapheme', maxLength: 20 }), resourceVersion: fc.nat().map(String), annotations: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ unit: 'grapheme', maxLength: 30 })) }) })
})

describe('watch stream framing (fuzz)', () => {
  it('events cut anywhere, multi-byte characters included, come out whole and in order; onBytes counts every byte', async () => {
    await fc.assert(fc.asyncProperty(fc.array(event, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), fc.boolean(), async (evs, at, lastNewline) => {
      const text = evs.map((e) => JSON.stringify(e)).join('\n') + (lastNewline && evs.length > 0 ? '\n' : '')
      const body = Buffer.from(text, 'utf8')
      const got = await watchBody(body, at)
      expect(got.events).toEqual(evs)
      expect(got.bytes).toBe(body.length)
    }), { numRuns: 150 })
  }, 60_000)

  it('arbitrary bytes: the watch ends (resolves or rejects with an Error), every event it delivered parsed from a whole line', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(), { maxLength: 6 }), async (raw, at) => {
      const body = Buffer.from(raw)
      let got: { events: WatchEvent[], bytes: number } | undefined
      try {
        got = await watchBody(body, at)
      } catch (err) {
        expect(err).toBeInstanceOf(Error)
        return
      }
      // resolved: every non-blank line was JSON, and each became one event
      const lines = body.toString('utf8').split('\n').filter((l) => l.trim() !== '')
      expect(got.events).toEqual(lines.map((l) => JSON.parse(l)))
    }), { numRuns: 150 })
  }, 60_000)
})
