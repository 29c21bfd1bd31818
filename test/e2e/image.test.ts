// The image built from manifests/Dockerfile (test/image/build.sh) runs what the chart runs, the
// way a kubelet starts it: the archive's own config (env, working dir), run with runc on a
// read-only root filesystem, every capability dropped except the agent's NET_ADMIN, NET_RAW and
// NET_BIND_SERVICE, no privilege escalation, the host's xtables lock and /lib/modules mounted,
// a writable /var/lib/edgemesh. Its own network namespace (not the host's, as hostNetwork would
// give): the bridge and the iptables rules it creates vanish with it. Cold: a few minutes (the
// base image and the build are cached under ~/.cache/edgemesh/image afterwards).
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureImage, type BuiltImage } from '../image/image.ts'
import { runCapture, type ExecResult } from '../lab/proc.ts'
import { eventually } from '../lab/wait.ts'

const CAPS = ['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_NET_BIND_SERVICE']
const ROOTFS_SH = join(import.meta.dirname, '..', 'image', 'rootfs.sh')
const NAME = `emimg-${process.pid}`

interface ImageConfig { Env?: string[], WorkingDir?: string, Entrypoint?: string[] }

let image: BuiltImage
let config: ImageConfig
let rootfs: string
let dir: string
let runs = 0

/** the image config inside the docker-archive, as a runtime reads it */
function archiveConfig (archive: string): ImageConfig {
  const manifest = JSON.parse(execFileSync('tar', ['-xOf', archive, 'manifest.json'], { encoding: 'utf8' }))
  const cfg = JSON.parse(execFileSync('tar', ['-xOf', archive, manifest[0].Config], { encoding: 'utf8', maxBuffer: 16 << 20 }))
  return cfg.config
}

/** a runc bundle that runs argv in the image as the chart's agent container runs (see the header) */
function bundleFor (argv: string[]): { id: string, bundle: string } {
  const id = `${NAME}-${++runs}`
  const bundle = join(dir, id)
  mkdirSync(bundle)
  const bind = (source: string, destination: string, mode: 'ro' | 'rw'): object =>
    ({ destination, type: 'bind', source, options: ['rbind', mode] })
  const spec = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: argv,
      env: config.Env ?? [],
      cwd: config.WorkingDir ?? '/',
      capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS },
      noNewPrivileges: true
    },
    root: { path: rootfs, readonly: true },
    hostname: 'edgemesh-image-test',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      bind(join(dir, 'xtables.lock'), '/run/xtables.lock', 'rw'),
      bind(join(dir, 'data'), '/var/lib/edgemesh', 'rw'),
      ...(existsSync('/lib/modules') ? [bind('/lib/modules', '/lib/modules', 'ro')] : [])
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      cgroupsPath: `/edgemesh-image-test/${id}`,
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']
    }
  }
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec))
  return { id, bundle }
}

const runc = (...args: string[]): string[] => ['runc', '--root', join(dir, 'runc'), ...args]

async function runInImage (argv: string[]): Promise<ExecResult> {
  const { id, bundle } = bundleFor(argv)
  return await runCapture(runc('run', '--bundle', bundle, id), { timeoutMs: 60_000 })
}

