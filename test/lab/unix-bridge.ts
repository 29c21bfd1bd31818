// Runs inside a lab namespace: accepts TCP on ip:port and forwards each connection to a unix
// socket served from the host (see expose.ts). Usage: unix-bridge.ts IP PORT SOCKET
import { createConnection, createServer } from 'node:net'

const [ip, port, sock] = process.argv.slice(2)
if (ip == null || port == null || sock == null) { console.error('usage: unix-bridge.ts IP PORT SOCKET'); process.exit(2) }
const server = createServer((conn) => {
  const up = createConnection(sock)
  conn.pipe(up)
  up.pipe(conn)
  for (const [a, b] of [[conn, up], [up, conn]] as const) {
    a.on('error', () => { b.destroy() })
    a.on('close', () => { b.destroy() })
  }
})
server.listen(Number(port), ip, () => { console.log(`bridge listening on ${ip}:${port} -> ${sock}`) })
process.on('SIGTERM', () => { process.exit(0) })
