// Raw udx-native throughput with no crypto and no multiplexing: the ceiling of the UDP
// transport itself, for comparison in bench:tunnel.
//   node test/bench/udx-raw.ts recv <port> <peerPort> <peerHost> <bytes>
//   node test/bench/udx-raw.ts send <port> <peerPort> <peerHost> <bytes>
import { createUdx } from '../../shared/udx.ts'

const [role, port, peerPort, peerHost, bytesArg] = process.argv.slice(2)
const bytes = Number(bytesArg)
const udx = createUdx()
const socket = udx.createSocket()
socket.bind(Number(port), '0.0.0.0')
const stream = udx.createStream(role === 'recv' ? 2 : 1)
stream.connect(socket, role === 'recv' ? 1 : 2, Number(peerPort), peerHost!)
stream.on('error', () => {})
if (role === 'recv') {
  let n = 0
  let t0 = 0
  stream.on('data', (b: Buffer) => {
    if (t0 === 0) t0 = performance.now()
    n += b.byteLength
    if (n >= bytes) {
      const ms = performance.now() - t0
      process.stdout.write(`${JSON.stringify({ mbps: +((n * 8) / (ms / 1000) / 1e6).toFixed(1) })}\n`)
      process.exit(0)
    }
  })
} else {
  const chunk = Buffer.alloc(64 * 1024, 7)
  let sent = 0
  const pump = (): void => {
    while (sent < bytes) {
      sent += chunk.byteLength
      if (!stream.write(chunk)) { stream.once('drain', pump); return }
    }
  }
  setTimeout(pump, 100)
}
