// Process helpers for the network lab: spawning with captured output, line waiting, killing
// by process group, and /proc based liveness checks (used by the synchronous exit paths and by
// stale-lab cleanup, where node's own child bookkeeping is not available).
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs'
import { constants as osConstants } from 'node:os'

/** How much output per stream a LabProcess keeps in memory (the tail is kept). */
const MAX_KEEP = 1 << 20

export interface LabProcess {
  pid: number
  child: ChildProcess
  /** Retained stdout (last ~1 MB). */
  stdout(): string
  /** Retained stderr (last ~1 MB). */
  stderr(): string
  /** Resolves with the first stdout or stderr line (already received or future) matching re. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>
  /** Sends signal (default SIGTERM) to the process group; SIGKILL after graceMs (default 2000). Resolves when exited. */
  kill(signal?: NodeJS.Signals, graceMs?: number): Promise<void>
  /** Exit code, or null when killed by a signal. Resolves after output has been flushed. */
  exited: Promise<number | null>
}

export interface ProcRef { pid: number, startTime: number }

/** Field 22 of /proc/<pid>/stat (start time in clock ticks), or null if the process is gone. */
export function procStartTime (pid: number): number | null {
  const st = readProcStat(pid)
  return st === null ? null : st.startTime
}

function readProcStat (pid: number): { state: string, startTime: number } | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // comm (field 2) may contain spaces and parentheses: parse after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  const state = rest[0]
  const startTime = Number(rest[19])
  if (state === undefined || !Number.isFinite(startTime)) return null
  return { state, startTime }
}

/** True if pid is a live (non-zombie) process with the recorded start time (guards against PID reuse). */
export function isAlive (ref: ProcRef): boolean {
  const st = readProcStat(ref.pid)
  return st !== null && st.state !== 'Z' && st.state !== 'X' && st.startTime === ref.startTime
}

/**
 * Signals a process we started. Children are spawned detached (own process group whose id is
 * their pid), so the group is signalled to also reach grandchildren; falls back to the pid.
 */
export function signalRef (ref: ProcRef, signal: NodeJS.Signals): void {
  if (!isAlive(ref)) return
  try {
    process.kill(-ref.pid, signal)
  } catch {
    try { process.kill(ref.pid, signal) } catch { /* already gone */ }
  }
}

