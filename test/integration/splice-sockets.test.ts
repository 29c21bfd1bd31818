// spliceSockets (agent/proxy/pipe.ts), used by the proxy and SOCKS5 for endpoints the agent dials
// itself: a half-close carried both ways, and a side its owner destroys takes the other with it.
import { createHash, randomBytes } from 'node:crypto'
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { spliceSockets } from '../../agent/proxy/pipe.ts'

const servers: Server[] = []
afterEach(() => { for (const s of servers.splice(0)) s.close() })

/** A connected pair: the client end and the server end of one loopback TCP connection. */
async function pair (): Promise<{ client: Socket, server: Socket }> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true })
  servers.push(server)
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  const accepted = new Promise<Socket>((resolve) => { server.once('connection', resolve) })
  const client = createConnection({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true })
  client.on('error', () => {})
  const s = await accepted
  s.on('error', () => {})
  return { client, server: s }
}
/** The peer saw the connection go: its FIN (a half-open socket stays open after it) or its close. */
const gone = async (s: Socket): Promise<void> => {
  if (s.readableEnded || s.closed) return
  await new Promise<void>((resolve) => { s.once('end', () => { resolve() }); s.once('close', () => { resolve() }); s.resume() })
}
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

describe('spliceSockets', () => {
  it('carries bytes and each FIN both ways, then resolves with the counts', async () => {
    const left = await pair() // left.client = the user, left.server = the agent's accepted socket
    const right = await pair() // right.client = the agent's dialled socket, right.server = the endpoint
    const spliced = spliceSockets(left.server, right.client)
    const data = randomBytes(1 << 20)
    const atEndpoint: Buffer[] = []
    right.server.on('data', (c: Buffer) => atEndpoint.push(c))
    right.server.once('end', () => { right.server.end('bye') }) // answers after the user's FIN
    right.server.resume()
    const atUser: Buffer[] = []
    const userEnded = new Promise<void>((resolve) => { left.client.on('data', (c: Buffer) => atUser.push(c)); left.client.once('end', resolve) })
    left.client.end(data)
    await userEnded
    expect(sha(Buffer.concat(atEndpoint))).toBe(sha(data))
    expect(Buffer.concat(atUser).toString()).toBe('bye')
    left.client.end()
    expect(await spliced).toEqual({ up: data.length, down: 3 })
  })

  it('a side destroyed by its owner (stop()) closes the other side too and the splice ends', async () => {
    for (const which of ['accepted', 'dialled'] as const) {
      const left = await pair()
      const right = await pair()
      const spliced = spliceSockets(left.server, right.client)
      left.client.write('x')
      await new Promise<void>((resolve) => { right.server.once('data', () => { resolve() }); right.server.resume() })
      if (which === 'accepted') left.server.destroy(); else right.client.destroy()
      await spliced
      expect({ which, accepted: left.server.destroyed, dialled: right.client.destroyed }).toEqual({ which, accepted: true, dialled: true })
      await Promise.all([gone(left.client), gone(right.server)]) // both peers see the connection go
      left.client.destroy(); right.server.destroy()
    }
  }, 20_000)
})
