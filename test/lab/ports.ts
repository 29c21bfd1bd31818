// A port the kernel found free on loopback a moment ago, for programs that must be told a port
// number up front (etcd, kube-apiserver, dnsmasq). Another process can take it before the program
// binds it: where a program can bind port 0 and report the port it got (edgemesh-server and
// edgemesh-agent log their bound addresses in their ready lines), let it do that instead.
import { createSocket } from 'node:dgram'
import { createServer } from 'node:net'

export async function freePort (kind: 'tcp' | 'udp' = 'tcp', host = '127.0.0.1'): Promise<number> {
  if (kind === 'udp') {
    const s = createSocket('udp4')
    await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(0, host, resolve) })
    const { port } = s.address()
    await new Promise<void>((resolve) => { s.close(() => { resolve() }) })
    return port
  }
  const server = createServer()
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(0, host, resolve) })
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  return port
}
