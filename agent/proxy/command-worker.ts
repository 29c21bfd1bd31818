// Runs the proxy's commands (iptables-restore, iptables -S, conntrack) from a worker thread.
// spawn() forks the whole agent, and fork() copies its page tables on the calling thread: on a
// busy node that blocked the agent's event loop for 12-190 ms per command (measured on the
// 2-core lab machine, ~100 MB RSS), stalling the first connections to a Service just
// programmed. From a worker the main thread keeps serving (same machine: a 2-70 ms worst lag
// over 10 spawns instead of 57-194 ms). One worker, started on first use, holding the process
// open only while a command runs, closed with closeCommandWorker(); a worker that cannot start,
// or that died twice, gives way to spawning on the calling thread (slower, but the proxy syncs).
import { spawn } from 'node:child_process'
import { Worker } from 'node:worker_threads'

export interface CommandResult { code: number, stdout: string, stderr: string }

interface Request { id: number, cmd: string, args: string[], input: string, timeoutMs: number }
type Reply = { id: number, result: CommandResult } | { id: number, error: string }

/** One command on this thread; rejects only when it could not be started (message `cmd: reason`). */
export async function spawnCommand (cmd: string, args: string[], input = '', timeoutMs = 60_000): Promise<CommandResult> {
  return await new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    child.on('error', (e) => { clearTimeout(timer); reject(new Error(`${cmd}: ${e.message}`)) })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() })
    })
    child.stdin.on('error', () => { /* the command exited without reading */ })
    child.stdin.end(input)
  })
}

// the worker's body: spawnCommand again, eval'd (no file to find from dist/ or the sources); it
// may be parsed as CommonJS or, with --input-type=module inherited, as a module: no require/import
const WORKER_SOURCE = `
const { parentPort } = process.getBuiltinModule('node:worker_threads')
const { spawn } = process.getBuiltinModule('node:child_process')
parentPort.on('message', (q) => {
  let child
  try { child = spawn(q.cmd, q.args, { stdio: ['pipe', 'pipe', 'pipe'] }) } catch (e) { parentPort.postMessage({ id: q.id, error: q.cmd + ': ' + e.message }); return }
  const out = []; const err = []
  const timer = setTimeout(() => { child.kill('SIGKILL') }, q.timeoutMs)
  child.stdout.on('data', (b) => out.push(b))
  child.stderr.on('data', (b) => err.push(b))
  let done = false
  child.on('error', (e) => { if (done) return; done = true; clearTimeout(timer); parentPort.postMessage({ id: q.id, error: q.cmd + ': ' + e.message }) })
  child.on('close', (code) => {
    if (done) return; done = true; clearTimeout(timer)
    parentPort.postMessage({ id: q.id, result: { code: code == null ? -1 : code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() } })
  })
  child.stdin.on('error', () => {})
  child.stdin.end(q.input)
})
`

class CommandWorker {
  private readonly worker: Worker
  private readonly waiting = new Map<number, { resolve: (r: CommandResult) => void, reject: (e: Error) => void }>()
  private nextId = 1
  broken = false

  constructor () {
    // the cap only bounds a runaway: the old generation grows as needed, and a listing of tens of
    // thousands of Services (tens of MB of text, held while it is posted back) must fit
    this.worker = new Worker(WORKER_SOURCE, { eval: true, resourceLimits: { maxOldGenerationSizeMb: 512 } })
    this.worker.on('message', (m: Reply) => {
      const w = this.waiting.get(m.id)
      if (w == null) return
      this.waiting.delete(m.id)
      if (this.waiting.size === 0) this.worker.unref()
      if ('error' in m) w.reject(new Error(m.error))
      else w.resolve(m.result)
    })
    const fail = (err: Error): void => {
      this.broken = true
      for (const w of this.waiting.values()) w.reject(new Error(`command worker: ${err.message}`))
      this.waiting.clear()
    }
    this.worker.on('error', fail)
    this.worker.on('exit', (code) => { fail(new Error(`exited (${code})`)) })
    this.worker.unref() // idle: it never keeps the agent alive (after the listeners: adding one refs it again)
  }

  async run (q: Omit<Request, 'id'>): Promise<CommandResult> {
    const id = this.nextId++
    return await new Promise((resolve, reject) => {
      if (this.waiting.size === 0) this.worker.ref() // a command in flight keeps the process alive, as a child would
      this.waiting.set(id, { resolve, reject })
      this.worker.postMessage({ ...q, id })
    })
  }

  async close (): Promise<void> { await this.worker.terminate() }
}

let shared: CommandWorker | undefined
/** workers that died under us: after two, commands run on the calling thread for good */
let workerDeaths = 0
const MAX_WORKER_DEATHS = 2

/** Runs a command off the agent's thread (see above); rejects only when it could not be started. */
export async function runCommand (cmd: string, args: string[], input?: string, timeoutMs = 60_000): Promise<CommandResult> {
  if (shared?.broken === true) { workerDeaths++; shared = undefined }
  if (workerDeaths >= MAX_WORKER_DEATHS) return await spawnCommand(cmd, args, input, timeoutMs)
  if (shared == null) {
    try { shared = new CommandWorker() } catch { return await spawnCommand(cmd, args, input, timeoutMs) }
  }
  return await shared.run({ cmd, args, input: input ?? '', timeoutMs })
}

/** Tests: ends the worker as a crash would (its commands in flight reject; the next starts a new one). */
export async function crashCommandWorkerForTest (): Promise<void> { await shared?.close() }

/** Stops the worker (commands after this start a new one). */
export async function closeCommandWorker (): Promise<void> {
  const w = shared
  shared = undefined
  await w?.close()
}
