// Workloads for the lab's pod namespaces: what a Service's endpoints and clients do.
//   http <name> <port>                      HTTP server answering its name (no keep-alive)
//   udp-echo <port>                         echoes every datagram back
//   load <url> <n> <concurrency> [hdr]      n GETs, each on a new connection; prints {"counts":{name:n},"errors":e}
//                                           hdr: 'user' sends x-user: u<i%50>, and the counts are per user too
//   trace <url> <ms>                        GETs back to back for <ms>; prints one line per response: "<t_ms> <name>"
//   udp-blast <ip> <port> <n> <window>      n datagrams of 1..1200 bytes (sequence + pattern), at most <window>
//                                           unanswered; checks every echo byte for byte; prints JSON totals
//   tcp-echo <port>                         TCP server echoing every byte back
//   conns <ip> <port> <n>                   n TCP connections opened at once; each writes a line and waits for its
//                                           echo; all held open until every one finished (echoed, failed or 30 s);
//                                           prints {"ok":..,"failed":..,"errors":{..},"connectP50Ms":..,"allMs":..}
//   latency <url> <n>                       n sequential GETs, each on a new connection; prints
//                                           {"n":..,"errors":..,"p50":..,"p90":..,"p99":..} (ms, request start -> response end)
//   ticker <url> <intervalMs>               starts a GET every <intervalMs> (not waiting for the last one; 5 s timeout
//                                           each) until killed; prints one JSON line per request when it ends:
//                                           {"s":<start epoch ms>,"e":<end epoch ms>,"ok":true|false,"r":"<body or error>"}
//   file <port> <path>                      HTTP: GET streams the file; PUT /?rate=<bytes/s> is read like a slow
//                                           client (nothing for 1 s, then at most <rate>) and answered "<sha256> <bytes>"
import http from 'node:http'
import dgram from 'node:dgram'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { createReadStream, statSync } from 'node:fs'

const [mode, ...args] = process.argv.slice(2)

function get (url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers, timeout: 5000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => { body += c })
      res.on('end', () => resolve(body.trim()))
    })
    // a timeout names the connection's local port and what it got, so a test can look it up in conntrack
    req.on('timeout', () => req.destroy(new Error(`timeout(port=${req.socket?.localPort},connected=${req.socket?.readyState},response=${req.res != null})`)))
    req.on('error', reject)
  })
}

