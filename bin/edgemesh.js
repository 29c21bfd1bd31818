#!/usr/bin/env node
// Runs the TypeScript sources directly (Node 24 strips types); see README.
import { main } from '../agent/control/cli.ts'
import { runMain } from '../shared/cli-main.ts'
runMain(() => main(process.argv.slice(2)), { stack: false })
