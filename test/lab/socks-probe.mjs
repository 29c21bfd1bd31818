// A raw SOCKS5 client (and a byte sink) for the lab: sends exactly what it is told, so tests can
// ask for what real clients never would (IP targets, BIND, UDP ASSOCIATE, bad credentials) and
// read the exact reply code; also the load and timing runs of the e2e test and bench:socks.
//   request <proxy host:port> <connect|bind|udp> <domain|ipv4> <host> <port> [user pass]
//        prints {"method":m,"auth":status?,"reply":code?,"closed":bool}
//   concurrent <proxy> <host> <port> <n> <bytes>
//        n SOCKS connections at once, each sends <bytes> random bytes and half-closes, and expects
//        them echoed back intact then FIN (target: tcp-echo); prints {"ok","failed","errors","allMs"}
//   connect-time <proxy> <host> <port> <n>
//        n sequential connections: connect -> handshake -> reply -> 1 byte echoed (target: tcp-echo);
//        prints {"samples":[ms to the echoed byte...],"replies":[ms to the SOCKS reply...]}
//   bulk <proxy> <host> <port> <bytes>
//        sends <bytes> then FIN to a sink, which answers with the count; prints {"bytes","ms","mbps"}
//   sink <port>
//        counts every connection's bytes until FIN, answers "<count>\n" and closes
import net from 'node:net'
import { randomBytes } from 'node:crypto'

const [mode, ...args] = process.argv.slice(2)
const hostPort = (s) => { const i = s.lastIndexOf(':'); return { host: s.slice(0, i), port: Number(s.slice(i + 1)) } }

/** Reads exactly n bytes (resolves null if the socket ends first). */
function reader (sock) {
  let buf = Buffer.alloc(0)
  let want = null
  let ended = false
  const check = () => {
    if (want == null) return
    if (buf.length >= want.n) { const w = want; want = null; const out = buf.subarray(0, w.n); buf = buf.subarray(w.n); w.resolve(out) } else if (ended) { const w = want; want = null; w.resolve(null) }
  }
  const onData = (c) => { buf = Buffer.concat([buf, c]); check() }
  sock.on('data', onData)
  sock.on('end', () => { ended = true; check() })
  sock.on('close', () => { ended = true; check() })
  const read = (n) => new Promise((resolve) => { want = { n, resolve }; check() })
  read.detach = () => { sock.off('data', onData); const rest = buf; buf = Buffer.alloc(0); return rest }
  return read
}

function request (command, atyp, host, port) {
  const cmd = { connect: 1, bind: 2, udp: 3 }[command]
  let addr
  if (atyp === 'ipv4') addr = Buffer.from([1, ...host.split('.').map(Number)])
  else { const h = Buffer.from(host); addr = Buffer.concat([Buffer.from([3, h.length]), h]) }
  const p = Buffer.alloc(2); p.writeUInt16BE(port)
  return Buffer.concat([Buffer.from([5, cmd, 0]), addr, p])
}

/** One handshake; resolves { sock, read, method, auth, reply, closed, ms } */
async function handshake (proxy, command, atyp, host, port, creds) {
  const t0 = performance.now()
  const sock = net.connect({ host: proxy.host, port: proxy.port, allowHalfOpen: true, noDelay: true })
  sock.on('error', () => {})
  const read = reader(sock)
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject) })
  sock.write(Buffer.from(creds != null ? [5, 1, 2] : [5, 1, 0]))
  const out = { sock, read, closed: false }
  const m = await read(2)
  if (m == null) return { ...out, closed: true }
  out.method = m[1]
  if (m[1] === 0xff) { out.closed = (await read(1)) == null; return out }
  if (m[1] === 2) {
    const u = Buffer.from(creds[0]); const pw = Buffer.from(creds[1])
    sock.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([pw.length]), pw]))
    const a = await read(2)
    if (a == null) return { ...out, closed: true }
    out.auth = a[1]
    if (a[1] !== 0) { out.closed = (await read(1)) == null; return out }
  }
  sock.write(request(command, atyp, host, port))
  const r = await read(4)
  if (r == null) return { ...out, closed: true }
  out.reply = r[1]
  const len = r[3] === 1 ? 4 : r[3] === 4 ? 16 : (await read(1))[0]
  await read(len + 2)
  out.ms = performance.now() - t0
  return out
}

