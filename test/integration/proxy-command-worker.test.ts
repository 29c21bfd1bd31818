// The proxy's commands run from a worker thread: output, stdin, exit codes, a missing binary
// (the message the proxy matches on ENOENT), the timeout, many at once, a restart after close,
// and a process that holds nothing else open waits for its command and then exits.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { closeCommandWorker, crashCommandWorkerForTest, runCommand, spawnCommand } from '../../agent/proxy/command-worker.ts'

describe('command worker', () => {
  it('runs commands with their input, and reports exit codes and output like a direct spawn', async () => {
    const echo = await runCommand('sh', ['-c', 'cat; echo err >&2; exit 3'], 'payload\n')
    expect(echo).toEqual({ code: 3, stdout: 'payload\n', stderr: 'err\n' })
    expect(await spawnCommand('sh', ['-c', 'cat; echo err >&2; exit 3'], 'payload\n')).toEqual(echo)
    const big = await runCommand('head', ['-c', String(4 << 20), '/dev/zero'])
    expect(big.stdout.length).toBe(4 << 20)
  })

  it('a missing binary rejects with "<cmd>: ... ENOENT"; a command past its timeout is killed', async () => {
    await expect(runCommand('edgemesh-no-such-binary', [])).rejects.toThrow(/^edgemesh-no-such-binary: .*ENOENT/)
    const slow = await runCommand('sleep', ['5'], undefined, 200)
    expect(slow.code).toBe(-1) // killed by SIGKILL: no exit code
  })

  it('runs 50 at once, each answered with its own output, and starts again after close', async () => {
    const all = await Promise.all(Array.from({ length: 50 }, async (_, i) => await runCommand('echo', [`n${i}`])))
    expect(all.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 50 }, (_, i) => `n${i}`))
    await closeCommandWorker()
    expect((await runCommand('echo', ['again'])).stdout).toBe('again\n')
    await closeCommandWorker()
  })

  it('a worker that dies is replaced; after two deaths commands run on the calling thread, still answered', async () => {
    for (let death = 0; death < 3; death++) {
      const inFlight = runCommand('sleep', ['0.3'])
      await crashCommandWorkerForTest()
      if (death < 2) await expect(inFlight).rejects.toThrow(/command worker/)
      else expect((await inFlight).code).toBe(0) // no worker any more: spawned here, not cut by the "crash"
      expect((await runCommand('echo', [`after ${death}`])).stdout).toBe(`after ${death}\n`)
    }
  })

  it('a command in flight keeps the process alive; an idle worker does not', async () => {
    const mod = join(import.meta.dirname, '../../agent/proxy/command-worker.ts')
    const script = `const m = await import(${JSON.stringify(mod)}); const r = await m.runCommand('sh', ['-c', 'sleep 0.3; echo done']); console.log(r.stdout.trim())`
    const t0 = performance.now()
    const r = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 })
    expect(r.stdout.trim()).toBe('done') // exit code 0: not cut short (13, unsettled await) nor hung (killed by the timeout)
    expect(performance.now() - t0).toBeLessThan(15_000)
  })
})