/** stdout of a run that must succeed; its stderr in the failure otherwise */
function ok (r: ExecResult): string {
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}${r.stdout}`)
  return r.stdout
}

describe('the edgemesh image (manifests/Dockerfile, built with buildah)', () => {
  beforeAll(async () => {
    image = await ensureImage()
    console.log(`[image] ${image.ref}: ${(image.sizeBytes / 2 ** 20).toFixed(0)} MiB uncompressed, archive ${(image.archiveBytes / 2 ** 20).toFixed(0)} MiB, ` +
      `build ${(image.buildMs / 1000).toFixed(0)} s${image.cached ? ' (cached)' : ''}`)
    config = archiveConfig(image.archive)
    dir = mkdtempSync(join(tmpdir(), 'edgemesh-image-test-'))
    mkdirSync(join(dir, 'data'))
    writeFileSync(join(dir, 'xtables.lock'), '')
    rootfs = execFileSync('bash', [ROOTFS_SH, 'mount', image.archive, NAME], { encoding: 'utf8' }).trim()
  }, 900_000)

  afterAll(() => {
    try {
      if (rootfs !== undefined) execFileSync('bash', [ROOTFS_SH, 'rm', NAME])
    } finally {
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
      // the runs' parent cgroup, once empty (a concurrent run's containers keep it: rmdir fails)
      for (const d of ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((h) => join('/sys/fs/cgroup', h))]) {
        try { rmdirSync(join(d, 'edgemesh-image-test')) } catch { /* absent, busy, or not a hierarchy */ }
      }
    }
  })

  it('is the chart\'s image: named after Chart.yaml\'s appVersion, Node 24, GLIBC_TUNABLES set', async () => {
    const appVersion = /^appVersion: *"?([^"\n]+)"?$/m.exec(readFileSync(join(import.meta.dirname, '..', '..', 'manifests', 'helm', 'edgemesh', 'Chart.yaml'), 'utf8'))?.[1]
    expect(image.ref).toBe(`ghcr.io/edgemesh-ts/edgemesh:${appVersion}`)
    expect(statSync(image.archive).size).toBe(image.archiveBytes)
    expect(config.WorkingDir).toBe('/app')
    expect(config.Entrypoint).toEqual(['node'])
    expect(config.Env).toContain('GLIBC_TUNABLES=glibc.malloc.mmap_threshold=16384')
    expect(ok(await runInImage(['node', '-p', '`${process.version} ${process.env.GLIBC_TUNABLES} ${process.env.NODE_ENV}`'])))
      .toMatch(/^v24\.\d+\.\d+ glibc\.malloc\.mmap_threshold=16384 production\n$/)
  })

  it('runs the three binaries and loads the native UDP module', async () => {
    expect(ok(await runInImage(['node', 'bin/edgemesh-agent.js', '--help']))).toContain('usage: edgemesh-agent --config FILE')
    expect(ok(await runInImage(['node', 'bin/edgemesh-server.js', '--help']))).toContain('usage: edgemesh-server [--config FILE]')
    expect(ok(await runInImage(['node', 'bin/edgemesh.js', '--help']))).toContain('usage: edgemesh [--socket PATH] <command>')
    expect(ok(await runInImage(['node', '--input-type=module', '-e', 'const { default: UDX } = await import("udx-native"); console.log(typeof new UDX().createSocket)'])))
      .toBe('function\n')
  })

  it('writes its identity to the mounted /var/lib/edgemesh on a read-only root', async () => {
    const peerId = ok(await runInImage(['node', 'bin/edgemesh-server.js', '--print-peer-id']))
    expect(peerId).toMatch(/^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}\n$/)
    expect(statSync(join(dir, 'data', 'server.key')).size).toBeGreaterThan(0)
    // the root really is read-only: anything the binaries wrote elsewhere would fail like this
    const write = await runInImage(['node', '-e', 'require("fs").writeFileSync("/app/probe", "x")'])
    expect(write.code).not.toBe(0)
    expect(write.stderr).toContain('EROFS')
  })

  it('runs the relay as PID 1 (its full module graph loads) and stops it cleanly on SIGTERM, what the kubelet sends', async () => {
    const { id, bundle } = bundleFor(['node', '--max-semi-space-size=2', '--heap-growing-percent=25', 'bin/edgemesh-server.js'])
    const [cmd, ...args] = runc('run', '--bundle', bundle, id)
    const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c })
    child.stderr.setEncoding('utf8').on('data', (c: string) => { out += c })
    const exited = new Promise<number | null>(resolve => child.on('close', code => { resolve(code) }))
    try {
      await eventually(async () => { expect(out).toContain('"msg":"edgemesh-server ready"') }, 60_000, 200)
      expect((await runCapture(runc('kill', id, 'TERM'))).code).toBe(0)
      // node as PID 1 gets no default SIGTERM action: only the server's own handler ends it
      expect(await exited, out).toBe(0)
    } finally {
      await runCapture(runc('delete', '--force', id))
      child.kill('SIGKILL')
    }
  })

  it('has the tools the agent runs: ip (bridge), both iptables backends, conntrack', async () => {
    expect(ok(await runInImage(['sh', '-c',
      'ip link add edgemesh0 type bridge && ip addr replace 169.254.96.16/32 dev edgemesh0 && ip -o addr show dev edgemesh0'])))
      .toMatch(/edgemesh0\s+inet 169\.254\.96\.16\/32 /)
    for (const backend of ['nft', 'legacy']) {
      // the agent's detection (agent/proxy/iptables.ts) reads iptables-<backend>-save -t nat and
      // writes with iptables-<backend>-restore -w (the xtables lock: mounted, the root is read-only)
      const out = ok(await runInImage(['sh', '-c',
        `printf '*nat\\n:EDGEMESH-IMAGE-TEST - [0:0]\\nCOMMIT\\n' | iptables-${backend}-restore -w 5 --noflush && iptables-${backend}-save -t nat`]))
      expect(out, backend).toContain(':EDGEMESH-IMAGE-TEST - [0:0]')
    }
    expect(ok(await runInImage(['conntrack', '--version']))).toMatch(/^conntrack v1\.\d+\.\d+ \(conntrack-tools\)/)
  })
})
