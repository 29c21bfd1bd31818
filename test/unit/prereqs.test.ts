// A fresh machine: test/prereqs.sh (run by npm's pretest, the demo, the benchmarks and .ci/run)
// installs the missing lab tools with apt when it runs as root, and otherwise stops with one line
// giving the command to run. Runs the script with a PATH of stubs (fake `id`, `apt-get` and lab
// tools), so nothing on this machine is installed or removed.
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'

const SCRIPT = fileURLToPath(new URL('../prereqs.sh', import.meta.url))
const LAB_TOOLS = ['ip', 'iptables', 'iptables-restore', 'conntrack', 'nft', 'iperf3', 'dig', 'dnsmasq', 'curl', 'sysctl', 'killall', 'openssl', 'update-ca-certificates', 'sshd', 'ssh', 'scp', 'ssh-keygen', 'nc.openbsd', 'ncat']
const APT_INSTALL = ['install', '-y', '-q', '--no-install-recommends', '-o', 'DPkg::Lock::Timeout=300']

let dir: string
let bin: string
let repo: string
let log: string
let services: string
let policy: string

function stub (path: string, body = 'exit 0'): void {
  writeFileSync(path, `#!/bin/sh\n${body}\n`)
  chmodSync(path, 0o755)
}

// The lab tools on the fake PATH, all but `without`; a fake `id -u` saying `uid`; a fake apt-get
// (unless apt is false) that logs its arguments and environment and "installs" a package by
// copying the commands in repo/<package>/ onto the fake PATH.
// The fake apt-get also notes in services.log what the policy-rc.d said while it ran (as
// invoke-rc.d would ask it), and `installFails` makes its install fail; a fake systemctl logs there too.
function machine (opts: { without?: string[], uid?: number, apt?: boolean, go?: string, installFails?: boolean }): void {
  for (const t of LAB_TOOLS) if (!(opts.without ?? []).includes(t)) stub(join(bin, t))
  stub(join(bin, 'id'), `echo ${opts.uid ?? 0}`)
  stub(join(bin, 'systemctl'), `echo "systemctl $*" >> ${services}`)
  if (opts.apt !== false) {
    stub(join(bin, 'apt-get'), [
      `echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND stdin=$(/bin/readlink /proc/$$/fd/0) $*" >> ${log}`,
      `if [ -x ${policy} ]; then ${policy}; echo "$1: policy-rc.d exits $?" >> ${services}; else echo "$1: no policy-rc.d" >> ${services}; fi`,
      opts.installFails === true ? 'if [ "$1" = install ]; then exit 100; fi' : '',
      'if [ "$1" = install ]; then for p in "$@"; do [ -d "' + repo + '/$p" ] && /bin/cp "' + repo + '/$p"/* "' + bin + '/"; done; fi',
      'exit 0'
    ].join('\n'))
  }
  if (opts.go != null) stub(join(bin, 'go'), `echo "go version ${opts.go} linux/amd64"`)
}

function repoPackage (pkg: string, commands: string[]): void {
  mkdirSync(join(repo, pkg), { recursive: true })
  for (const c of commands) stub(join(repo, pkg, c))
}

function run (args: string[], env: Record<string, string> = {}): { status: number | null, stderr: string, apt: string[] } {
  const r = spawnSync('/bin/bash', [SCRIPT, ...args], {
    env: { PATH: bin, HOME: dir, EDGEMESH_BIN: join(dir, 'cp-bin'), EDGEMESH_LOCAL_GO: join(dir, 'no-go'), EDGEMESH_SBIN_DIRS: join(dir, 'sbin'), EDGEMESH_POLICY_RC_D: policy, ...env },
    input: '', // stdin is a pipe: apt-get must get /dev/null from the script itself
    encoding: 'utf8'
  })
  const apt = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []
  return { status: r.status, stderr: r.stderr, apt }
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'prereqs-'))
  bin = join(dir, 'bin'); repo = join(dir, 'repo'); log = join(dir, 'apt.log')
  services = join(dir, 'services.log'); policy = join(dir, 'policy-rc.d')
  mkdirSync(bin); mkdirSync(repo); mkdirSync(join(dir, 'sbin'))
})
afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

