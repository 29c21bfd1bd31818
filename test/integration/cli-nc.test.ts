// `edgemesh nc` (bin/edgemesh.js, running dist/) against a scripted SOCKS5 proxy on loopback:
// the bytes it sends, data both ways with half-close in each direction (stdin's end reaches the
// target as FIN while the target keeps answering; the target's FIN ends stdout while stdin keeps
// flowing), each refusal as one line with its reply code and exit 1, credentials, no proxy, a silent or garbled proxy, and
// command line mistakes (exit 2).
import { afterEach, describe, expect, it } from 'vitest'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createServer, type Server, type Socket } from 'node:net'
import { join, resolve } from 'node:path'
import { parseMethodSelection } from '../../agent/socks5/wire.ts'

const CLI_BIN = join(resolve(import.meta.dirname, '../..'), 'bin/edgemesh.js')

/** Reads exactly n bytes from a socket (the scripted proxy's side). */
function reader (sock: Socket): (n: number) => Promise<Buffer> {
  let buf = Buffer.alloc(0)
  let want: { n: number, resolve: (b: Buffer) => void } | undefined
  const check = (): void => {
    if (want != null && buf.length >= want.n) { const w = want; want = undefined; const out = buf.subarray(0, w.n); buf = buf.subarray(w.n); w.resolve(out) }
  }
  sock.on('data', (c: Buffer) => { buf = Buffer.concat([buf, c]); check() })
  return async (n) => await new Promise((resolve) => { want = { n, resolve }; check() })
}

interface Script { auth?: { user: string, password: string }, reply?: number, then?: (sock: Socket, read: (n: number) => Promise<Buffer>) => Promise<void> }
interface Seen { methods: number[], target: string, port: number, creds?: string }

let servers: Server[] = []
let procs: ChildProcessWithoutNullStreams[] = []
const sockets = new Set<Socket>()
afterEach(async () => {
  for (const p of procs) p.kill('SIGKILL')
  for (const s of sockets) s.destroy()
  sockets.clear()
  await Promise.all(servers.map(async (s) => await new Promise((resolve) => { s.close(resolve) })))
  servers = []; procs = []
})

/** A SOCKS5 proxy that plays `script` for every connection and records what the client asked. */
async function proxy (script: Script): Promise<{ port: number, seen: Seen[] }> {
  const seen: Seen[] = []
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    sockets.add(sock)
    void (async () => {
      const read = reader(sock)
      const [, n] = await read(2)
      const methods = [...await read(n!)]
      const s: Seen = { methods, target: '', port: 0 }
      seen.push(s)
      if (script.auth != null) {
        if (!methods.includes(2)) { sock.end(Buffer.from([5, 0xff])); return }
        sock.write(Buffer.from([5, 2]))
        const [, ul] = await read(2)
        const user = (await read(ul!)).toString()
        const [pl] = await read(1)
        const password = (await read(pl!)).toString()
        s.creds = `${user}:${password}`
        const ok = user === script.auth.user && password === script.auth.password
        sock.write(Buffer.from([1, ok ? 0 : 1]))
        if (!ok) { sock.end(); return }
      } else {
        sock.write(Buffer.from([5, 0]))
      }
      const [, cmd, , atyp, len] = await read(5)
      expect({ cmd, atyp }).toEqual({ cmd: 1, atyp: 3 })
      s.target = (await read(len!)).toString()
      s.port = (await read(2)).readUInt16BE(0)
      const code = script.reply ?? 0
      sock.write(Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
      if (code !== 0) { sock.end(); return }
      await script.then?.(sock, read)
    })().catch(() => { sock.destroy() })
  })
  servers.push(server)
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  return { port: (server.address() as { port: number }).port, seen }
}

interface Nc { proc: ChildProcessWithoutNullStreams, out: () => Buffer, outEnded: Promise<void>, exit: Promise<{ code: number | null, stderr: string }> }
function nc (args: string[], env: Record<string, string> = {}): Nc {
  const proc = spawn(process.execPath, [CLI_BIN, 'nc', ...args], { env: { ...process.env, ...env } })
  procs.push(proc)
  const chunks: Buffer[] = []
  let stderr = ''
  proc.stdout.on('data', (c: Buffer) => chunks.push(c))
  proc.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const outEnded = new Promise<void>((resolve) => { proc.stdout.on('end', resolve) })
  const exit = new Promise<{ code: number | null, stderr: string }>((resolve) => { proc.on('close', (code) => { resolve({ code, stderr }) }) })
  return { proc, out: () => Buffer.concat(chunks), outEnded, exit }
}

