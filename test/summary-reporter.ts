// Prints one plain closing line ("vitest: N passed, N failed, N skipped") that CI log readers
// recognise regardless of the test runner. "failed" counts every failure vitest knows of, so
// the line never says 0 failed on a red run: failed tests, each suite or module with errors of
// its own (a throwing beforeAll/afterAll, a module that throws at import), and unhandled errors.
import type { Reporter, TestModule, TestRunEndReason, TestSuite } from 'vitest/node'

export interface Summary { passed: number, failed: number, skipped: number }

export function summarize (testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>, reason: TestRunEndReason): Summary {
  let passed = 0; let failed = 0; let skipped = 0
  for (const m of testModules) {
    let failedTests = 0
    for (const t of m.children.allTests()) {
      const s = t.result().state
      if (s === 'passed') passed++
      else if (s === 'failed') failedTests++
      else skipped++
    }
    failed += failedTests
    // A hook error lands on the suite (or module) that owns the hook; the tests under a failed
    // beforeAll are reported skipped, so the suite itself is the failure to count.
    const containers: Array<TestModule | TestSuite> = [m, ...m.children.allSuites()]
    const erroredContainers = containers.filter((c) => c.errors().length > 0).length
    failed += erroredContainers
    // A module vitest marks failed for a reason neither a test nor an own error explains.
    if (m.state() === 'failed' && failedTests === 0 && erroredContainers === 0) failed++
  }
  failed += unhandledErrors.length
  // Last resort: vitest says the run did not pass and nothing above counted: it failed (no test
  // files matched, and passWithNoTests is off) or was interrupted (bail, a cancelled run), where
  // the tests that never ran are reported skipped and none may have failed yet.
  if (reason !== 'passed' && failed === 0) failed = 1
  return { passed, failed, skipped }
}

export default class SummaryReporter implements Reporter {
  onTestRunEnd (testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>, reason: TestRunEndReason): void {
    const { passed, failed, skipped } = summarize(testModules, unhandledErrors, reason)
    process.stdout.write(`\nvitest: ${passed} passed, ${failed} failed, ${skipped} skipped\n`)
  }
}
