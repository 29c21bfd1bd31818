// Minimal HTTP endpoint for health, metrics and the agent's local control API. The relay's
// listener faces the internet: nothing a client sends may stop the process, hold a socket
// forever or exhaust file descriptors. Refusals are answered (400, 404, 405, 408, 431) and
// counted in edgemesh_http_rejected_requests_total when a Metrics object is given.
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { rm } from 'node:fs/promises'
import type { Metrics } from './metrics.ts'

export type RouteResult = { status?: number, type?: string, body: string | object } | { stream: (res: ServerResponse) => void }
export type Route = (req: IncomingMessage, url: URL) => Promise<RouteResult>

export interface HttpListen { host?: string, port?: number, socketPath?: string }

export interface HttpLimits {
  /** counts refusals by reason */
  metrics?: Pick<Metrics, 'httpRejected'>
  /** request line + headers, bytes (larger: 431) */
  maxHeaderSize?: number
  /** from a request's first byte to the end of its headers (slowloris), ms */
  headersTimeoutMs?: number
  /** from a request's first byte to the end of its body; an answer may take longer, ms */
  requestTimeoutMs?: number
  /** an idle kept-alive connection is closed after this, ms */
  keepAliveTimeoutMs?: number
  /** a connection with no traffic either way while no route is working for it, ms */
  idleTimeoutMs?: number
  /** how often the headers/request timeouts are checked, ms */
  timeoutCheckIntervalMs?: number
  /** connections beyond this are closed at once */
  maxConnections?: number
  /**
   * connections from one remote address beyond this are closed at once, so one host cannot take
   * every slot (a relay whose /healthz no longer answers its liveness probe gets restarted)
   */
  maxConnectionsPerAddress?: number
}

export const HTTP_DEFAULTS: Required<Omit<HttpLimits, 'metrics'>> = {
  maxHeaderSize: 16 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  timeoutCheckIntervalMs: 1_000,
  maxConnections: 1024,
  maxConnectionsPerAddress: 256
}

export type HttpRejectReason = 'malformed' | 'headers-too-large' | 'timeout' | 'bad-url' | 'missing-host' | 'not-found' | 'method-not-allowed' | 'bad-parameter' | 'handler-error' | 'connection-limit'

/** The address a listening server is bound to (`127.0.0.1:43127`, `[::1]:9090`): the real port when the config said 0. */
export function boundAddress (server: Server): string {
  const a = server.address()
  if (a == null || typeof a === 'string') return String(a)
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`
}

/** The status an error thrown by a route asks for (`status` 400-599), else 500. */
export function errorStatus (err: unknown): number {
  const status = (err as { status?: unknown } | null)?.status
  return typeof status === 'number' && Number.isInteger(status) && status >= 400 && status <= 599 ? status : 500
}

/** The answer to a request the parser refused, by node's error code. */
export function clientErrorStatus (code: string | undefined): { status: number, reason: HttpRejectReason } {
  if (code === 'HPE_HEADER_OVERFLOW') return { status: 431, reason: 'headers-too-large' }
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return { status: 408, reason: 'timeout' }
  return { status: 400, reason: 'malformed' }
}

function rawResponse (status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`
}

