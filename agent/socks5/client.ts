// A SOCKS5 client handshake on an open socket (`edgemesh nc`, tests, benchmarks): greeting,
// optional RFC 1929 credentials, CONNECT to a name; resolves once the server replied success,
// with the bytes that followed the reply, or rejects with the reply code.
import type { Socket } from 'node:net'
import { AuthMethod, encodeGreeting, encodeRequest, encodeUserPass, parseAuthStatus, parseMethodSelection, parseReply, Reply, replyText, type Parsed } from './wire.ts'

/** The server refused: `reply` is the RFC 1928 code (or 0xff: no acceptable method, 0x100: authentication failed). */
export class Socks5ReplyError extends Error {
  readonly reply: number
  constructor (reply: number, message: string) {
    super(message)
    this.name = 'Socks5ReplyError'
    this.reply = reply
  }
}
export const AUTH_FAILED = 0x100

/** The handshake failed before any reply code: why, for callers that word it their own way (`edgemesh nc`). */
export type HandshakeFailure = 'closed' | 'timeout' | 'malformed' | 'method-not-offered'
export class Socks5HandshakeError extends Error {
  readonly kind: HandshakeFailure
  /** malformed: the parser's message; method-not-offered: the method the server chose */
  readonly detail: string
  constructor (kind: HandshakeFailure, message: string, detail = '') {
    super(message)
    this.name = 'Socks5HandshakeError'
    this.kind = kind
    this.detail = detail
  }
}

export interface ConnectOptions {
  host: string
  port: number
  auth?: { username: string, password: string }
  /** force an address type (tests: a raw IP sent as such) */
  addressType?: number
  /** e.g. Command.BIND, for tests of refusals */
  command?: number
  timeoutMs?: number
}

/** Runs the handshake; the socket is left paused, with `rest` holding bytes already read past the reply. */
export async function socks5Connect (socket: Socket, opts: ConnectOptions): Promise<{ bound: { host: string, port: number }, rest: Buffer }> {
  let buf = Buffer.alloc(0)
  let waiter: (() => void) | undefined
  let failure: Error | undefined
  const onData = (chunk: Buffer): void => { buf = Buffer.concat([buf, chunk]); waiter?.() }
  const onEnd = (): void => { failure ??= new Socks5HandshakeError('closed', 'the SOCKS server closed the connection during the handshake'); waiter?.() }
  const onError = (err: Error): void => { failure ??= err; waiter?.() }
  socket.on('data', onData)
  socket.once('end', onEnd)
  socket.once('close', onEnd)
  socket.once('error', onError)
  const timer = opts.timeoutMs != null ? setTimeout(() => { failure ??= new Socks5HandshakeError('timeout', `no SOCKS reply within ${opts.timeoutMs} ms`); waiter?.() }, opts.timeoutMs) : undefined
  const read = async <T>(parse: (b: Uint8Array) => Parsed<T>): Promise<T> => {
    for (;;) {
      const r = parse(buf)
      if (r !== 'short') {
        if (typeof r === 'string') throw new Socks5HandshakeError('malformed', `bad SOCKS reply: ${r}`, r)
        buf = buf.subarray(r.length)
        return r.value
      }
      if (failure != null) throw failure
      await new Promise<void>((resolve) => { waiter = resolve })
      waiter = undefined
    }
  }
  try {
    socket.write(encodeGreeting([opts.auth != null ? AuthMethod.USERPASS : AuthMethod.NONE]))
    const { method } = await read(parseMethodSelection)
    if (method === AuthMethod.NO_ACCEPTABLE) throw new Socks5ReplyError(AuthMethod.NO_ACCEPTABLE, opts.auth != null ? 'the SOCKS server does not accept username/password authentication' : 'the SOCKS server requires authentication (username/password)')
    if (method === AuthMethod.USERPASS) {
      if (opts.auth == null) throw new Socks5HandshakeError('method-not-offered', 'the SOCKS server chose username/password, which was not offered', String(method))
      socket.write(encodeUserPass(opts.auth.username, opts.auth.password))
      const { ok } = await read(parseAuthStatus)
      if (!ok) throw new Socks5ReplyError(AUTH_FAILED, 'SOCKS authentication failed (wrong username or password)')
    } else if (method !== AuthMethod.NONE || opts.auth != null) { // only the offered method will do
      throw new Socks5HandshakeError('method-not-offered', `the SOCKS server chose method ${method}, which was not offered`, String(method))
    }
    socket.write(encodeRequest({ host: opts.host, port: opts.port, ...(opts.command != null ? { command: opts.command } : {}), ...(opts.addressType != null ? { addressType: opts.addressType } : {}) }))
    const reply = await read(parseReply)
    if (reply.reply !== Reply.SUCCEEDED) throw new Socks5ReplyError(reply.reply, `SOCKS server: ${replyText(reply.reply)} (0x${reply.reply.toString(16).padStart(2, '0')}) for ${opts.host}:${opts.port}`)
    return { bound: { host: reply.host, port: reply.port }, rest: Buffer.from(buf) }
  } finally {
    clearTimeout(timer)
    socket.pause() // what follows waits in the socket for whoever takes it over (pipe or on('data') resumes it)
    socket.off('data', onData)
    socket.off('end', onEnd)
    socket.off('close', onEnd)
    socket.off('error', onError)
  }
}
