// The server's side of a SOCKS5 handshake as a pure state machine, one per connection: bytes in
// (split anywhere, or several messages in one chunk), bytes to write and an outcome out. It
// ends in 'request' (a CONNECT to a name: the server resolves it and sends the reply) or in
// 'refused' (write what it says, then close). The buffer holds at most one message (<= 513
// bytes), so hostile input cannot grow it.
import { AddressType, AuthMethod, Command, encodeAuthStatus, encodeMethodSelection, encodeReply, latin1, parseGreeting, parseRequest, parseUserPass, Reply, type Request } from './wire.ts'

/** Why a handshake ended without a request (the label of edgemesh_socks5_refusals_total). */
export type HandshakeRefusal = 'malformed' | 'no-acceptable-method' | 'auth-failed' | 'command-not-supported' | 'address-type-not-supported'

export type HandshakeStep =
  | { state: 'more', write: Uint8Array[] }
  | { state: 'request', write: Uint8Array[], request: Request, rest: Uint8Array, username?: string }
  | { state: 'refused', write: Uint8Array[], reason: HandshakeRefusal, detail: string, target?: string, reply?: number }

export interface HandshakeOptions {
  /** username/password required (RFC 1929) when set; the check must take the same time whatever the input */
  verify?: (username: Uint8Array, password: Uint8Array) => boolean
}

type Stage = 'greeting' | 'auth' | 'request' | 'done'

const EMPTY = new Uint8Array(0)

export class ServerHandshake {
  private stage: Stage = 'greeting'
  private buf: Uint8Array = EMPTY
  private readonly verify: HandshakeOptions['verify']
  private username: string | undefined

  constructor (opts: HandshakeOptions = {}) { this.verify = opts.verify }

  /** Where the handshake is: what the timeout or an early close interrupted. */
  get at (): Stage { return this.stage }

  push (chunk: Uint8Array): HandshakeStep {
    if (this.stage === 'done') return { state: 'refused', write: [], reason: 'malformed', detail: 'data after the handshake ended' }
    this.buf = this.buf.length === 0 ? chunk : concat(this.buf, chunk)
    const write: Uint8Array[] = []
    for (;;) {
      if (this.stage === 'greeting') {
        const g = parseGreeting(this.buf)
        if (g === 'short') return this.more(write)
        if (typeof g === 'string') return this.refuse(write, 'malformed', g)
        this.consume(g.length)
        const wanted = this.verify != null ? AuthMethod.USERPASS : AuthMethod.NONE
        if (!g.value.methods.includes(wanted)) {
          write.push(encodeMethodSelection(AuthMethod.NO_ACCEPTABLE))
          return this.refuse(write, 'no-acceptable-method', `client offers methods [${g.value.methods.join(',')}], the server needs ${wanted === AuthMethod.NONE ? 'no authentication (0)' : 'username/password (2)'}`)
        }
        write.push(encodeMethodSelection(wanted))
        this.stage = this.verify != null ? 'auth' : 'request'
      } else if (this.stage === 'auth') {
        const a = parseUserPass(this.buf)
        if (a === 'short') return this.more(write)
        if (typeof a === 'string') { write.push(encodeAuthStatus(false)); return this.refuse(write, 'auth-failed', a) }
        this.consume(a.length)
        const ok = this.verify!(a.value.username, a.value.password)
        write.push(encodeAuthStatus(ok))
        if (!ok) return this.refuse(write, 'auth-failed', 'wrong username or password')
        this.username = latin1(a.value.username, 0, a.value.username.length)
        this.stage = 'request'
      } else {
        const r = parseRequest(this.buf)
        if (r === 'short') return this.more(write)
        if (typeof r === 'string') {
          // RFC 1928 §4: an unknown address type is answered 0x08; other garbage gets a general failure
          const atypBad = this.buf.length >= 4 && this.buf[2] === 0 && /address type/.test(r)
          const reply = atypBad ? Reply.ADDRESS_TYPE_NOT_SUPPORTED : Reply.GENERAL_FAILURE
          write.push(encodeReply(reply))
          return this.refuse(write, atypBad ? 'address-type-not-supported' : 'malformed', r, { reply })
        }
        const req = r.value
        this.consume(r.length)
        if (req.command !== Command.CONNECT) {
          write.push(encodeReply(Reply.COMMAND_NOT_SUPPORTED))
          const name = req.command === Command.BIND ? 'BIND' : req.command === Command.UDP_ASSOCIATE ? 'UDP ASSOCIATE' : `command ${req.command}`
          return this.refuse(write, 'command-not-supported', `${name} is not supported (CONNECT only)`, { reply: Reply.COMMAND_NOT_SUPPORTED, target: `${req.host}:${req.port}` })
        }
        if (req.addressType !== AddressType.DOMAIN) {
          write.push(encodeReply(Reply.ADDRESS_TYPE_NOT_SUPPORTED))
          return this.refuse(write, 'address-type-not-supported', `target ${req.host} is an IP address; only node and Service names are accepted`, { reply: Reply.ADDRESS_TYPE_NOT_SUPPORTED, target: `${req.host}:${req.port}` })
        }
        this.stage = 'done'
        const rest = this.buf
        this.buf = EMPTY
        return { state: 'request', write, request: req, rest, ...(this.username != null ? { username: this.username } : {}) }
      }
    }
  }

  private more (write: Uint8Array[]): HandshakeStep { return { state: 'more', write } }

  private refuse (write: Uint8Array[], reason: HandshakeRefusal, detail: string, extra: { reply?: number, target?: string } = {}): HandshakeStep {
    this.stage = 'done'
    this.buf = EMPTY
    return { state: 'refused', write, reason, detail, ...extra }
  }

  private consume (n: number): void { this.buf = this.buf.length === n ? EMPTY : this.buf.subarray(n) }
}

function concat (a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}
