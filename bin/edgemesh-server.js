#!/usr/bin/env node
// Runs the compiled JavaScript in dist/ (npm run build; npm test, demo and benches build first).
// Compiled code starts faster and uses ~30 MB less memory than stripping types at run time.
import { runMain } from '../dist/shared/cli-main.js'
import { main } from '../dist/server/main.js'
runMain(() => main(process.argv.slice(2)))