if (mode === 'http') {
  const [name, port] = args
  http.createServer((req, res) => { res.setHeader('connection', 'close'); res.end(`${name}\n`) }).listen(Number(port), '0.0.0.0', () => console.log('listening'))
} else if (mode === 'udp-echo') {
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
  s.on('message', (m, r) => s.send(m, r.port, r.address))
  s.bind(Number(args[0]), '0.0.0.0', () => console.log('listening'))
} else if (mode === 'load') {
  const [url, n, conc, hdr] = args
  const total = Number(n)
  const counts = {}
  const perUser = {}
  let errors = 0
  let next = 0
  async function worker () {
    while (next < total) {
      const i = next++
      const user = `u${i % 50}`
      try {
        const name = await get(url, hdr === 'user' ? { 'x-user': user } : {})
        counts[name] = (counts[name] ?? 0) + 1
        if (hdr === 'user') { perUser[user] ??= {}; perUser[user][name] = (perUser[user][name] ?? 0) + 1 }
      } catch { errors++ }
    }
  }
  await Promise.all(Array.from({ length: Number(conc) }, worker))
  console.log(JSON.stringify({ counts, errors, ...(hdr === 'user' ? { perUser } : {}) }))
} else if (mode === 'trace') {
  const [url, ms] = args
  const t0 = Date.now()
  while (Date.now() - t0 < Number(ms)) {
    try { console.log(`${Date.now() - t0} ${await get(url)}`) } catch (e) { console.log(`${Date.now() - t0} error:${e.message}`) }
  }
} else if (mode === 'udp-blast') {
  const [ip, port, n, window] = args.map((a, i) => i === 0 ? a : Number(a))
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 })
  const payload = (seq) => {
    const len = 1 + ((seq * 7919) % 1200)
    const b = Buffer.alloc(Math.max(len, 8))
    b.writeUInt32BE(seq, 0)
    for (let i = 4; i < b.length; i++) b[i] = (seq * 31 + i) & 0xff
    return b
  }
  const seen = new Set()
  let intact = 0; let corrupted = 0; let sent = 0
  // a window of unanswered datagrams; one unanswered for a second counts as lost and frees its slot
  const inFlight = new Map()
  await new Promise((resolve) => {
    const finish = () => { clearInterval(expire); resolve() }
    const pump = () => {
      while (sent < n && inFlight.size < window) { inFlight.set(sent, Date.now()); s.send(payload(sent), port, ip); sent++ }
      if (sent >= n && inFlight.size === 0) finish() // every datagram answered or given up on
    }
    s.on('message', (m) => {
      const seq = m.length >= 4 ? m.readUInt32BE(0) : -1
      inFlight.delete(seq)
      if (seq >= 0 && seq < n && !seen.has(seq) && m.equals(payload(seq))) { seen.add(seq); intact++ } else corrupted++
      if (intact === n) { finish(); return }
      pump()
    })
    const expire = setInterval(() => {
      const old = Date.now() - 1000
      for (const [seq, t] of inFlight) if (t < old) inFlight.delete(seq)
      pump()
    }, 100)
    s.bind(0, () => { pump() })
    setTimeout(finish, 60_000).unref() // an upper bound: whatever is missing by then is lost
  })
  console.log(JSON.stringify({ sent, intact, corrupted, lost: n - intact }))
  s.close()
  process.exit(0)
} else if (mode === 'tcp-echo') {
  const server = net.createServer((c) => { c.on('error', () => {}); c.pipe(c) })
  server.maxConnections = 100_000
  server.listen({ port: Number(args[0]), host: '0.0.0.0', backlog: 4096 }, () => console.log('listening'))
} else if (mode === 'conns') {
  const [ip, port, n] = [args[0], Number(args[1]), Number(args[2])]
  const t0 = performance.now()
  const errors = {}
  const sockets = []
  const connectMs = []
  const one = (i) => new Promise((resolve) => {
    const line = `conn ${i} ${'x'.repeat(32)}\n`
    const started = performance.now()
    const s = net.connect({ host: ip, port, noDelay: true })
    sockets.push(s)
    let got = ''
    let settled = false
    const done = (err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err != null) errors[err] = (errors[err] ?? 0) + 1
      resolve(err == null)
    }
    const timer = setTimeout(() => done('timeout'), 30_000)
    s.setEncoding('utf8')
    s.on('connect', () => { connectMs.push(performance.now() - started); s.write(line) })
    s.on('data', (d) => { got += d; if (got.length >= line.length) done(got === line ? undefined : 'mismatch') })
    s.on('error', (e) => done(e.code ?? e.message))
    s.on('close', () => done('closed'))
  })
  const results = await Promise.all(Array.from({ length: n }, (_, i) => one(i)))
  const allMs = performance.now() - t0
  const ok = results.filter(Boolean).length
  for (const s of sockets) s.destroy()
  connectMs.sort((a, b) => a - b)
  const at = (p) => connectMs.length === 0 ? null : +connectMs[Math.min(connectMs.length - 1, Math.floor(connectMs.length * p / 100))].toFixed(2)
  console.log(JSON.stringify({ ok, failed: n - ok, errors, connectP50Ms: at(50), connectP99Ms: at(99), allMs: +allMs.toFixed(1) }))
  process.exit(0)
} else if (mode === 'latency') {
  const [url, n] = [args[0], Number(args[1])]
  const lat = []
  let errors = 0
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    try { await get(url); lat.push(performance.now() - t) } catch { errors++ }
  }
  lat.sort((a, b) => a - b)
  const at = (p) => lat.length === 0 ? null : +lat[Math.min(lat.length - 1, Math.floor(lat.length * p / 100))].toFixed(3)
  console.log(JSON.stringify({ n: lat.length, errors, p50: at(50), p90: at(90), p99: at(99) }))
} else if (mode === 'ticker') {
  const [url, intervalMs] = [args[0], Number(args[1])]
  const one = async () => {
    const s = Date.now()
    let line
    try { line = { s, e: 0, ok: true, r: await get(url) } } catch (e) { line = { s, e: 0, ok: false, r: e.message } }
    line.e = Date.now()
    process.stdout.write(JSON.stringify(line) + '\n')
  }
  setInterval(() => { void one() }, intervalMs)
  void one()
} else if (mode === 'file') {
  const [port, path] = [Number(args[0]), args[1]]
  http.createServer((req, res) => {
    res.setHeader('connection', 'close')
    if (req.method === 'PUT') {
      const rate = Number(new URL(req.url, 'http://x').searchParams.get('rate') ?? 5e6)
      const hash = createHash('sha256')
      let n = 0
      req.pause()
      setTimeout(() => req.resume(), 1_000)
      req.on('data', (c) => { hash.update(c); n += c.length; req.pause(); setTimeout(() => req.resume(), c.length / rate * 1000) })
      req.on('end', () => res.end(`${hash.digest('hex')} ${n}\n`))
      return
    }
    res.setHeader('content-length', statSync(path).size)
    if (req.method === 'HEAD') { res.end(); return }
    createReadStream(path).pipe(res)
  }).listen(port, '0.0.0.0', () => console.log('listening'))
} else {
  console.error(`unknown mode ${mode}`)
  process.exit(2)
}
