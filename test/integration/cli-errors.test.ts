// The three binaries (bin/*.js, running dist/: `npx tsc -p tsconfig.build.json`) on bad
// configuration and bad command lines: each problem is one line on stderr naming the field or the
// argument, exit status 2, no stack trace; a failure that is not the config's (a port in use, an
// identity file that cannot be written) is one line too, exit 1. Nothing here gets as far as
// starting a capability that changes the host (the agent cases that do run in
// test/e2e/agent-startup.test.ts, inside a network namespace).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const ROOT = resolve(import.meta.dirname, '../..')
const SERVER_BIN = join(ROOT, 'bin/edgemesh-server.js')
const AGENT_BIN = join(ROOT, 'bin/edgemesh-agent.js')
const CLI_BIN = join(ROOT, 'bin/edgemesh.js')
const PEER = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
const KEY = 'ab'.repeat(32)
const PSK_FORMAT = '("/key/swarm/psk/1.0.0/", "/base16/", 64 hex digits, one per line)'

interface Run { code: number | null, stdout: string, stderr: string }

async function run (bin: string, args: string[]): Promise<Run> {
  return await new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 30_000, env: { ...process.env, EDGEMESH_SOCKET: join(dir, 'no-agent.sock') } }, (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
    })
  })
}

/** exit `code`, stderr exactly the given lines, each `error: ...`, and no stack frame anywhere */
function expectFailure (r: Run, code: number, lines: Array<string | RegExp>): void {
  const got = r.stderr.split('\n')
  expect(got.at(-1), 'stderr ends with a newline').toBe('')
  got.pop()
  expect({ code: r.code, lines: got.length }, r.stderr).toEqual({ code, lines: lines.length })
  lines.forEach((want, i) => {
    if (typeof want === 'string') expect(got[i]).toBe(`error: ${want}`)
    else expect(got[i]).toMatch(want)
  })
  expect(r.stderr + r.stdout).not.toMatch(/^\s+at /m)
}

let dir: string
let n = 0
async function file (text: string, name = `f-${n++}.yaml`): Promise<string> {
  const f = join(dir, name)
  await writeFile(f, text)
  return f
}
const agentYaml = (extra = ''): string => `nodeName: edge-1\nidentityFile: ${join(dir, 'agent.key')}\ncontrolSocket: ${join(dir, 'agent.sock')}\nrelays:\n  - { host: 203.0.113.10, peerId: ${PEER} }\n${extra}`

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-cli-errors-'))
})
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('edgemesh-server', { timeout: 120_000 }, () => {
  const key = (): string[] => ['--set', `identityFile=${join(dir, 'server.key')}`]

  it('command-line mistakes name the argument', async () => {
    expectFailure(await run(SERVER_BIN, ['--config']), 2, ['option --config needs a value'])
    expectFailure(await run(SERVER_BIN, ['server.yaml']), 2, ['unexpected argument "server.yaml" (see --help)'])
    expectFailure(await run(SERVER_BIN, ['--bogus']), 2, ['unknown option --bogus (see --help)'])
    expectFailure(await run(SERVER_BIN, ['--set', 'keepaliveMs']), 2, ['--set keepaliveMs: expected key.path=value'])
  })

  it('announce values must be IPv4 addresses, naming the entry', async () => {
    const f = await file('announce: [relay.example.com]\n')
    expectFailure(await run(SERVER_BIN, ['--config', f, ...key()]), 2, [`invalid configuration in ${f}: announce[0]: expected the relay's public IPv4 address`])
    const g = await file('announce: [203.0.113.10, /ip4/203.0.113.11/tcp/4001]\n')
    expectFailure(await run(SERVER_BIN, ['--config', g, ...key()]), 2, [`invalid configuration in ${g}: announce[1]: expected the relay's public IPv4 address`])
  })

  it('PSK file contents are checked (pskFile)', async () => {
    const psk = await file('just some secret\n', 'server-swarm.key')
    const f = await file(`pskFile: ${psk}\n`)
    expectFailure(await run(SERVER_BIN, ['--config', f, ...key()]), 2, [`pskFile: ${psk} is not a libp2p pre-shared key ${PSK_FORMAT}: line 1 must be "/key/swarm/psk/1.0.0/"`])
  })

  it('several invalid fields: one line each; bad YAML: one line', async () => {
    expectFailure(await run(SERVER_BIN, ['--set', 'listen.udpPort=70000', '--set', 'logLevel=loud', ...key()]), 2, [
      'invalid configuration in flags: listen.udpPort: Too big: expected number to be <=65535',
      /^error: invalid configuration in flags: logLevel: Invalid option: expected one of "fatal"\|.*"silent"$/
    ])
    const bad = await file('listen: [unclosed\n')
    expectFailure(await run(SERVER_BIN, ['--config', bad]), 2, [new RegExp(`^error: config file ${bad} is not valid YAML: .* at line \\d+, column \\d+$`)])
    expectFailure(await run(SERVER_BIN, ['--config', join(dir, 'missing.yaml')]), 2, [`cannot read config file ${join(dir, 'missing.yaml')}: ENOENT: no such file or directory, open '${join(dir, 'missing.yaml')}'`])
  })

  it('a start-up failure that is not the config: one line, exit 1 (HTTP port in use; unwritable identity file)', async () => {
    const taken: Server = createServer()
    await new Promise<void>((resolve) => { taken.listen(0, '127.0.0.1', resolve) })
    try {
      const port = (taken.address() as { port: number }).port
      const r = await run(SERVER_BIN, [...key(), '--set', 'listen.host=127.0.0.1', '--set', 'listen.udpPort=0', '--set', 'listen.tcpPort=0', '--set', `listen.http=127.0.0.1:${port}`])
      expectFailure(r, 1, [new RegExp(`^error: listen\\.http: .*EADDRINUSE.*127\\.0\\.0\\.1:${port}$`)])
      // the relay's TCP port: libp2p's listen error (a stack in its message) is cut to its cause
      const t = await run(SERVER_BIN, [...key(), '--set', 'listen.host=127.0.0.1', '--set', 'listen.udpPort=0', '--set', `listen.tcpPort=${port}`, '--set', 'listen.http=127.0.0.1:0'])
      expectFailure(t, 1, [`listen.tcpPort: address already in use 127.0.0.1:${port}`])
    } finally {
      taken.close()
    }
    const blocker = await file('a file, not a directory\n', 'blocker')
    expectFailure(await run(SERVER_BIN, ['--print-peer-id', '--set', `identityFile=${blocker}/server.key`]), 1, [
      new RegExp(`^error: identityFile: cannot read identity key ${blocker}/server\\.key: ENOTDIR`)
    ])
  })
})

