// The proxy's commands run from a worker thread: output, stdin, exit codes, a missing binary
// (the message the proxy matches on ENOENT), the timeout, many at once, and a restart after close.
import { describe, expect, it } from 'vitest'
import { closeCommandWorker, runCommand, spawnCommand } from '../../agent/proxy/command-worker.ts'

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
})
