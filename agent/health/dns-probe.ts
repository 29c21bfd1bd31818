// One DNS query over UDP to the agent's own listener, for /readyz: the answer's rcode and answer
// count, or why there was none (timeout, refused, malformed). A fresh socket per query: a probe
// comes every few seconds, and a connected socket only hears the address it asked.
import { createSocket } from 'node:dgram'
import { randomInt } from 'node:crypto'
import { encodeQuery, parseResponseMeta, TYPE } from '../dns/wire.ts'
import type { DnsProbeResult } from './readiness.ts'

export async function probeDns (server: { host: string, port: number }, name: string, timeoutMs: number): Promise<DnsProbeResult> {
  const id = randomInt(0, 0x10000)
  const query = encodeQuery({ id, name, type: TYPE.A, rd: true })
  const socket = createSocket(server.host.includes(':') ? 'udp6' : 'udp4')
  try {
    return await new Promise<DnsProbeResult>((resolve) => {
      const timer = setTimeout(() => { resolve({ error: `no answer within ${timeoutMs} ms` }) }, timeoutMs)
      const done = (r: DnsProbeResult): void => { clearTimeout(timer); resolve(r) }
      socket.on('error', (err: NodeJS.ErrnoException) => { done({ error: err.code ?? err.message }) })
      socket.on('message', (msg) => {
        const meta = parseResponseMeta(msg)
        if ('error' in meta) { done({ error: 'malformed answer' }); return }
        if (meta.id !== id) return // not ours (cannot happen on a connected socket; cheap to check)
        done({ rcode: meta.rcode, answers: meta.ancount })
      })
      socket.connect(server.port, server.host, () => { socket.send(query) })
    })
  } finally {
    socket.close()
  }
}