describe('edgemesh-agent', { timeout: 120_000 }, () => {
  it('command-line mistakes name the argument', async () => {
    expectFailure(await run(AGENT_BIN, ['--config']), 2, ['option --config needs a value'])
    expectFailure(await run(AGENT_BIN, ['--config', '--set', 'nodeName=x']), 2, ['option --config needs a value (one starting with "-" is written --config=VALUE)'])
    expectFailure(await run(AGENT_BIN, ['--config', 'agent.yaml', 'stray']), 2, ['unexpected argument "stray" (see --help)'])
    expectFailure(await run(AGENT_BIN, ['--nodename', 'x']), 2, ['unknown option --nodename (see --help)'])
  })

  it('PSK file contents are checked before anything starts (pskFile)', async () => {
    const psk = await file(`/key/swarm/psk/1.0.0/\n/base16/\n${KEY.slice(0, 40)}\n`, 'agent-swarm.key')
    const f = await file(agentYaml(`pskFile: ${psk}\n`))
    expectFailure(await run(AGENT_BIN, ['--config', f]), 2, [`pskFile: ${psk} is not a libp2p pre-shared key ${PSK_FORMAT}: line 3 must be the key as 64 hex digits (32 bytes), got 40 characters`])
  })

  it('an unreadable kubeconfig certificate, or a malformed kubeconfig, names kubernetes.kubeconfig and the file', async () => {
    const kc = await file([
      'apiVersion: v1', 'kind: Config', 'current-context: c',
      'clusters: [{name: k, cluster: {server: "https://127.0.0.1:6443"}}]',
      'users: [{name: u, user: {client-certificate: missing.crt, client-key: missing.key}}]',
      'contexts: [{name: c, context: {cluster: k, user: u}}]', ''].join('\n'), 'cert.kubeconfig')
    const f = await file(agentYaml(`kubernetes: { kubeconfig: ${kc} }\n`))
    const crt = join(dir, 'missing.crt')
    expectFailure(await run(AGENT_BIN, ['--config', f]), 2, [`kubernetes.kubeconfig: ${kc}: cannot read client-certificate ${crt}: ENOENT: no such file or directory, open '${crt}'`])
    const broken = await file('clusters: [\n', 'broken.kubeconfig')
    const g = await file(agentYaml(`kubernetes: { kubeconfig: ${broken} }\n`))
    expectFailure(await run(AGENT_BIN, ['--config', g]), 2, [new RegExp(`^error: kubernetes\\.kubeconfig: ${broken} is not valid YAML: .* at line \\d+, column \\d+$`)])
  })

  it('proxy without kubernetes (the README agent.yaml without its kubernetes section) is refused, naming proxy', async () => {
    const f = await file(agentYaml('dns:\n  listen: 169.254.96.16:53\nproxy:\n  listen: 169.254.96.16\n  iptables: auto\n'))
    expectFailure(await run(AGENT_BIN, ['--config', f]), 2, [`invalid configuration in ${f}: proxy: needs kubernetes (the proxy learns Services and endpoints from the Kubernetes API): add a kubernetes section or remove proxy`])
  })
})

describe('edgemesh (CLI)', { timeout: 120_000 }, () => {
  it('bad counts, commands, options and arguments: exit 2 before the agent is asked', async () => {
    expectFailure(await run(CLI_BIN, ['ping', 'edge-2', '-c', '0']), 2, [/^error: -c 0: .*integer from 1 to \d+$/])
    expectFailure(await run(CLI_BIN, ['ping', 'edge-2', '-c', 'abc']), 2, [/^error: -c abc: .*integer from 1 to \d+$/])
    expectFailure(await run(CLI_BIN, ['ping', 'edge-2', '-c']), 2, ['option --count needs a value'])
    expectFailure(await run(CLI_BIN, ['ping']), 2, [/^error: ping: missing <node>/])
    expectFailure(await run(CLI_BIN, ['pnig', 'edge-2']), 2, ['unknown command "pnig" (see edgemesh --help)'])
    expectFailure(await run(CLI_BIN, ['status', 'edge-2']), 2, ['status: unexpected argument "edge-2" (see edgemesh --help)'])
    expectFailure(await run(CLI_BIN, ['ping', 'edge-2', 'edge-3']), 2, ['ping: unexpected argument "edge-3" (see edgemesh --help)'])
    expectFailure(await run(CLI_BIN, ['status', '--verbose']), 2, ['unknown option --verbose (see --help)'])
    expectFailure(await run(CLI_BIN, ['--socket']), 2, ['option --socket needs a value'])
  })

  it('no agent at the socket: one line, exit 1', async () => {
    const socket = join(dir, 'nobody.sock')
    expectFailure(await run(CLI_BIN, ['--socket', socket, 'status']), 1, [`no agent at ${socket} (is edgemesh-agent running? use --socket)`])
  })
})
