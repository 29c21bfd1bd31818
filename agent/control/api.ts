// The agent's local control API (HTTP over a unix socket, like tailscaled's LocalAPI): what
// `edgemesh status` and `edgemesh ping` talk to. Diagnostic routes exist only when enabled.
import type { Server } from 'node:http'
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { startHttp, type Route } from '../../shared/http.ts'
import type { Logger } from '../../shared/logging.ts'
import type { Metrics } from '../../shared/metrics.ts'
import type { Tunnel } from '../tunnel/tunnel.ts'
import type { Catalog } from '../catalog/catalog.ts'
import { catalogSummary } from '../catalog/summary.ts'
import { discardTransfer, firstByte, MAX_TRANSFER_BYTES, transfer } from '../tunnel/diagnostics.ts'
import { MAX_PING_COUNT } from '../tunnel/ping-outcome.ts'
import { statusName } from '../proxy/wire.ts'
import { multiaddr } from '@multiformats/multiaddr'

function badParameter (message: string): Error { return Object.assign(new Error(message), { status: 400 }) }

function required (url: URL, name: string): string {
  const v = url.searchParams.get(name)
  if (v == null || v === '') throw badParameter(`missing query parameter "${name}"`)
  return v
}

/** An integer query parameter within [min, max]. */
function integer (url: URL, name: string, min: number, max: number, fallback?: number): number {
  const raw = url.searchParams.get(name)
  if ((raw == null || raw === '') && fallback != null) return fallback
  const v = Number(required(url, name))
  if (!Number.isSafeInteger(v) || v < min || v > max) throw badParameter(`query parameter "${name}" must be an integer from ${min} to ${max}`)
  return v
}

export async function startControlApi (opts: { socketPath: string, tunnel: Tunnel, catalog?: Catalog, proxy?: { status: () => object }, metrics: Metrics, diagnostics: boolean, log: Logger }): Promise<Server> {
  const { tunnel, metrics, catalog } = opts
  const routes: Record<string, Route> = {
    'GET /healthz': async () => ({ body: { status: 'ok' } }),
    'GET /status': async () => ({ body: tunnel.status() }),
    'GET /metrics': async () => ({ type: metrics.registry.contentType, body: await metrics.registry.metrics() }),
    'GET /proxy': async () => {
      if (opts.proxy == null) return { status: 404, body: { error: 'the service proxy is not enabled on this agent' } }
      return { body: opts.proxy.status() }
    },
    'GET /catalog': async (_req, url) => {
      if (catalog == null) return { status: 404, body: { error: 'no catalog: this agent runs without kubernetes (static peers file)' } }
      return { body: catalogSummary(catalog, url.searchParams.get('full') === '1') }
    },
    // newline-delimited JSON: one line per published snapshot with its changes (tests, benchmarks, debugging)
    'GET /catalog/events': async () => {
      if (catalog == null) return { status: 404, body: { error: 'no catalog' } }
      return {
        stream: (res) => {
          res.writeHead(200, { 'content-type': 'application/x-ndjson' })
          res.write(JSON.stringify({ version: catalog.snapshot().version, source: catalog.snapshot().source, at: Date.now(), changes: [] }) + '\n')
          const off = catalog.subscribe((snap, changes) => { res.write(JSON.stringify({ version: snap.version, source: snap.source, at: Date.now(), changes }) + '\n') })
          res.on('close', off)
        }
      }
    },
    'POST /ping': async (_req, url) => {
      const count = integer(url, 'count', 1, MAX_PING_COUNT, 3)
      return { body: await tunnel.ping(required(url, 'node'), { count, signal: AbortSignal.timeout(20_000) }) }
    }
  }
  if (opts.diagnostics) {
    routes['POST /diag/transfer'] = async (_req, url) => {
      const node = required(url, 'node')
      const direction = required(url, 'direction')
      if (direction !== 'send' && direction !== 'receive' && direction !== 'discard') throw badParameter('query parameter "direction" must be send, receive or discard')
      const bytes = integer(url, 'bytes', 1, MAX_TRANSFER_BYTES)
      const via = url.searchParams.get('via') ?? undefined
      if (via != null) {
        try { multiaddr(via) } catch { throw badParameter('query parameter "via" must be a multiaddr such as /ip4/203.0.113.5/tcp/4004') }
      }
      const { conn, path, remote } = await tunnel.connectionVia(node, via)
      try {
        const result = direction === 'discard' ? await discardTransfer(conn, path, bytes) : await transfer(conn, path, direction, bytes)
        return { body: { node, remote, ...result } }
      } finally {
        // a connection dialed to an explicit address is a one-off: it must not become the
        // path later streams take
        if (via != null) await conn.close().catch(() => {})
      }
    }
    // asks `node` to connect to any address, as a peer could: the serving agent must refuse
    // anything its catalog does not place on that node (the mesh is not an open proxy)
    routes['POST /diag/proxy-request'] = async (_req, url) => {
      const { openProxyStream, ProxyRefusedError } = await import('../proxy/listener.ts')
      const node = required(url, 'node')
      const protocol = (url.searchParams.get('protocol') ?? 'TCP').toUpperCase()
      if (protocol !== 'TCP' && protocol !== 'UDP') throw Object.assign(new Error('protocol must be TCP or UDP'), { status: 400 })
      try {
        const { stream } = await openProxyStream(tunnel, node, { protocol, ip: required(url, 'ip'), port: Number(required(url, 'port')) }, 5_000)
        await stream.close().catch(() => {})
        return { body: { status: 'ok' } }
      } catch (err) {
        if (err instanceof ProxyRefusedError) return { body: { status: statusName(err.status) } }
        throw err
      }
    }
    routes['POST /diag/first-byte'] = async (_req, url) => {
      const node = required(url, 'node')
      const via = url.searchParams.get('via') ?? undefined
      try {
        return { body: await firstByte(tunnel, node, via) }
      } finally {
        if (via != null) await tunnel.disconnect(node)
      }
    }
    routes['POST /diag/disconnect'] = async (_req, url) => { await tunnel.disconnect(required(url, 'node')); return { body: { ok: true } } }
  }
  await mkdir(dirname(opts.socketPath), { recursive: true })
  return await startHttp({ socketPath: opts.socketPath }, routes, (err) => { opts.log.warn({ err: (err as Error)?.message ?? String(err) }, 'control request failed') }, { metrics })
}
