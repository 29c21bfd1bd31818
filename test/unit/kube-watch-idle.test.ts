// agent/catalog/kube-client.ts watch liveness: a watch that asked for bookmarks and hears nothing
// for watchIdleMs is presumed dead (a partition sends no RST) and ends for a resume; a watch
// without bookmarks may rightly be silent until its server-side timeoutSeconds, so a quiet one is
// left alone until the server ends it; when one watch is presumed dead, the client's other
// watches (same path to the apiserver) end for a resume too. A loopback HTTP server plays the
// apiserver: it holds each watch open silently and ends it after timeoutSeconds.
import { execFileSync } from 'node:child_process'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { KubeClient, type WatchEvent } from '../../agent/catalog/kube-client.ts'

interface Seen { query: URLSearchParams, endedByServer: boolean, closedByClient: boolean }

/** deaf: the server never ends a watch (a connection whose far end is gone looks the same) */
async function fakeApiserver (opts: { deaf?: boolean } = {}): Promise<{ server: Server, url: string, seen: Seen[] }> {
  const seen: Seen[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const query = new URL(req.url ?? '/', 'http://x').searchParams
    const s: Seen = { query, endedByServer: false, closedByClient: false }
    seen.push(s)
    res.writeHead(200, { 'content-type': 'application/json' })
    res.flushHeaders()
    const timer = setTimeout(() => { if (opts.deaf !== true) { s.endedByServer = true; res.end() } }, Number(query.get('timeoutSeconds')) * 1000)
    res.on('close', () => { if (!s.endedByServer) s.closedByClient = true; clearTimeout(timer) })
  })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

let api: Awaited<ReturnType<typeof fakeApiserver>> | undefined
let client: KubeClient | undefined
afterEach(async () => {
  client?.close()
  if (api != null) { api.server.closeAllConnections(); await new Promise((resolve) => api!.server.close(resolve)) }
  api = undefined
  client = undefined
})

/** until the server has seen each watch's connection end (the client's close travels over loopback) */
async function settled (seen: Seen[]): Promise<void> {
  while (!seen.every((s) => s.endedByServer || s.closedByClient)) await new Promise((resolve) => setTimeout(resolve, 5))
}

const events: WatchEvent[] = []
const onEvent = (ev: WatchEvent): void => { events.push(ev) }

describe('watch idle timeout', () => {
  it('a quiet watch without bookmarks runs until the server ends it, even far past watchIdleMs', async () => {
    api = await fakeApiserver()
    client = new KubeClient({ server: api.url, watchIdleMs: 100 })
    await client.watch('/api/v1/services', { resourceVersion: '5', timeoutSeconds: 2, bookmarks: false }, onEvent)
    expect(api.seen).toHaveLength(1)
    expect(api.seen[0]!.query.has('allowWatchBookmarks')).toBe(false)
    expect(api.seen[0]!.query.get('timeoutSeconds')).toBe('2')
    expect(api.seen[0]!.endedByServer).toBe(true) // 20x watchIdleMs of silence: not torn down
    expect(api.seen[0]!.closedByClient).toBe(false)
  })

  it('a watch without bookmarks that outlives its timeoutSeconds (the server is gone) is presumed dead after the margin and ends for a resume', async () => {
    api = await fakeApiserver({ deaf: true })
    client = new KubeClient({ server: api.url, watchIdleMs: 100, watchEndMarginMs: 300 })
    await client.watch('/api/v1/services', { resourceVersion: '5', timeoutSeconds: 1, bookmarks: false }, onEvent)
    await settled(api.seen)
    expect(api.seen[0]!.endedByServer).toBe(false)
    expect(api.seen[0]!.closedByClient).toBe(true)
  })

  it('a watch connection has TCP keep-alive on (probes keep a NAT mapping of a quiet watch; seen by ss)', async () => {
    api = await fakeApiserver()
    client = new KubeClient({ server: api.url, watchIdleMs: 100 })
    const port = new URL(api.url).port
    let opened!: () => void
    const open = new Promise<void>((resolve) => { opened = resolve })
    const watching = client.watch('/api/v1/services', { resourceVersion: '5', timeoutSeconds: 2, bookmarks: false }, onEvent, undefined, () => { opened() })
    await open
    await new Promise((resolve) => setImmediate(resolve)) // past the line after onOpen that sets it
    const ss = execFileSync('ss', ['-tnoH', 'state', 'established', `( dport = :${port} )`], { encoding: 'utf8' })
    expect(ss).toMatch(/timer:\(keepalive,(2\d|30)sec/) // the client's end: 30 s to the first probe
    await watching
  })

  it('a quiet watch that asked for bookmarks is presumed dead after watchIdleMs and ends for a resume', async () => {
    api = await fakeApiserver()
    client = new KubeClient({ server: api.url, watchIdleMs: 100 })
    await client.watch('/apis/coordination.k8s.io/v1/namespaces/m/leases', { resourceVersion: '5', timeoutSeconds: 30, labelSelector: 'a=b' }, onEvent)
    expect(api.seen[0]!.query.get('allowWatchBookmarks')).toBe('true')
    await settled(api.seen)
    expect(api.seen[0]!.endedByServer).toBe(false)
    expect(api.seen[0]!.closedByClient).toBe(true)
  })

  it('when a bookmarked watch is presumed dead, the client\'s quiet watches without bookmarks end with it (same path)', async () => {
    api = await fakeApiserver()
    client = new KubeClient({ server: api.url, watchIdleMs: 300 })
    const quiet = client.watch('/api/v1/services', { resourceVersion: '5', timeoutSeconds: 30, bookmarks: false }, onEvent)
    const filtered = client.watch('/apis/coordination.k8s.io/v1/namespaces/m/leases', { resourceVersion: '5', timeoutSeconds: 30, bookmarks: true }, onEvent)
    await Promise.all([quiet, filtered]) // both resolve (a resume), neither rejects
    await settled(api.seen)
    expect(api.seen.map((s) => [s.query.has('allowWatchBookmarks'), s.endedByServer, s.closedByClient])).toEqual([[false, false, true], [true, false, true]])
    expect(events).toEqual([])
  })
})