describe('test prerequisites (test/prereqs.sh)', () => {
  it('as root with apt: updates once, then installs exactly the missing package, noninteractively with no stdin', () => {
    machine({ without: ['iptables', 'iptables-restore'] })
    repoPackage('iptables', ['iptables', 'iptables-restore'])
    const r = run(['lab'])
    expect(r.status, r.stderr).toBe(0)
    expect(r.apt).toEqual([
      'DEBIAN_FRONTEND=noninteractive stdin=/dev/null update -q',
      `DEBIAN_FRONTEND=noninteractive stdin=/dev/null ${APT_INSTALL.join(' ')} iptables`
    ])
    expect(existsSync(join(bin, 'iptables'))).toBe(true)
    expect(r.stderr).toContain('installing iptables (missing iptables iptables-restore)')
  })

  it('names each package once for several missing tools, and adds dnsperf only when asked', () => {
    machine({ without: ['iptables', 'dig', 'dnsmasq'] })
    repoPackage('iptables', ['iptables']); repoPackage('dnsutils', ['dig']); repoPackage('dnsmasq-base', ['dnsmasq']); repoPackage('dnsperf', ['dnsperf'])
    const r = run(['lab', 'dnsperf'])
    expect(r.status, r.stderr).toBe(0)
    expect(r.apt.at(-1)).toBe(`DEBIAN_FRONTEND=noninteractive stdin=/dev/null ${APT_INSTALL.join(' ')} iptables dnsutils dnsmasq-base dnsperf`)
    expect(r.apt).toHaveLength(2)
  })

  describe('no daemon starts because of the install (openssh-server would start the host\'s sshd on :22)', () => {
    const servicesLog = (): string[] => existsSync(services) ? readFileSync(services, 'utf8').trim().split('\n') : []

    it('a policy-rc.d answering 101 while apt-get install runs, removed afterwards; the ssh service it installed is disabled', () => {
      machine({ without: ['sshd'] })
      repoPackage('openssh-server', ['sshd'])
      const r = run(['lab'])
      expect(r.status, r.stderr).toBe(0)
      expect(r.apt.at(-1)).toBe(`DEBIAN_FRONTEND=noninteractive stdin=/dev/null ${APT_INSTALL.join(' ')} openssh-server`)
      expect(servicesLog()).toEqual(['update: no policy-rc.d', 'install: policy-rc.d exits 101', 'systemctl disable --quiet ssh.service ssh.socket'])
      expect(existsSync(policy)).toBe(false)
      expect(r.stderr).toContain('its ssh service stays disabled and stopped')
    })

    it('other packages: the same hold during the install, no systemctl', () => {
      machine({ without: ['iperf3'] })
      repoPackage('iperf3', ['iperf3'])
      expect(run(['lab']).status).toBe(0)
      expect(servicesLog()).toEqual(['update: no policy-rc.d', 'install: policy-rc.d exits 101'])
      expect(existsSync(policy)).toBe(false)
    })

    it('apt-get install failing: the policy-rc.d is still removed', () => {
      machine({ without: ['sshd'], installFails: true })
      const r = run(['lab'])
      expect(r.status).toBe(1)
      expect(r.stderr.trim().split('\n').at(-1)).toContain('test prerequisites: apt-get install failed')
      expect(servicesLog()).toEqual(['update: no policy-rc.d', 'install: policy-rc.d exits 101'])
      expect(existsSync(policy)).toBe(false)
    })

    it('an admin\'s own policy-rc.d is used as it is and left in place', () => {
      machine({ without: ['sshd'] })
      repoPackage('openssh-server', ['sshd'])
      writeFileSync(policy, '#!/bin/sh\nexit 0\n'); chmodSync(policy, 0o755)
      expect(run(['lab']).status).toBe(0)
      expect(servicesLog().slice(0, 2)).toEqual(['update: policy-rc.d exits 0', 'install: policy-rc.d exits 0'])
      expect(readFileSync(policy, 'utf8')).toBe('#!/bin/sh\nexit 0\n')
    })
  })

  it('does nothing when every tool is present', () => {
    machine({})
    const r = run(['lab'])
    expect([r.status, r.stderr, r.apt]).toEqual([0, '', []])
  })

  it('not root: stops at once with one line giving the exact command, and installs nothing', () => {
    machine({ without: ['iptables', 'iptables-restore', 'dig'], uid: 1000 })
    const r = run(['lab'])
    expect(r.status).toBe(1)
    expect(r.stderr).toBe('test prerequisites: missing iptables iptables-restore dig; as root run: ' +
      'apt-get update && apt-get install -y --no-install-recommends iptables dnsutils (npm test needs root for its network labs)\n')
    expect(r.apt).toEqual([])
  })

  it('no apt: stops at once with one line naming the tools and their Debian packages', () => {
    machine({ without: ['conntrack'], apt: false })
    const r = run(['lab'])
    expect(r.status).toBe(1)
    expect(r.stderr).toBe('test prerequisites: missing conntrack and this machine has no apt-get; install the packages that provide them (Debian: conntrack), then run npm test as root again\n')
  })

  it('fails when the installed package still leaves the tool out of PATH', () => {
    machine({ without: ['iperf3'] })
    const r = run(['lab'])
    expect(r.status).toBe(1)
    expect(r.stderr.trim().split('\n').at(-1)).toBe(`test prerequisites: installed the packages but iperf3 still not in PATH (${bin})`)
  })

  it('a tool installed in an sbin directory missing from PATH: the line says to extend PATH, apt is not run', () => {
    machine({ without: ['iptables'] })
    stub(join(dir, 'sbin', 'iptables'))
    const r = run(['lab'])
    expect(r.status).toBe(1)
    expect(r.stderr).toBe(`test prerequisites: iptables installed but not in PATH; run: export PATH="$PATH:${join(dir, 'sbin')}" (npm test needs root for its network labs)\n`)
    expect(r.apt).toEqual([])
  })

  describe('Go for the control plane build', () => {
    const cached = (): void => {
      mkdirSync(join(dir, 'cp-bin'))
      for (const b of ['etcd', 'kube-apiserver', 'helm']) stub(join(dir, 'cp-bin', b))
    }

    it('no Go anywhere and nothing cached: one line with the download command', () => {
      machine({})
      const r = run([])
      expect(r.status).toBe(1)
      expect(r.stderr).toMatch(/^test prerequisites: Go >= 1\.26 is needed once .* install it: curl -fsSL https:\/\/go\.dev\/dl\/go1\.26\.\d+\.linux-(amd64|arm64)\.tar\.gz \| tar -C \/usr\/local -xz\n$/)
    })

    it('Go too old in PATH: one line saying which go and what it reports', () => {
      machine({ go: 'go1.19.8' })
      const r = run(['controlplane'])
      expect(r.status).toBe(1)
      expect(r.stderr).toContain(`${join(bin, 'go')} says 'go version go1.19.8 linux/amd64'`)
    })

    it('Go 1.26 in PATH, or only in /usr/local/go (build.sh adds it to PATH), or the binaries already cached: passes', () => {
      machine({ go: 'go1.26.8' })
      expect(run([]).status).toBe(0)
      rmSync(join(bin, 'go'))
      stub(join(dir, 'local-go'), 'echo "go version go1.27.0 linux/amd64"')
      expect(run([], { EDGEMESH_LOCAL_GO: join(dir, 'local-go') }).status).toBe(0)
      cached()
      expect(run([]).status).toBe(0)
    })
  })
})
