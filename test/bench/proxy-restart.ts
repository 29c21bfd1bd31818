// restart_gap_ms for `npm run bench:proxy`: the endpoint node's agent (b1) is restarted with
// SIGTERM while the client pod requests the remote Service every 100 ms
// (test/lab/agent-restart.ts). The gap is SIGTERM -> the first successful new request, minus
// the agent's own start-up (spawn -> "edgemesh-agent ready"): what the mesh adds on top of the
// restart itself (shutdown, re-registration, detection, redial). Target <= 2000 ms.
import type { Lab, LabPod } from '../lab/lab.ts'
import type { K8sMesh } from '../lab/k8s-mesh.ts'
import { describeRestart, restartUnderTraffic } from '../lab/agent-restart.ts'

export const RESTART_GAP_TARGET_MS = 2_000

export interface RestartGap {
  restart_gap_ms: number
  /** the agent's own start-up, spawn -> ready */
  restart_startup_ms: number
  /** SIGTERM -> the first successful new request */
  restart_signal_to_ok_ms: number
}

export async function measureRestartGap (lab: Lab, k: K8sMesh, opts: { host: string, client: LabPod, url: string, log: (s: string) => void }): Promise<RestartGap> {
  opts.log(`restart: ${opts.host}'s agent restarted with SIGTERM under a request every 100 ms to ${opts.url}`)
  const r = await restartUnderTraffic(lab, k.mesh, { host: opts.host, client: opts.client, url: opts.url, signal: 'SIGTERM' })
  opts.log(`  ${describeRestart(r)}`)
  return {
    restart_gap_ms: r.signalToFirstOkMs - r.startupMs,
    restart_startup_ms: r.startupMs,
    restart_signal_to_ok_ms: r.signalToFirstOkMs
  }
}
