// `helm test` checks, run by the chart's test pods (templates/tests/) with the chart's own image
// as `node -e <this file>`: Node's standard library only. What to check comes from the environment:
//   EDGEMESH_TEST_DNS_SERVER   ip:port of the node-local DNS (agent.dns.listen); names and URL
//                              hosts are resolved there (else with the pod's resolver)
//   EDGEMESH_TEST_NAMES        names that must resolve (A or AAAA), space-separated
//   EDGEMESH_TEST_URLS         http URLs that must answer 200, space-separated
//   EDGEMESH_TEST_AGENT_SOCKET the agent's control socket on this node (hostPath): it must answer
//                              and have reached at least one relay; its peers and paths are listed
//   EDGEMESH_TEST_TIMEOUT_SECONDS  a failing check is retried until then (default 60)
// One line per check, PASS or FAIL with what failed and where to look; exit 1 if any failed.
'use strict'
const dns = require('node:dns')
const http = require('node:http')
const net = require('node:net')

const env = process.env
const words = (s) => (s ?? '').split(/\s+/).filter((w) => w !== '')
const timeoutMs = Number(env.EDGEMESH_TEST_TIMEOUT_SECONDS || 60) * 1000
const dnsServer = env.EDGEMESH_TEST_DNS_SERVER || ''
const node = env.EDGEMESH_TEST_NODE || '(this node)'

const DNS_HINTS = {
  ETIMEOUT: 'no answer: is the agent running on this node, with agent.dns.enabled?',
  ECONNREFUSED: 'nothing listens there: is the agent running on this node, with agent.dns.enabled?',
  ENOTFOUND: 'NXDOMAIN: the agent\'s catalog has no such name (the Service missing, or the catalog not synced: see the agent\'s /readyz)',
  ENODATA: 'the name exists but has no address',
  ESERVFAIL: 'SERVFAIL'
}

function resolver () {
  const r = new dns.promises.Resolver({ timeout: 3000, tries: 1 })
  if (dnsServer !== '') r.setServers([dnsServer])
  return r
}

async function resolveName (name) {
  if (net.isIP(name)) return [name]
  if (dnsServer === '') return (await dns.promises.lookup(name, { all: true })).map((a) => a.address)
  const r = resolver()
  try {
    return await r.resolve4(name)
  } catch (err) {
    if (err.code !== 'ENODATA') throw err
    return await r.resolve6(name)
  }
}

function dnsFailure (name, err) {
  const where = dnsServer !== '' ? `the node-local DNS at ${dnsServer}` : 'the pod\'s resolver'
  return `${name} via ${where}: ${err.code ?? err.message}${DNS_HINTS[err.code] != null ? ` (${DNS_HINTS[err.code]})` : ''}`
}

function get (opts) {
  return new Promise((resolve, reject) => {
    const req = http.get({ ...opts, timeout: 5000, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => { if (body.length < 65536) body += d })
      res.on('end', () => { resolve({ status: res.statusCode, body }) })
    })
    req.on('timeout', () => { req.destroy(Object.assign(new Error('no answer within 5 s'), { code: 'ETIMEDOUT' })) })
    req.on('error', reject)
  })
}

const oneLine = (s) => s.replace(/\s+/g, ' ').trim().slice(0, 300)

const checks = []

for (const name of words(env.EDGEMESH_TEST_NAMES)) {
  checks.push({
    what: `dns ${name}`,
    run: async () => {
      let addrs
      try { addrs = await resolveName(name) } catch (err) { throw new Error(dnsFailure(name, err)) }
      return `${name} -> ${addrs.join(', ')}`
    }
  })
}

for (const raw of words(env.EDGEMESH_TEST_URLS)) {
  checks.push({
    what: `http ${raw}`,
    run: async () => {
      const url = new URL(raw)
      let addrs
      try { addrs = await resolveName(url.hostname) } catch (err) { throw new Error(dnsFailure(url.hostname, err)) }
      const host = addrs[0]
      const port = Number(url.port || 80)
      let res
      try {
        res = await get({ host, port, path: url.pathname + url.search, headers: { host: url.host } })
      } catch (err) {
        throw new Error(`GET ${raw} (${host}:${port}): ${err.code ?? err.message} (the Service's traffic goes through the service proxy on this node: the agent's, with agent.proxy, or kube-proxy)`)
      }
      if (res.status !== 200) throw new Error(`GET ${raw} (${host}:${port}): HTTP ${res.status}: ${oneLine(res.body)}`)
      return `GET ${raw} (${host}:${port}): 200 ${oneLine(res.body)}`
    }
  })
}

if (env.EDGEMESH_TEST_AGENT_SOCKET) {
  const socketPath = env.EDGEMESH_TEST_AGENT_SOCKET
  checks.push({
    what: `agent on ${node}`,
    run: async () => {
      let res
      try { res = await get({ socketPath, path: '/status' }) } catch (err) {
        throw new Error(`the agent's control socket ${socketPath} on ${node}: ${err.code ?? err.message} (is the agent running on this node?)`)
      }
      if (res.status !== 200) throw new Error(`the agent's /status on ${node}: HTTP ${res.status}: ${oneLine(res.body)}`)
      const s = JSON.parse(res.body)
      const relays = (s.relays ?? []).map((r) => `${r.host} udp ${r.udp}${r.rttMs != null ? ` ${Math.round(r.rttMs)} ms` : ''}, circuit ${r.circuit}`)
      if (!(s.relays ?? []).some((r) => r.udp === 'up')) throw new Error(`agent ${s.node} (${s.peerId}) has reached no relay: ${relays.join('; ') || 'none configured'} (check relay.announce and that UDP and TCP reach the relay from this node)`)
      const peers = (s.peers ?? []).map((p) => `${p.node} ${p.path}${p.rttMs != null ? ` ${Math.round(p.rttMs)} ms` : ''}`)
      return `agent ${s.node}: relays [${relays.join('; ')}], peers [${peers.join('; ') || 'none yet'}]`
    }
  })
}

async function main () {
  if (checks.length === 0) { console.log('nothing to check'); return 0 }
  const deadline = Date.now() + timeoutMs
  const results = new Map()
  let pending = checks
  for (;;) {
    const failed = []
    for (const c of pending) {
      try {
        results.set(c, { ok: true, text: await c.run() })
      } catch (err) {
        results.set(c, { ok: false, text: err.message })
        failed.push(c)
      }
    }
    pending = failed
    if (pending.length === 0 || Date.now() >= deadline) break
    await new Promise((resolve) => setTimeout(resolve, 2000))
  }
  let bad = 0
  for (const c of checks) {
    const r = results.get(c)
    if (!r.ok) bad++
    console.log(`${r.ok ? 'PASS' : 'FAIL'} ${c.what}: ${r.text}`)
  }
  console.log(`edgemesh helm test on ${node}: ${checks.length - bad} passed, ${bad} failed`)
  return bad === 0 ? 0 : 1
}

main().then((code) => { process.exitCode = code }, (err) => { console.log(`FAIL ${err.stack ?? err}`); process.exitCode = 1 })
