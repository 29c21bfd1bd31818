// `edgemesh nc <node|service> <port>`: a stdio pipe through the local agent's SOCKS5 proxy, for
// ssh's ProxyCommand (so the differences between OpenBSD nc and ncat flags do not matter). It
// asks for the target by name, prints one line saying why when the agent refuses, and carries a
// half-close both ways: end of stdin sends FIN to the target, the target's FIN ends stdout.
import { connect, Socket } from 'node:net'
import { fstatSync, readFileSync } from 'node:fs'
import type { Readable, Writable } from 'node:stream'
import { ConfigError } from '../../shared/errors.ts'
import { parseHostPortOption } from '../../shared/host-port.ts'
import { AUTH_FAILED, socks5Connect, Socks5HandshakeError, Socks5ReplyError } from '../socks5/client.ts'
import { AuthMethod } from '../socks5/wire.ts'

export interface Credentials { user: string, password: string }

/** What each RFC 1928 reply code means when an edgemesh agent sends it (README, "How SOCKS5 works"). */
export const REPLY_MEANING: Record<number, string> = {
  0x01: 'general failure (see the agent\'s log)',
  0x02: 'not allowed (the port is not in the node\'s allowedPorts, not a port of the Service, or the node does not serve SOCKS5)',
  0x03: 'network unreachable (the node is offline: the tunnel cannot reach it)',
  0x04: 'host unreachable (no such node or Service, or the Service has no ready endpoint)',
  0x05: 'connection refused (nothing listens on that port)',
  0x06: 'timed out',
  0x07: 'command not supported',
  0x08: 'address type not supported (give a node or Service name, not an IP address)'
}

export function refusalText (code: number): string {
  return `${REPLY_MEANING[code] ?? 'unknown reply code'} (SOCKS5 reply ${code})`
}

/** Where the agent's SOCKS5 listener is by default (socks5.listen; from a laptop through `kubectl port-forward`: --proxy 127.0.0.1:10800). */
export const DEFAULT_SOCKS_PROXY = '169.254.96.16:10800'
export const DEFAULT_CONNECT_TIMEOUT_S = 30
export const NC_USAGE = 'edgemesh nc [--proxy HOST:PORT] [--user NAME --password-file FILE] [--connect-timeout S] <node|service> <port>'

export interface NcArgs { target: string, port: number, proxy: { host: string, port: number }, creds?: Credentials, timeoutMs: number }

export interface NcOptions { proxy?: string, user?: string, 'password-file'?: string, 'connect-timeout'?: string }

/**
 * The arguments of `edgemesh nc`; env: EDGEMESH_SOCKS_PROXY, EDGEMESH_SOCKS_USER,
 * EDGEMESH_SOCKS_PASSWORD (the options win). A mistake is a ConfigError (one line, exit 2).
 */
export function parseNcArgs (positionals: string[], o: NcOptions, env: NodeJS.ProcessEnv = process.env, readFile = (f: string): string => readFileSync(f, 'utf8')): NcArgs {
  const [target, rawPort, extra] = positionals
  if (target == null || target === '') throw new ConfigError(`nc: missing <node|service> (usage: ${NC_USAGE})`)
  if (rawPort == null) throw new ConfigError(`nc: missing <port> (usage: ${NC_USAGE})`)
  if (extra != null) throw new ConfigError(`nc: unexpected argument "${extra}" (usage: ${NC_USAGE})`)
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$/.test(target)) throw new ConfigError(`nc: ${target}: expected a node or Service name (letters, digits, '-' and '.')`)
  const port = /^\d{1,5}$/.test(rawPort) ? Number(rawPort) : NaN
  if (!(port >= 1 && port <= 65535)) throw new ConfigError(`nc: port ${rawPort}: expected an integer from 1 to 65535`)
  const proxy = parseHostPortOption(o.proxy ?? env.EDGEMESH_SOCKS_PROXY ?? DEFAULT_SOCKS_PROXY, o.proxy != null ? '--proxy' : env.EDGEMESH_SOCKS_PROXY != null ? 'EDGEMESH_SOCKS_PROXY' : '--proxy')
  const rawTimeout = o['connect-timeout'] ?? String(DEFAULT_CONNECT_TIMEOUT_S)
  const seconds = /^\d+(\.\d+)?$/.test(rawTimeout) ? Number(rawTimeout) : NaN
  if (!(seconds > 0 && seconds <= 3600)) throw new ConfigError(`--connect-timeout ${rawTimeout}: expected seconds from 0.1 to 3600`)
  const user = o.user ?? env.EDGEMESH_SOCKS_USER
  let password: string | undefined
  if (o['password-file'] != null) {
    try { password = readFile(o['password-file']).replace(/\r?\n$/, '') } catch (err: any) { throw new ConfigError(`--password-file ${o['password-file']}: cannot read it (${err?.code ?? err?.message})`) }
  } else password = env.EDGEMESH_SOCKS_PASSWORD
  if ((user == null) !== (password == null)) throw new ConfigError(user == null ? '--password-file: give --user (or EDGEMESH_SOCKS_USER) too' : '--user: give --password-file (or EDGEMESH_SOCKS_PASSWORD) too')
  let creds: Credentials | undefined
  if (user != null && password != null) {
    if (Buffer.byteLength(user) < 1 || Buffer.byteLength(user) > 255) throw new ConfigError('--user: the user name must be 1 to 255 bytes')
    if (Buffer.byteLength(password) < 1 || Buffer.byteLength(password) > 255) throw new ConfigError('the SOCKS5 password must be 1 to 255 bytes')
    creds = { user, password }
  }
  return { target, port, proxy, ...(creds != null ? { creds } : {}), timeoutMs: Math.round(seconds * 1000) }
}