export async function startHttp (listen: HttpListen, routes: Record<string, Route>, onError: (err: unknown) => void, limits: HttpLimits = {}): Promise<Server> {
  const opts = { ...HTTP_DEFAULTS, ...limits }
  const refusal = (reason: HttpRejectReason): void => { opts.metrics?.httpRejected.inc({ reason }) }
  const report = (err: unknown): void => { try { onError(err) } catch { /* a logger must not take the listener down */ } }
  const paths = new Set(Object.keys(routes).map((k) => k.slice(k.indexOf(' ') + 1)))
  // the last response started on each socket: a parser error on a request pipelined behind
  // it is answered once that response is complete, never in the middle of it
  const lastResponse = new WeakMap<Duplex, ServerResponse>()
  const refused = new WeakSet<Duplex>()

  const server = createServer({
    maxHeaderSize: opts.maxHeaderSize,
    headersTimeout: opts.headersTimeoutMs,
    requestTimeout: opts.requestTimeoutMs,
    keepAliveTimeout: opts.keepAliveTimeoutMs,
    connectionsCheckingInterval: opts.timeoutCheckIntervalMs,
    // checked below, so the refusal is counted
    requireHostHeader: false
  }, (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket
    lastResponse.set(socket, res)
    // a write to a socket the client already closed must not become an uncaught 'error'
    res.on('error', () => {})
    const answer = (status: number, body: string, type = 'text/plain'): void => {
      if (res.headersSent || res.destroyed) { res.destroy(); return }
      socket.setTimeout(opts.idleTimeoutMs) // a client that does not read the answer is idle
      res.writeHead(status, { 'content-type': type }).end(body)
    }
    try {
      // a request the parser framed (no Host, bad URL) is refused on a connection that stays usable
      if (req.httpVersion === '1.1' && req.headers.host == null) { refusal('missing-host'); answer(400, 'missing Host header\n'); return }
      let url: URL
      try {
        url = new URL(req.url ?? '/', 'http://localhost')
      } catch {
        refusal('bad-url'); answer(400, 'bad request URL\n'); return
      }
      const route = routes[`${req.method ?? 'GET'} ${url.pathname}`]
      if (route == null) {
        if (paths.has(url.pathname)) { refusal('method-not-allowed'); answer(405, 'method not allowed\n'); return }
        refusal('not-found'); answer(404, 'not found\n'); return
      }
      // a route may take long (a ping, a transfer, a stream): the idle timer is for clients
      socket.setTimeout(0)
      const settled = (result: RouteResult): void => {
        if ('stream' in result) { result.stream(res); return }
        const { status = 200, type, body } = result
        const text = typeof body === 'string' ? body : JSON.stringify(body, null, 2) + '\n'
        answer(status, text, type ?? (typeof body === 'string' ? 'text/plain' : 'application/json'))
      }
      const failed = (err: unknown): void => {
        const status = errorStatus(err)
        refusal(status >= 500 ? 'handler-error' : 'bad-parameter')
        if (status >= 500) report(err)
        answer(status, JSON.stringify({ error: String((err as Error | null)?.message ?? err) }) + '\n', 'application/json')
      }
      // Promise.resolve().then: a route that throws synchronously is a rejected promise too
      Promise.resolve().then(async () => await route(req, url)).then(settled).catch(failed).catch(report)
    } catch (err) {
      report(err)
      res.destroy()
    }
  })
  server.timeout = opts.idleTimeoutMs
  server.maxConnections = opts.maxConnections
  server.on('drop', () => { refusal('connection-limit') })
  const perAddress = new Map<string, number>()
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress
    if (address == null) return // a unix socket: local callers only
    const n = perAddress.get(address) ?? 0
    if (n >= opts.maxConnectionsPerAddress) { refusal('connection-limit'); socket.destroy(); return }
    perAddress.set(address, n + 1)
    socket.once('close', () => {
      const left = (perAddress.get(address) ?? 1) - 1
      if (left <= 0) perAddress.delete(address)
      else perAddress.set(address, left)
    })
  })
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE') { socket.destroy(); return }
    // the parser stays failed: more bytes on a refused socket raise this again (discarded)
    if (refused.has(socket)) return
    refused.add(socket)
    const { status, reason } = clientErrorStatus(err.code)
    refusal(reason)
    const refuse = (): void => {
      if (!socket.writable) { socket.destroy(); return }
      socket.end(rawResponse(status))
      // the client may never read the answer: do not keep the socket for it
      setTimeout(() => { socket.destroy() }, 1_000).unref()
    }
    const pending = lastResponse.get(socket)
    if (pending == null || pending.writableFinished) { refuse(); return }
    if (pending.destroyed) { socket.destroy(); return }
    pending.once('finish', refuse)
    pending.once('close', () => { if (!pending.writableFinished) socket.destroy() })
  })

  if (listen.socketPath != null) await rm(listen.socketPath, { force: true })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    if (listen.socketPath != null) server.listen(listen.socketPath, resolve)
    else server.listen(listen.port ?? 0, listen.host ?? '127.0.0.1', resolve)
  })
  // after listening, a server error (EMFILE on accept, ...) is reported, never thrown
  server.on('error', report)
  return server
}

export async function stopHttp (server: Server): Promise<void> {
  server.closeAllConnections()
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
}
