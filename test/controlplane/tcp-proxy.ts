// A loopback TCP forwarder between an agent and the apiserver that a test can cut: pause()
// resets every connection and refuses new ones (a network partition the agent notices),
// resume() lets traffic through again. TLS passes through untouched.
import { createConnection, createServer, type Server, type Socket } from 'node:net'

export interface TcpProxy {
  port: number
  /** resets every connection and refuses new ones */
  pause(): void
  /** a silent partition: open connections stop carrying bytes (no RST), new ones hang */
  blackhole(): void
  /** new connections work again (blackholed ones stay dead) */
  resume(): void
  close(): Promise<void>
}

export async function startTcpProxy (target: { host: string, port: number }): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  let paused = false
  let holes = false
  const server: Server = createServer((client) => {
    if (paused) { client.resetAndDestroy(); return }
    sockets.add(client)
    client.on('close', () => { sockets.delete(client) })
    if (holes) { client.pause(); return }
    const upstream = createConnection(target)
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('close', () => { sockets.delete(s) })
      s.on('error', () => { client.destroy(); upstream.destroy() })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  const addr = server.address()
  return {
    port: typeof addr === 'object' && addr !== null ? addr.port : 0,
    pause () {
      paused = true
      for (const s of sockets) s.resetAndDestroy()
    },
    blackhole () {
      holes = true
      for (const s of sockets) { s.unpipe(); s.pause() }
    },
    resume () { paused = false; holes = false },
    async close () {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
}