describe('edgemesh nc', () => {
  it('asks for the name and port, then carries bytes both ways; stdin\'s end reaches the target as FIN and the target still answers after it', async () => {
    const up = randomBytes(4 << 20)
    let gotFin = false
    const p = await proxy({
      then: async (sock) => {
        sock.write('SSH-2.0-scripted\r\n')
        const hash = createHash('sha256')
        let n = 0
        sock.on('data', (c: Buffer) => { hash.update(c); n += c.length })
        await new Promise((resolve) => { sock.once('end', resolve) })
        gotFin = true
        // half-closed by the client: the answer still flows the other way, then our FIN
        sock.end(`${n} ${hash.digest('hex')}\n`)
      }
    })
    const c = nc(['--proxy', `127.0.0.1:${p.port}`, 'edge-c1.edge', '22'])
    c.proc.stdin.end(up)
    const r = await c.exit
    expect(r).toEqual({ code: 0, stderr: '' })
    expect(gotFin).toBe(true)
    expect(c.out().toString()).toBe(`SSH-2.0-scripted\r\n${up.length} ${createHash('sha256').update(up).digest('hex')}\n`)
    expect(p.seen).toEqual([{ methods: [0], target: 'edge-c1.edge', port: 22 }])
  })

  it('the target\'s FIN ends stdout while stdin keeps flowing to the target; exits once both directions ended', async () => {
    const down = randomBytes(3 << 20)
    let received = ''
    const p = await proxy({
      then: async (sock) => {
        sock.end(down) // FIN first
        sock.on('data', (c: Buffer) => { received += c.toString() })
        await new Promise((resolve) => { sock.once('end', resolve) })
      }
    })
    const c = nc(['--proxy', `127.0.0.1:${p.port}`, 'web.shop', '8080'])
    await c.outEnded // stdout reached EOF: the target's FIN was carried
    expect(createHash('sha256').update(c.out()).digest('hex')).toBe(createHash('sha256').update(down).digest('hex'))
    expect(c.proc.exitCode).toBe(null) // still running: stdin is open
    c.proc.stdin.write('after the target\'s FIN\n')
    c.proc.stdin.end('last line\n')
    expect(await c.exit).toEqual({ code: 0, stderr: '' })
    expect(received).toBe('after the target\'s FIN\nlast line\n')
  })

  it('a refusal is one line naming the target, the meaning and the reply code; exit 1 and nothing on stdout', async () => {
    const want: Record<number, string> = {
      1: 'general failure (see the agent\'s log)',
      2: 'not allowed (the port is not in the node\'s allowedPorts, not a port of the Service, or the node does not serve SOCKS5)',
      3: 'network unreachable (the node is offline: the tunnel cannot reach it)',
      4: 'host unreachable (no such node or Service, or the Service has no ready endpoint)',
      5: 'connection refused (nothing listens on that port)',
      6: 'timed out',
      7: 'command not supported',
      8: 'address type not supported (give a node or Service name, not an IP address)'
    }
    for (const [code, meaning] of Object.entries(want)) {
      const p = await proxy({ reply: Number(code) })
      const c = nc(['--proxy', `127.0.0.1:${p.port}`, 'edge-x', '2222'])
      c.proc.stdin.end()
      expect(await c.exit).toEqual({ code: 1, stderr: `error: edge-x:2222: ${meaning} (SOCKS5 reply ${code})\n` })
      expect(c.out().length).toBe(0)
    }
  })

  it('username/password: sent when given (flags or environment); missing or wrong ones are named', async () => {
    const p = await proxy({ auth: { user: 'ops', password: 'pw' }, then: async (sock) => { sock.end('hello\n') } })
    const proxyArg = ['--proxy', `127.0.0.1:${p.port}`]
    let c = nc([...proxyArg, 'edge-b1', '22'], { EDGEMESH_SOCKS_USER: 'ops', EDGEMESH_SOCKS_PASSWORD: 'pw' })
    c.proc.stdin.end()
    expect(await c.exit).toEqual({ code: 0, stderr: '' })
    expect(c.out().toString()).toBe('hello\n')
    c = nc([...proxyArg, 'edge-b1', '22'])
    c.proc.stdin.end()
    expect(await c.exit).toEqual({ code: 1, stderr: `error: the SOCKS5 proxy at 127.0.0.1:${p.port} wants a user name and password (use --user and --password-file)\n` })
    c = nc([...proxyArg, 'edge-b1', '22'], { EDGEMESH_SOCKS_USER: 'ops', EDGEMESH_SOCKS_PASSWORD: 'nope' })
    c.proc.stdin.end()
    expect(await c.exit).toEqual({ code: 1, stderr: `error: the SOCKS5 proxy at 127.0.0.1:${p.port} refused the user name or password\n` })
    expect(p.seen.map((s) => s.creds)).toEqual(['ops:pw', undefined, 'ops:nope'])
  })

  it('no proxy listening, or a proxy that closes mid-handshake: one line, exit 1', async () => {
    const p = await proxy({})
    const port = p.port
    await new Promise((resolve) => { servers.pop()!.close(resolve) })
    let c = nc(['--proxy', `127.0.0.1:${port}`, 'edge-b1', '22'])
    expect(await c.exit).toEqual({ code: 1, stderr: `error: no SOCKS5 proxy at 127.0.0.1:${port} (is the agent's socks5 listener on? use --proxy)\n` })
    const closer = createServer((sock) => { sockets.add(sock); sock.end() })
    servers.push(closer)
    await new Promise<void>((resolve) => { closer.listen(0, '127.0.0.1', resolve) })
    const cp = (closer.address() as { port: number }).port
    c = nc(['--proxy', `127.0.0.1:${cp}`, 'edge-b1', '22'])
    expect(await c.exit).toEqual({ code: 1, stderr: `error: the SOCKS5 proxy at 127.0.0.1:${cp} closed the connection during the handshake\n` })
  })

  it('a proxy that never answers, answers garbage, or picks a method that was not offered: one line, exit 1', async () => {
    const raw = async (onGreeting: (sock: Socket) => void): Promise<number> => {
      const server = createServer((sock) => { sockets.add(sock); sock.once('data', () => { onGreeting(sock) }) })
      servers.push(server)
      await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
      return (server.address() as { port: number }).port
    }
    const silent = await raw(() => {})
    let c = nc(['--proxy', `127.0.0.1:${silent}`, '--connect-timeout', '0.5', 'edge-b1', '22'])
    expect(await c.exit).toEqual({ code: 1, stderr: `error: the SOCKS5 proxy at 127.0.0.1:${silent} did not answer within 0.5 s\n` })
    const garbage = await raw((sock) => { sock.write(Buffer.from([4, 0])) })
    const why = parseMethodSelection(Buffer.from([4, 0]))
    expect(typeof why).toBe('string')
    c = nc(['--proxy', `127.0.0.1:${garbage}`, 'edge-b1', '22'])
    expect(await c.exit).toEqual({ code: 1, stderr: `error: the SOCKS5 proxy at 127.0.0.1:${garbage}: ${why as string}\n` })
    const noAuth = await raw((sock) => { sock.write(Buffer.from([5, 0])) }) // offered only username/password
    c = nc(['--proxy', `127.0.0.1:${noAuth}`, 'edge-b1', '22'], { EDGEMESH_SOCKS_USER: 'ops', EDGEMESH_SOCKS_PASSWORD: 'pw' })
    expect(await c.exit).toEqual({ code: 1, stderr: `error: the SOCKS5 proxy at 127.0.0.1:${noAuth} chose method 0, which was not offered\n` })
  })

  it('command line mistakes: one line, exit 2', async () => {
    for (const [args, line] of [
      [['edge-b1'], /^error: nc: missing <port> \(usage: edgemesh nc /],
      [['edge-b1', '70000'], /^error: nc: port 70000: expected an integer from 1 to 65535$/],
      [['--proxy', 'nohost', 'edge-b1', '22'], /^error: --proxy nohost: expected HOST:PORT, e.g. 127.0.0.1:10800$/],
      [['edge-b1', '22', 'extra'], /^error: nc: unexpected argument "extra" \(see edgemesh --help\)$/]
    ] as const) {
      const c = nc([...args])
      const r = await c.exit
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr.split('\n')).toHaveLength(2)
      expect(r.stderr.split('\n')[0]).toMatch(line)
    }
  })
})