/** A failure an operator reads as one line (exit 1). */
export class NcError extends Error {
  readonly reply: number | undefined
  constructor (message: string, reply?: number) { super(message); this.name = 'NcError'; this.reply = reply }
}

/**
 * The SOCKS5 handshake (socks5Connect) on a connecting socket; resolves when the proxy said
 * success, with any bytes of the target that came in the same read, or rejects with an NcError
 * an operator reads as one line.
 */
export async function socksHandshake (socket: Socket, a: NcArgs): Promise<{ head: Buffer }> {
  const where = `the SOCKS5 proxy at ${a.proxy.host}:${a.proxy.port}`
  try {
    const { rest } = await socks5Connect(socket, { host: a.target, port: a.port, ...(a.creds != null ? { auth: { username: a.creds.user, password: a.creds.password } } : {}), timeoutMs: a.timeoutMs })
    return { head: rest }
  } catch (err: any) {
    throw ncFailure(err, a, where)
  }
}

function ncFailure (err: any, a: NcArgs, where: string): NcError {
  if (err instanceof Socks5ReplyError) {
    if (err.reply === AuthMethod.NO_ACCEPTABLE) return new NcError(a.creds == null ? `${where} wants a user name and password (use --user and --password-file)` : `${where} does not take a user name and password (try without --user)`)
    if (err.reply === AUTH_FAILED) return new NcError(`${where} refused the user name or password`)
    return new NcError(`${a.target}:${a.port}: ${refusalText(err.reply)}`, err.reply)
  }
  if (err instanceof Socks5HandshakeError) {
    switch (err.kind) {
      case 'closed': return new NcError(`${where} closed the connection during the handshake`)
      case 'timeout': return new NcError(`${where} did not answer within ${a.timeoutMs / 1000} s`)
      case 'malformed': return new NcError(`${where}: ${err.detail}`)
      case 'method-not-offered': return new NcError(`${where} chose method ${err.detail}, which was not offered`)
    }
  }
  return new NcError(err?.code === 'ECONNREFUSED'
    ? `no SOCKS5 proxy at ${a.proxy.host}:${a.proxy.port} (is the agent's socks5 listener on? use --proxy)`
    : `${where}: ${err?.code ?? err?.message}`)
}

/** stdin/stdout as streams we can half-close: a pipe or socket gets its own handle (so ending it closes the fd). */
function stdioStreams (): { input: Readable, output: Writable, closeOutput: () => void } {
  const isStream = (fd: number): boolean => { try { const s = fstatSync(fd); return s.isFIFO() || s.isSocket() } catch { return false } }
  const input: Readable = isStream(0) ? new Socket({ fd: 0, readable: true, writable: false }) : process.stdin
  const own = isStream(1)
  const output: Writable = own ? new Socket({ fd: 1, readable: false, writable: true }) : process.stdout
  // a pipe cannot be shut down for writing, only closed: close it once everything is written
  const closeOutput = (): void => { if (own) (output as Socket).destroy() }
  return { input, output, closeOutput }
}

/** Connects, shakes hands, then splices stdio and the connection until both directions ended. */
export async function runNc (a: NcArgs): Promise<void> {
  const socket = connect({ host: a.proxy.host, port: a.proxy.port, allowHalfOpen: true, noDelay: true })
  let head: Buffer
  try {
    ({ head } = await socksHandshake(socket, a))
  } catch (err) {
    socket.destroy()
    throw err
  }
  const { input, output, closeOutput } = stdioStreams()
  await new Promise<void>((resolve, reject) => {
    let outputDone = false
    let socketClosed = false
    let failure: Error | undefined
    const maybeDone = (): void => {
      if (!outputDone || !socketClosed) return
      if (failure != null) reject(failure)
      else resolve()
    }
    if (head.length > 0) output.write(head)
    socket.pipe(output) // the target's FIN ends stdout
    output.on('finish', () => { outputDone = true; closeOutput(); maybeDone() })
    output.on('error', () => { // the reader went away: nothing more to deliver
      outputDone = true; socket.destroy(); maybeDone()
    })
    input.pipe(socket) // end of stdin sends FIN
    input.on('error', () => { socket.end() })
    socket.on('error', (err: NodeJS.ErrnoException) => { failure = new NcError(`${a.target}:${a.port}: connection ${err.code === 'ECONNRESET' ? 'reset' : `failed (${err.code ?? err.message})`}`) })
    socket.on('close', () => {
      socketClosed = true
      if (!outputDone) { output.end(); if (failure != null) { outputDone = true; closeOutput() } }
      input.unpipe(socket)
      input.destroy() // stop reading stdin: nothing can be sent any more
      maybeDone()
    })
  })
}