/** Blocks the thread (used only on synchronous exit paths). */
export function sleepSync (ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

/** SIGTERM, wait up to graceMs, then SIGKILL; fully synchronous (for signal/exit handlers). */
export function killRefsSync (refs: ProcRef[], graceMs: number): void {
  let alive = refs.filter(isAlive)
  for (const r of alive) signalRef(r, 'SIGTERM')
  const deadline = Date.now() + graceMs
  while (alive.length > 0 && Date.now() < deadline) {
    sleepSync(20)
    alive = alive.filter(isAlive)
  }
  for (const r of alive) signalRef(r, 'SIGKILL')
}

/** Keeps the tail of a stream's text and splits it into lines for waiters. */
class LineBuffer {
  text = ''
  partial = ''
  ended = false
  onLine: (line: string) => void

  constructor (onLine: (line: string) => void) {
    this.onLine = onLine
  }

  push (chunk: string): void {
    this.text += chunk
    if (this.text.length > MAX_KEEP) this.text = this.text.slice(this.text.length - MAX_KEEP)
    const parts = (this.partial + chunk).split('\n')
    this.partial = parts.pop() ?? ''
    if (this.partial.length > MAX_KEEP) this.partial = this.partial.slice(-MAX_KEEP)
    for (const line of parts) this.onLine(line.replace(/\r$/, ''))
  }

  end (): void {
    this.ended = true
    if (this.partial !== '') {
      const line = this.partial
      this.partial = ''
      this.onLine(line)
    }
  }

  /** Complete lines retained so far (plus the unterminated tail once the stream ended). */
  lines (): string[] {
    const all = this.text.split('\n')
    if (!this.ended || all[all.length - 1] === '') all.pop() // '' or the still-partial line
    return all.map(l => l.replace(/\r$/, ''))
  }
}

function tail (s: string, n = 2000): string {
  return s.length > n ? '…' + s.slice(-n) : s
}

export interface StartOpts {
  env?: Record<string, string>
  cwd?: string
  logFile?: string
}

/** Spawns argv detached (own process group) with stdout/stderr captured. */
export function startProcess (argv: string[], opts: StartOpts = {}): LabProcess {
  const [cmd, ...args] = argv
  if (cmd === undefined) throw new Error('startProcess: empty argv')
  const child = spawn(cmd, args, {
    env: opts.env === undefined ? process.env : { ...process.env, ...opts.env },
    cwd: opts.cwd,
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true
  })
  if (child.pid === undefined) throw new Error(`failed to spawn ${argv.join(' ')}`)
  const pid = child.pid

  let log: WriteStream | undefined
  if (opts.logFile !== undefined) {
    log = createWriteStream(opts.logFile, { flags: 'a' })
    log.on('error', () => { /* logging is best effort */ })
  }

  type Waiter = (line: string) => void
  const waiters = new Set<Waiter>()
  const dispatch = (line: string): void => { for (const w of [...waiters]) w(line) }
  const out = new LineBuffer(dispatch)
  const err = new LineBuffer(dispatch)
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stdout.on('data', (c: string) => { out.push(c); log?.write(c) })
  child.stderr.on('data', (c: string) => { err.push(c); log?.write(c) })
  child.stdout.on('end', () => out.end())
  child.stderr.on('end', () => err.end())
  child.stdin.on('error', () => { /* EPIPE when the child does not read stdin */ })

  let hasExited = false
  const exited = new Promise<number | null>(resolve => {
    let done = false
    const finish = (code: number | null): void => {
      if (done) return
      done = true
      hasExited = true
      log?.end()
      resolve(code)
    }
    // 'close' waits for stdio to drain; if a stray grandchild keeps the pipes open, fall back
    // to 'exit' shortly after so callers awaiting exit never hang.
    child.on('close', code => finish(code))
    child.on('exit', code => { setTimeout(() => finish(code), 300).unref() })
    child.on('error', () => finish(null))
  })

  const signal = (sig: NodeJS.Signals): void => {
    if (child.exitCode !== null || child.signalCode !== null) return
    try {
      process.kill(-pid, sig)
    } catch {
      try { process.kill(pid, sig) } catch { /* gone */ }
    }
  }

  const proc: LabProcess = {
    pid,
    child,
    exited,
    stdout: () => out.text,
    stderr: () => err.text,
    waitForLine (re: RegExp, timeoutMs = 10_000): Promise<string> {
      const test = (line: string): boolean => { re.lastIndex = 0; return re.test(line) }
      const found = [...out.lines(), ...err.lines()].find(test)
      if (found !== undefined) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const cleanup = (): void => { waiters.delete(waiter); clearTimeout(timer) }
        const waiter: Waiter = line => {
          if (test(line)) { cleanup(); resolve(line) }
        }
        const timer = setTimeout(() => {
          cleanup()
          reject(new Error(`timeout after ${timeoutMs} ms waiting for ${re} from pid ${pid} (${argv.join(' ')})\n` +
            `stdout: ${tail(out.text)}\nstderr: ${tail(err.text)}`))
        }, timeoutMs)
        waiters.add(waiter)
        void exited.then(code => {
          if (!waiters.has(waiter)) return
          cleanup()
          reject(new Error(`process ${pid} (${argv.join(' ')}) exited with ${code} before printing ${re}\n` +
            `stdout: ${tail(out.text)}\nstderr: ${tail(err.text)}`))
        })
      })
    },
    async kill (sig: NodeJS.Signals = 'SIGTERM', graceMs = 2000): Promise<void> {
      if (hasExited) return
      signal(sig)
      const timer = setTimeout(() => signal('SIGKILL'), graceMs)
      try {
        await exited
      } finally {
        clearTimeout(timer)
      }
    }
  }
  return proc
}

export interface ExecResult { stdout: string, stderr: string, code: number }

/**
 * Runs argv to completion and captures its output. Never rejects because of the exit status:
 * code is the exit code, 128+signal when killed (124 on our timeout, like timeout(1)).
 */
export function runCapture (argv: string[], opts: { timeoutMs?: number, input?: string, onStart?: (child: ChildProcess) => void } = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv
  if (cmd === undefined) return Promise.reject(new Error('runCapture: empty argv'))
  return new Promise(resolve => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true })
    opts.onStart?.(child)
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    child.stdout.on('data', (c: string) => { stdout += c })
    child.stderr.on('data', (c: string) => { stderr += c })
    child.stdin.on('error', () => { /* child did not read its input */ })
    child.stdin.end(opts.input ?? '')
    const timer = opts.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
        timedOut = true
        if (child.pid !== undefined) {
          try { process.kill(-child.pid, 'SIGKILL') } catch { child.kill('SIGKILL') }
        }
      }, opts.timeoutMs)
    child.on('error', e => {
      clearTimeout(timer)
      resolve({ stdout, stderr: stderr + String(e), code: -1 })
    })
    child.on('close', (code, sig) => {
      clearTimeout(timer)
      if (timedOut) resolve({ stdout, stderr, code: 124 })
      else if (code !== null) resolve({ stdout, stderr, code })
      else resolve({ stdout, stderr, code: 128 + (sig === null ? 0 : osConstants.signals[sig]) })
    })
  })
}
