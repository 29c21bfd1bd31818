// The closing line of test/summary-reporter.ts tells the truth: suites that fail in a hook, modules
// that throw at import and unhandled errors count as failed, and a red run never says 0 failed.
// Runs vitest on the fixtures in test/fixtures/reporter (never matched by the main include globs).
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { summarize } from '../summary-reporter.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const CONFIG = 'test/fixtures/reporter/vitest.config.ts'

interface Run { code: number | null, line: string | undefined, output: string }

// The vitest CLI of this checkout, on this Node, against only the fixtures whose names match `filters`.
async function runFixtures (...filters: string[]): Promise<Run> {
  const child = spawn(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--config', CONFIG, ...filters],
    { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr.on('data', (d: Buffer) => { output += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  return { code, line: output.split('\n').filter((l) => l.startsWith('vitest: ')).at(-1), output }
}

describe('summary reporter', () => {
  it('counts a suite whose beforeAll throws as failed, though every test in the module passed or was skipped', async () => {
    const r = await runFixtures('before-all-throws')
    expect(r.line, r.output).toBe('vitest: 1 passed, 1 failed, 2 skipped')
    expect(r.code).not.toBe(0)
  })

  it('counts a module that throws at import, a module afterAll that throws and an unhandled rejection as failed', async () => {
    const r = await runFixtures('import-throws', 'after-all-throws', 'unhandled')
    expect(r.line, r.output).toBe('vitest: 2 passed, 3 failed, 0 skipped')
    expect(r.code).not.toBe(0)
  })

  it('counts every kind of failure once over a mixed run', async () => {
    // passed: passing, after-all, before-all (outside the suite), unhandled; failed: the test that
    // fails, the beforeAll suite, the import, the afterAll, the unhandled rejection.
    const r = await runFixtures()
    expect(r.line, r.output).toBe('vitest: 4 passed, 5 failed, 3 skipped')
    expect(r.code).not.toBe(0)
  })

  it('says 0 failed on a green run and exits 0', async () => {
    const r = await runFixtures('passing')
    expect(r.line, r.output).toBe('vitest: 1 passed, 0 failed, 1 skipped')
    expect(r.code).toBe(0)
  })

  it('never says 0 failed when vitest ends the run as interrupted or failed with nothing counted', () => {
    // an interrupted run (bail, a cancelled run) can end before any test failed; a run with no
    // test files fails with no module at all
    expect(summarize([], [], 'interrupted')).toEqual({ passed: 0, failed: 1, skipped: 0 })
    expect(summarize([], [], 'failed')).toEqual({ passed: 0, failed: 1, skipped: 0 })
    expect(summarize([], [], 'passed')).toEqual({ passed: 0, failed: 0, skipped: 0 })
  })

  it('a run with no test files says 1 failed and exits non-zero', async () => {
    const r = await runFixtures('no-such-fixture')
    expect(r.line, r.output).toBe('vitest: 0 passed, 1 failed, 0 skipped')
    expect(r.code).not.toBe(0)
  })
})