async function echoOne (proxy, host, port, payload) {
  const h = await handshake(proxy, 'connect', 'domain', host, port)
  if (h.reply !== 0) { h.sock.destroy(); throw new Error(`reply ${h.reply ?? (h.closed ? 'closed' : '?')}`) }
  h.sock.end(payload)
  const back = await h.read(payload.length)
  const more = await h.read(1) // FIN after the echo
  h.sock.destroy()
  if (back == null) throw new Error('short echo')
  if (!back.equals(payload)) throw new Error('corrupted echo')
  if (more != null) throw new Error('extra bytes')
}

if (mode === 'request') {
  const [proxy, command, atyp, host, port, user, pass] = args
  const h = await handshake(hostPort(proxy), command, atyp, host, Number(port), user != null ? [user, pass] : undefined)
  if (h.reply != null && h.reply !== 0) h.closed = (await h.read(1)) == null
  h.sock.destroy()
  console.log(JSON.stringify({ method: h.method, auth: h.auth, reply: h.reply, closed: h.closed }))
} else if (mode === 'concurrent') {
  const [proxy, host, port, n, bytes] = args
  const t0 = performance.now()
  const errors = {}
  let ok = 0
  await Promise.all(Array.from({ length: Number(n) }, async () => {
    try {
      await echoOne(hostPort(proxy), host, Number(port), randomBytes(Number(bytes)))
      ok++
    } catch (err) { errors[err.message] = (errors[err.message] ?? 0) + 1 }
  }))
  console.log(JSON.stringify({ ok, failed: Number(n) - ok, errors, allMs: Math.round(performance.now() - t0) }))
} else if (mode === 'connect-time') {
  const [proxy, host, port, n] = args
  const samples = []
  const replies = []
  for (let i = 0; i < Number(n); i++) {
    const t0 = performance.now()
    const h = await handshake(hostPort(proxy), 'connect', 'domain', host, Number(port))
    if (h.reply !== 0) throw new Error(`reply ${h.reply}`)
    replies.push(+(performance.now() - t0).toFixed(2))
    h.sock.write(Buffer.from([42]))
    const b = await h.read(1)
    if (b == null || b[0] !== 42) throw new Error('no echo')
    samples.push(+(performance.now() - t0).toFixed(2))
    h.sock.destroy()
  }
  console.log(JSON.stringify({ samples, replies }))
} else if (mode === 'bulk') {
  const [proxy, host, port, bytes] = args
  const total = Number(bytes)
  const h = await handshake(hostPort(proxy), 'connect', 'domain', host, Number(port))
  if (h.reply !== 0) throw new Error(`reply ${h.reply}`)
  const chunk = randomBytes(1 << 16)
  const t0 = performance.now()
  let sent = 0
  const answer = new Promise((resolve) => { let s = ''; h.read.detach(); h.sock.on('data', (c) => { s += c }); h.sock.on('end', () => resolve(s.trim())) })
  while (sent < total) {
    const piece = total - sent >= chunk.length ? chunk : chunk.subarray(0, total - sent)
    sent += piece.length
    if (!h.sock.write(piece)) await new Promise((resolve) => h.sock.once('drain', resolve))
  }
  h.sock.end()
  const got = Number(await answer)
  const ms = performance.now() - t0
  h.sock.destroy()
  if (got !== total) throw new Error(`sink counted ${got} of ${total}`)
  console.log(JSON.stringify({ bytes: total, ms: +ms.toFixed(1), mbps: +(total * 8 / ms / 1000).toFixed(1) }))
} else if (mode === 'sink') {
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    let n = 0
    sock.on('data', (c) => { n += c.length })
    sock.on('end', () => { sock.end(`${n}\n`) })
    sock.on('error', () => {})
  })
  server.listen(Number(args[0]), '0.0.0.0', () => { console.log(`sink listening on ${args[0]}`) })
} else {
  console.error(`unknown mode ${mode}`)
  process.exit(2)
}
