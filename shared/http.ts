// Minimal HTTP endpoint for health, metrics and the agent's local control API.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { rm } from 'node:fs/promises'

export type RouteResult = { status?: number, type?: string, body: string | object } | { stream: (res: ServerResponse) => void }
export type Route = (req: IncomingMessage, url: URL) => Promise<RouteResult>

export interface HttpListen { host?: string, port?: number, socketPath?: string }

export function parseHostPort (s: string): { host: string, port: number } {
  const i = s.lastIndexOf(':')
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) }
}

export async function startHttp (listen: HttpListen, routes: Record<string, Route>, onError: (err: unknown) => void): Promise<Server> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    const route = routes[`${req.method ?? 'GET'} ${url.pathname}`]
    if (route == null) { res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n'); return }
    route(req, url).then((result) => {
      if ('stream' in result) { result.stream(res); return }
      const { status = 200, type, body } = result
      const text = typeof body === 'string' ? body : JSON.stringify(body, null, 2) + '\n'
      res.writeHead(status, { 'content-type': type ?? (typeof body === 'string' ? 'text/plain' : 'application/json') }).end(text)
    }, (err: any) => {
      onError(err)
      res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(err?.message ?? err) }) + '\n')
    })
  })
  if (listen.socketPath != null) await rm(listen.socketPath, { force: true })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    if (listen.socketPath != null) server.listen(listen.socketPath, resolve)
    else server.listen(listen.port ?? 0, listen.host ?? '127.0.0.1', resolve)
  })
  return server
}

export async function stopHttp (server: Server): Promise<void> {
  server.closeAllConnections()
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
}
