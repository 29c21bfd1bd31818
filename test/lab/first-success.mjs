// Polls a Service by name from a lab pod, as a client that retries quickly would: resolves
// <name> (A) at <dns>:53 until it answers (NXDOMAIN: again after <pollMs>), then GETs
// http://<address>:<port>/ (at most 1 s per attempt) until the body is <expect>. Prints
// "polling" once it runs (its DNS and HTTP code already warmed up on loopback), then one JSON line with epoch-ms times (comparable with other processes'
// performance.timeOrigin + performance.now()) and what each failed attempt got:
//   {"resolvedAt":..,"okAt":..,"ip":"10.96.0.12","queries":31,"attempts":2,"outcomes":{"ECONNREFUSED":1}}
// Exit 1 when nothing answered within <limitMs> (okAt null).
//   node test/lab/first-success.mjs <dns> <name> <port> <expect> <limitMs> [pollMs]
import { Resolver } from 'node:dns/promises'
import http from 'node:http'

const [dns, name, portText, expect, limitText, pollText] = process.argv.slice(2)
const port = Number(portText)
const limitMs = Number(limitText)
const pollMs = Number(pollText ?? 5)
if (dns == null || name == null || !(port > 0) || expect == null || !(limitMs > 0)) {
  process.stderr.write('usage: first-success.mjs <dns> <name> <port> <expect> <limitMs> [pollMs]\n')
  process.exit(2)
}
const now = () => performance.timeOrigin + performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const resolver = new Resolver({ timeout: 250, tries: 1 })
resolver.setServers([dns])
const outcomes = {}
const count = (k) => { outcomes[k] = (outcomes[k] ?? 0) + 1 }
const deadline = now() + limitMs
let queries = 0
let attempts = 0
let ip
let resolvedAt = null
let okAt = null

function get (address, toPort = port) {
  return new Promise((resolve) => {
    const req = http.get({ host: address, port: toPort, path: '/', agent: false, timeout: 1000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => { body += c })
      res.on('end', () => resolve(body.trim() === expect ? 'ok' : `body:${body.trim().slice(0, 40)}`))
      res.on('error', (e) => resolve(e.code ?? e.message))
    })
    req.on('timeout', () => { req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })) })
    req.on('error', (e) => resolve(e.code ?? e.message))
  })
}

// the first use of each code path costs a cold process tens of ms: not the Service's time
await get('127.0.0.1', 9)
await resolver.resolve4(name.slice(name.indexOf('.') + 1)).catch(() => {}) // the Service's parent: answered by the node-local DNS
console.log('polling')
while (now() < deadline && okAt == null) {
  if (ip == null) {
    queries++
    try {
      const answers = await resolver.resolve4(name)
      if (answers.length > 0) { ip = answers[0]; resolvedAt = now() }
    } catch (e) {
      if (e.code !== 'ENOTFOUND' && e.code !== 'ENODATA') count(`dns:${e.code}`)
    }
    if (ip == null) { await sleep(pollMs); continue }
  }
  attempts++
  const r = await get(ip)
  if (r === 'ok') { okAt = now(); break }
  count(r)
  await sleep(pollMs)
}
console.log(JSON.stringify({ resolvedAt, okAt, ip: ip ?? null, queries, attempts, outcomes }))
process.exit(okAt == null ? 1 : 0)
