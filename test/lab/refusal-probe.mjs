// One connection attempt to ip:port, run inside a lab namespace: how it ended and how long it
// took. TCP: 'connected', 'refused' (ECONNREFUSED: a RST, or ICMP port unreachable while in
// SYN_SENT) or 'timeout'. UDP, on a connected socket that sends one datagram: 'answered' (a reply
// came), 'refused' (ICMP port unreachable, reported as ECONNREFUSED) or 'timeout'. Any other error
// is printed by its code. Prints one JSON line: {"result":"refused","ms":1.2}
//   node test/lab/refusal-probe.mjs tcp|udp <ip> <port> <timeoutMs>
import { createSocket } from 'node:dgram'
import { connect } from 'node:net'

const [proto, ip, portText, timeoutText] = process.argv.slice(2)
const port = Number(portText)
const timeoutMs = Number(timeoutText ?? 1000)
if ((proto !== 'tcp' && proto !== 'udp') || ip == null || !(port > 0)) {
  process.stderr.write('usage: refusal-probe.mjs tcp|udp <ip> <port> <timeoutMs>\n')
  process.exit(2)
}
const t0 = performance.now()
const done = (result) => {
  process.stdout.write(`${JSON.stringify({ result, ms: Math.round((performance.now() - t0) * 10) / 10 })}\n`)
  process.exit(0)
}
setTimeout(() => { done('timeout') }, timeoutMs)
const outcome = (err) => err.code === 'ECONNREFUSED' ? 'refused' : String(err.code ?? err.message)
if (proto === 'tcp') {
  const s = connect({ host: ip, port })
  s.on('connect', () => { done('connected') })
  s.on('error', (err) => { done(outcome(err)) })
} else {
  const s = createSocket('udp4')
  s.on('message', () => { done('answered') })
  s.on('error', (err) => { done(outcome(err)) })
  s.connect(port, ip, () => { s.send('probe') })
}
