import { defineConfig } from 'vitest/config'

// Unit tests are pure and fast; e2e tests build network-namespace labs and start real
// processes, so they run one file at a time (2 cores) with generous timeouts.
export default defineConfig({
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts'],
          testTimeout: 60_000
        }
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 120_000
        }
      }
    ]
  }
})
