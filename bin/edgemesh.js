#!/usr/bin/env node
// Runs the compiled JavaScript in dist/ (npm run build).
import { runMain } from '../dist/shared/cli-main.js'
import { main } from '../dist/agent/control/cli.js'
runMain(() => main(process.argv.slice(2)), { stack: false })
