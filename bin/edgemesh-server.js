#!/usr/bin/env node
// Runs the compiled JavaScript in dist/ (npm run build; npm test, demo and benches build first).
// Compiled code starts faster and uses ~30 MB less memory than stripping types at run time.
import { runMain } from '../dist/shared/cli-main.js'
import { main } from '../dist/server/main.js'
// Node 24's pool for small Buffer.allocUnsafe slices is 64 KiB: a slice the relay keeps for as
// long as an agent is connected (libp2p's peer ids and multiaddrs, seen in heap snapshots)
// pins a whole chunk. 8 KiB chunks pin an eighth of that: ~5 KiB less RSS per agent at 1,000
// agents (test/scale/relay-load.ts)
Buffer.poolSize = 8 * 1024
runMain(() => main(process.argv.slice(2)))
