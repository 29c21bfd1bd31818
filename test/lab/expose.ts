// Makes a service on this host's loopback reachable inside the lab at ip:port of a lab host,
// without giving the lab a route to the host: a listener in the lab namespace and one on the
// host meet through a unix socket (unix sockets are files, not bound to a network namespace).
import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { createConnection, createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Lab } from './lab.ts'

const BRIDGE = fileURLToPath(new URL('./unix-bridge.ts', import.meta.url))

function splice (a: Socket, b: Socket): void {
  a.pipe(b)
  b.pipe(a)
  a.on('error', () => { b.destroy() })
  b.on('error', () => { a.destroy() })
  a.on('close', () => { b.destroy() })
  b.on('close', () => { a.destroy() })
}

export async function exposeToLab (lab: Lab, labHost: string, listen: { ip: string, port: number }, target: { host: string, port: number }): Promise<{ close: () => Promise<void> }> {
  const sock = join(tmpdir(), `edgemesh-expose-${lab.prefix}-${randomBytes(4).toString('hex')}.sock`)
  const sockets = new Set<Socket>()
  const server = createServer((conn) => {
    sockets.add(conn)
    conn.on('close', () => sockets.delete(conn))
    splice(conn, createConnection(target))
  })
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(sock, resolve) })
  const proc = lab.spawn(labHost, [process.execPath, BRIDGE, listen.ip, String(listen.port), sock])
  await proc.waitForLine(/bridge listening/, 10_000)
  return {
    close: async () => {
      await proc.kill('SIGTERM')
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
      await rm(sock, { force: true })
    }
  }
}
