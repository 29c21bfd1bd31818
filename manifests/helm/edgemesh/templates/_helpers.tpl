{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "edgemesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix: the release name, plus the chart name unless the release name contains it.
Room is left for the "-server" / "-agent" suffixes.
*/}}
{{- define "edgemesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "edgemesh.server.fullname" -}}
{{- printf "%s-server" (include "edgemesh.fullname" .) }}
{{- end }}

{{- define "edgemesh.agent.fullname" -}}
{{- printf "%s-agent" (include "edgemesh.fullname" .) }}
{{- end }}

{{- define "edgemesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "edgemesh.labels" -}}
helm.sh/chart: {{ include "edgemesh.chart" . }}
{{ include "edgemesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgemesh
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "edgemesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgemesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edgemesh.server.labels" -}}
{{ include "edgemesh.labels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "edgemesh.server.selectorLabels" -}}
{{ include "edgemesh.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "edgemesh.agent.labels" -}}
{{ include "edgemesh.labels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "edgemesh.agent.selectorLabels" -}}
{{ include "edgemesh.selectorLabels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "edgemesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "edgemesh.server.serviceAccountName" -}}
{{- if .Values.server.serviceAccount.create }}
{{- default (include "edgemesh.server.fullname" .) .Values.server.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.server.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "edgemesh.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "edgemesh.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Kubernetes mode: "true" when the agents read Services, EndpointSlices and Nodes from the API and
publish their peer records as Leases (RBAC, the peer-record policy and an API token come with
it); empty in standalone mode (static agent.peers). dig: values reused from a release older
than the switch lack agent.kubernetes.
*/}}
{{- define "edgemesh.agent.kubernetes.enabled" -}}
{{- if and .Values.agent.enabled (dig "kubernetes" "enabled" true .Values.agent) }}true{{ end }}
{{- end }}

{{/*
The agents' API username (what RBAC subjects and the peer-record policy match on).
*/}}
{{- define "edgemesh.agent.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "edgemesh.agent.serviceAccountName" .) }}
{{- end }}

{{/*
Name of the ValidatingAdmissionPolicy (and its binding) that pins each agent to its own Lease.
*/}}
{{- define "edgemesh.agent.peerRecordPolicyName" -}}
{{- printf "%s-peer-record" (include "edgemesh.agent.fullname" .) }}
{{- end }}

{{/*
Node-local DNS: "true" when the agents run it (agent.dns.enabled), else empty. dig: values reused
from a release older than agent.dns get the chart's default (on).
*/}}
{{- define "edgemesh.agent.dns.enabled" -}}
{{- if and .Values.agent.enabled (dig "dns" "enabled" true .Values.agent) }}true{{ end }}
{{- end }}

{{/*
ClusterIP proxy: "true" when the agents run it, else empty. agent.proxy.enabled unset (null, the
default; or values reused from a release older than agent.proxy): on in Kubernetes mode, off in
standalone mode. Explicitly on in standalone mode fails: the proxy needs the catalog.
*/}}
{{- define "edgemesh.agent.proxy.enabled" -}}
{{- if .Values.agent.enabled }}
{{- $on := dig "proxy" "enabled" nil .Values.agent }}
{{- $kube := include "edgemesh.agent.kubernetes.enabled" . }}
{{- if not (kindIs "bool" $on) }}
{{- if $kube }}true{{ end }}
{{- else if and $on (not $kube) }}
{{- fail "\n\nagent.proxy.enabled is true but agent.kubernetes.enabled is false: the ClusterIP proxy needs the agents' service catalog (Services and EndpointSlices from the Kubernetes API), which standalone mode does not have.\nEither set agent.proxy.enabled=false (or leave it unset: it follows agent.kubernetes.enabled), or run the agents in Kubernetes mode (agent.kubernetes.enabled=true, Kubernetes >= 1.30)." }}
{{- else if $on }}true
{{- end }}
{{- end }}
{{- end }}

{{/*
SOCKS5: "true" when the agents run it (agent.socks5.enabled, off by default), else empty. dig:
values reused from a release older than agent.socks5 get the default (off).
*/}}
{{- define "edgemesh.agent.socks5.enabled" -}}
{{- if and .Values.agent.enabled (dig "socks5" "enabled" false .Values.agent) }}true{{ end }}
{{- end }}

{{/*
Where the agent container sees the SOCKS5 credentials (agent.socks5.auth.existingSecret), or empty.
Its own directory: not nested in /etc/edgemesh (a projected volume).
*/}}
{{- define "edgemesh.agent.socks5.authDir" -}}
{{- if and (include "edgemesh.agent.socks5.enabled" .) (dig "socks5" "auth" "existingSecret" "" .Values.agent) }}/etc/edgemesh-socks5{{ end }}
{{- end }}

{{/*
Where the agent container sees the NODE's /etc/resolv.conf (the DNS upstreams' default). Not
under /etc/edgemesh: the kubelet pre-creates mount points nested in that projected volume as
directories, and a file cannot be mounted on a directory.
*/}}
{{- define "edgemesh.agent.dns.hostResolvConf" -}}
/host/etc/resolv.conf
{{- end }}

{{/*
The agent container's securityContext: agent.securityContext plus the capabilities the enabled
features need, unless already there. Proxy: NET_ADMIN (write the nat rules, put its address on
the edgemesh0 bridge) and NET_RAW (iptables-legacy talks to the kernel over a raw socket). DNS:
NET_ADMIN (create the edgemesh0 bridge and put the listen address on it) and NET_BIND_SERVICE
(bind port 53). SOCKS5: NET_ADMIN (its listen address on the bridge).
*/}}
{{- define "edgemesh.agent.securityContext" -}}
{{- $sc := deepCopy (.Values.agent.securityContext | default dict) }}
{{- $need := list }}
{{- if include "edgemesh.agent.proxy.enabled" . }}{{ $need = concat $need (list "NET_ADMIN" "NET_RAW") }}{{ end }}
{{- if include "edgemesh.agent.dns.enabled" . }}{{ $need = concat $need (list "NET_ADMIN" "NET_BIND_SERVICE") }}{{ end }}
{{- if include "edgemesh.agent.socks5.enabled" . }}{{ $need = concat $need (list "NET_ADMIN") }}{{ end }}
{{- if $need }}
{{- $caps := get $sc "capabilities" | default dict }}
{{- $add := get $caps "add" | default list }}
{{- range $need }}
{{- if not (has . $add) }}{{ $add = append $add . }}{{ end }}
{{- end }}
{{- $_ := set $caps "add" $add }}
{{- $_ := set $sc "capabilities" $caps }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/*
PSK: "true" when the relay and the agents get a swarm.key (the default), empty with
psk.enabled=false. dig: values reused from a release older than psk.enabled get the default.
*/}}
{{- define "edgemesh.psk.enabled" -}}
{{- if (dig "enabled" true .Values.psk) }}true{{ end }}
{{- end }}

{{/*
"true" when the chart owns the PSK Secret (no psk.existingSecret) and something mounts it.
*/}}
{{- define "edgemesh.psk.created" -}}
{{- if and (include "edgemesh.psk.enabled" .) (not .Values.psk.existingSecret) (or .Values.server.enabled .Values.agent.enabled) }}true{{ end }}
{{- end }}

{{- define "edgemesh.psk.secretName" -}}
{{- .Values.psk.existingSecret | default (printf "%s-psk" (include "edgemesh.fullname" .)) }}
{{- end }}

{{/*
The swarm.key file content (libp2p pnet v1: "/key/swarm/psk/1.0.0/\n/base16/\n<64 hex>", no
trailing newline; @libp2p/pnet decodes it, and agents MAC their registrations with its exact
bytes, so every copy must be byte-identical). psk.key when given; otherwise the bytes the
release's Secret already holds (`lookup`: kept across upgrades and reinstalls); otherwise a new
random key (sha256 of 64 random alphanumerics: 64 lowercase hex). Computed once per render
(memo in .Values.psk._file) so the Secret and the checksum annotations agree. `helm template`
cannot look up, so it renders a fresh key each time.
*/}}
{{- define "edgemesh.psk.file" -}}
{{- if not (hasKey .Values.psk "_file") }}
{{- $file := "" }}
{{- if .Values.psk.key }}
{{- $file = printf "/key/swarm/psk/1.0.0/\n/base16/\n%s" (lower .Values.psk.key) }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "edgemesh.psk.secretName" .) | default dict }}
{{- $kept := dig "data" .Values.psk.secretKey "" $existing }}
{{- if $kept }}
{{- $file = b64dec $kept }}
{{- else if not .Values.server.enabled }}
{{- fail (printf "\n\nserver.enabled is false, so the agents use a relay of another release or cluster, and they need that relay's PSK, which this chart cannot generate.\nCopy its Secret into namespace %s and name it: --set psk.existingSecret=edgemesh-psk\n  kubectl -n <relay namespace> get secret <relay release>-psk -o jsonpath='{.data.swarm\\.key}' | base64 -d > swarm.key\n  kubectl -n %s create secret generic edgemesh-psk --from-file=swarm.key\nor give the same key: --set psk.key=<its 64 hex characters>; or, if that relay runs without a PSK, --set psk.enabled=false." .Release.Namespace .Release.Namespace) }}
{{- else }}
{{- $file = printf "/key/swarm/psk/1.0.0/\n/base16/\n%s" (randAlphaNum 64 | sha256sum) }}
{{- end }}
{{- end }}
{{- $_ := set .Values.psk "_file" $file }}
{{- end }}
{{- .Values.psk._file }}
{{- end }}

{{/*
Where this release's relay gets its identity (its Ed25519 key, hence its peer id):
  existingSecret  server.identity.existingSecret, mounted into the data directory (as before);
  persistence     a key the relay creates on first start in server.persistence, as before the
                  chart generated identities: with server.identity.generate=false, with
                  server.replicas > 1 (one key per relay node), and, unless the release's
                  generated identity exists already, with relay.peerId set (the id of such a key:
                  a reinstall with old values) or on an upgrade of a release whose relay runs
                  already (installed by an older chart): its peer id must not change under the agents;
  generated       (the default) a key pair the chart generates at install: Secret
                  <fullname>-relay-identity (kept across upgrades and on uninstall) and its public
                  certificate in ConfigMap <fullname>-relay-certificate, from which agents derive
                  the relay's peer id.
Empty when server.enabled is false.
*/}}
{{- define "edgemesh.relayIdentity.source" -}}
{{- if .Values.server.enabled }}
{{- if .Values.server.identity.existingSecret }}existingSecret
{{- else if or (not (dig "identity" "generate" true .Values.server)) (gt (int .Values.server.replicas) 1) }}persistence
{{- else if lookup "v1" "Secret" .Release.Namespace (include "edgemesh.relayIdentity.secretName" .) }}generated
{{- else if .Values.relay.peerId }}persistence
{{- else if and .Release.IsUpgrade (lookup "apps/v1" "Deployment" .Release.Namespace (include "edgemesh.server.fullname" .)) }}persistence
{{- else }}generated
{{- end }}
{{- end }}
{{- end }}

{{- define "edgemesh.relayIdentity.secretName" -}}
{{- printf "%s-relay-identity" (include "edgemesh.fullname" .) }}
{{- end }}

{{- define "edgemesh.relayIdentity.certificateName" -}}
{{- printf "%s-relay-certificate" (include "edgemesh.fullname" .) }}
{{- end }}

{{/*
The generated relay identity as a dict: key (PKCS#8 PEM Ed25519 private key) and cert (a
self-signed X.509 certificate of the same key, PEM; agents only read its public key). The pair
the release's Secret already holds (`lookup`: kept across upgrades and reinstalls), else a new
one. Computed once per render (memo in .Values.server.identity._pair) so the Secret, the
ConfigMap and the checksum annotations agree. `helm template` cannot look up: a new pair each time.
*/}}
{{- define "edgemesh.relayIdentity.pair" -}}
{{- if not (hasKey .Values.server.identity "_pair") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "edgemesh.relayIdentity.secretName" .) | default dict }}
{{- $key := dig "data" "tls.key" "" $existing | b64dec }}
{{- $cert := dig "data" "tls.crt" "" $existing | b64dec }}
{{- if not $key }}
{{- $key = genPrivateKey "ed25519" }}
{{- $cert = "" }}
{{- end }}
{{- if not $cert }}
{{- $cert = (genSelfSignedCertWithKey "edgemesh-relay" nil nil 36500 $key).Cert }}
{{- end }}
{{- $_ := set .Values.server.identity "_pair" (dict "key" $key "cert" $cert) }}
{{- end }}
{{- toYaml .Values.server.identity._pair }}
{{- end }}

{{/*
"true" when the agents name this release's generated relay by its certificate (no agent.relays,
no relay.peerId): agent.yaml's relay has certificateFile /etc/edgemesh/relay.crt.
*/}}
{{- define "edgemesh.agent.relayCertificate" -}}
{{- if and .Values.agent.enabled (not .Values.agent.relays) (not .Values.relay.peerId) (eq (include "edgemesh.relayIdentity.source" .) "generated") }}true{{ end }}
{{- end }}

{{/*
Projected "config" volume: the component's ConfigMap plus, with a PSK, swarm.key from the Secret;
with the generated relay identity, the relay's private key (relay.key, the relay only) or its
certificate (relay.crt, the agents). Everything lands in /etc/edgemesh. Call with
(dict "root" $ "configMap" NAME "component" "server"|"agent").
*/}}
{{- define "edgemesh.configVolume" -}}
- name: config
  projected:
    sources:
      - configMap:
          name: {{ .configMap }}
      {{- if include "edgemesh.psk.enabled" .root }}
      - secret:
          name: {{ include "edgemesh.psk.secretName" .root }}
          items:
            - key: {{ .root.Values.psk.secretKey }}
              path: swarm.key
              mode: 0400
      {{- end }}
      {{- if and (eq .component "server") (eq (include "edgemesh.relayIdentity.source" .root) "generated") }}
      - secret:
          name: {{ include "edgemesh.relayIdentity.secretName" .root }}
          items:
            - key: tls.key
              path: relay.key
              mode: 0400
      {{- end }}
      {{- if and (eq .component "agent") (include "edgemesh.agent.relayCertificate" .root) }}
      - configMap:
          name: {{ include "edgemesh.relayIdentity.certificateName" .root }}
          items:
            - key: relay.crt
              path: relay.crt
      {{- end }}
{{- end }}

{{/*
server.yaml (ServerConfig in shared/config.ts).
*/}}
{{- define "edgemesh.server.config" -}}
{{- $v := .Values }}
{{- $c := dict
  "identityFile" (ternary "/etc/edgemesh/relay.key" "/var/lib/edgemesh/server.key" (eq (include "edgemesh.relayIdentity.source" .) "generated"))
  "listen" (dict
    "host" $v.server.listen.host
    "tcpPort" (int $v.relay.ports.tcp)
    "udpPort" (int $v.relay.ports.udp)
    "http" (printf "%s:%d" $v.server.http.host (int $v.server.http.port)))
  "announce" ($v.relay.announce | default (list))
  "keepaliveMs" (int $v.server.keepaliveMs)
  "maxAgents" (int $v.server.maxAgents)
  "logLevel" $v.server.logLevel
}}
{{- with (dig "limits" dict $v.server) }}
{{- $_ := set $c "limits" (deepCopy .) }}
{{- end }}
{{- if include "edgemesh.psk.enabled" . }}
{{- $_ := set $c "pskFile" "/etc/edgemesh/swarm.key" }}
{{- end }}
{{- toYaml (mergeOverwrite $c (deepCopy ($v.server.extraConfig | default dict))) }}
{{- end }}

{{/*
The relays agents register with: agent.relays, or this release's relay.
*/}}
{{- define "edgemesh.agent.relays" -}}
{{- $v := .Values }}
{{- $relays := list }}
{{- range $v.agent.relays }}
{{- $relays = append $relays (dict
  "host" .host
  "peerId" .peerId
  "tcpPort" (int (.tcpPort | default $v.relay.ports.tcp))
  "udpPort" (int (.udpPort | default $v.relay.ports.udp))) }}
{{- end }}
{{- if and (not $relays) $v.relay.peerId }}
{{- $host := required "relay.peerId is set but relay.announce is empty: agents need the relay's public IPv4 address" (first ($v.relay.announce | default (list))) }}
{{- $relays = list (dict "host" $host "peerId" $v.relay.peerId "tcpPort" (int $v.relay.ports.tcp) "udpPort" (int $v.relay.ports.udp)) }}
{{- else if include "edgemesh.agent.relayCertificate" . }}
{{- /* the chart's generated relay identity: agents derive its peer id from the certificate */}}
{{- $host := required "relay.announce is required: the relay node's public IPv4 address(es), e.g. --set relay.announce[0]=203.0.113.10" (first ($v.relay.announce | default (list))) }}
{{- $relays = list (dict "host" $host "certificateFile" "/etc/edgemesh/relay.crt" "tcpPort" (int $v.relay.ports.tcp) "udpPort" (int $v.relay.ports.udp)) }}
{{- end }}
{{- if not $relays }}
{{- $why := "server.enabled is false: name the relay of the other release or cluster in agent.relays (host and peerId)." }}
{{- if .Values.server.identity.existingSecret }}
{{- $why = printf "The relay uses the key in Secret %s (server.identity.existingSecret): set relay.peerId to its peer id\n(node bin/edgemesh-server.js --set identityFile=<that key file> --print-peer-id)." .Values.server.identity.existingSecret }}
{{- else if .Values.server.enabled }}
{{- $why = "This release's relay keeps a key of its own in server.persistence (server.identity.generate=false, server.replicas > 1,\nor a release installed by a chart older than the generated relay identity): read its peer id\n(kubectl logs deploy/<release>-server | grep 'edgemesh-server ready'), then\nhelm upgrade --reuse-values --set relay.peerId=12D3KooW..." }}
{{- end }}
{{- fail (printf "\n\nagent.enabled is true but the agents have no relay: set agent.relays, or relay.peerId (with relay.announce) for this release's relay.\n%s" $why) }}
{{- end }}
{{- toYaml $relays }}
{{- end }}

{{/*
agent.yaml (AgentConfig in shared/config.ts). nodeName is per node: the DaemonSet passes
--set nodeName=$(NODE_NAME).
*/}}
{{- define "edgemesh.agent.config" -}}
{{- $v := .Values }}
{{- $c := dict
  "identityFile" "/var/lib/edgemesh/agent.key"
  "listen" (dict
    "host" $v.agent.listen.host
    "udpPort" (int $v.agent.listen.udpPort)
    "tcpPort" (int $v.agent.listen.tcpPort))
  "controlSocket" "/run/edgemesh/agent.sock"
  "health" (printf "127.0.0.1:%d" (int (dig "health" "port" 9095 $v.agent)))
  "relays" (include "edgemesh.agent.relays" . | fromYamlArray)
  "tunnel" (deepCopy $v.agent.tunnel)
  "diagnostics" $v.agent.diagnostics
  "logLevel" $v.agent.logLevel
}}
{{- if include "edgemesh.agent.kubernetes.enabled" . }}
{{- /* in-cluster config (the pod's projected token); the snapshot sits next to the node key */}}
{{- $k := dict "namespace" .Release.Namespace "snapshotFile" "/var/lib/edgemesh/catalog.json" }}
{{- with (dig "kubernetes" "apiServer" "" $v.agent) }}{{- $_ := set $k "apiServer" . }}{{- end }}
{{- $_ := set $c "kubernetes" $k }}
{{- else }}
{{- $_ := set $c "peersFile" "/etc/edgemesh/peers.yaml" }}
{{- end }}
{{- if include "edgemesh.agent.dns.enabled" . }}
{{- /* upstreams default to the node's resolv.conf (mounted by the DaemonSet), not the pod's */}}
{{- $d := dict
  "listen" (dig "dns" "listen" "169.254.96.16:53" $v.agent)
  "clusterDomain" (dig "dns" "clusterDomain" "cluster.local" $v.agent)
  "resolvConf" (include "edgemesh.agent.dns.hostResolvConf" .)
}}
{{- with (dig "dns" "upstreams" (list) $v.agent) }}{{- $_ := set $d "upstreams" . }}{{- end }}
{{- $_ := set $c "dns" $d }}
{{- end }}
{{- if include "edgemesh.agent.proxy.enabled" . }}
{{- /* its address goes on the DNS server's bridge (the agent's default device, edgemesh0) */}}
{{- $p := dict
  "listen" (dig "proxy" "listen" "169.254.96.16" $v.agent)
  "iptables" (dig "proxy" "iptables" "auto" $v.agent)
  "directCidrs" (dig "proxy" "directCidrs" (list) $v.agent | default (list))
  "minSyncIntervalMs" (int (dig "proxy" "minSyncIntervalMs" 250 $v.agent))
  "resyncSeconds" (int (dig "proxy" "resyncSeconds" 60 $v.agent))
  "connectTimeoutMs" (int (dig "proxy" "connectTimeoutMs" 3000 $v.agent))
  "udpIdleSeconds" (int (dig "proxy" "udpIdleSeconds" 10 $v.agent))
  "udpStreamIdleSeconds" (int (dig "proxy" "udpStreamIdleSeconds" 180 $v.agent))
  "destinationRules" (dig "proxy" "destinationRules" true $v.agent)
  "cleanupOnExit" (dig "proxy" "cleanupOnExit" true $v.agent)
}}
{{- $_ := set $c "proxy" $p }}
{{- end }}
{{- if include "edgemesh.agent.socks5.enabled" . }}
{{- $sv := $v.agent.socks5 }}
{{- $ports := list }}
{{- range (dig "allowedPorts" (list 22) $sv) }}{{ $ports = append $ports (int .) }}{{ end }}
{{- $s := dict
  "listen" (dig "listen" (list "169.254.96.16:10800") $sv)
  "nodeSuffix" (dig "nodeSuffix" "edge" $sv)
  "allowedPorts" $ports
  "services" (dig "services" true $sv)
  "handshakeTimeoutMs" (int (dig "handshakeTimeoutMs" 10000 $sv))
  "connectTimeoutMs" (int (dig "connectTimeoutMs" 15000 $sv))
  "maxConnections" (int (dig "maxConnections" 1024 $sv))
}}
{{- with (include "edgemesh.agent.socks5.authDir" .) }}
{{- $_ := set $s "auth" (dict "usernameFile" (printf "%s/username" .) "passwordFile" (printf "%s/password" .)) }}
{{- end }}
{{- $_ := set $c "socks5" $s }}
{{- end }}
{{- if $v.agent.metrics.enabled }}
{{- $_ := set $c "metrics" (printf "%s:%d" $v.agent.metrics.host (int $v.agent.metrics.port)) }}
{{- end }}
{{- if include "edgemesh.psk.enabled" . }}
{{- $_ := set $c "pskFile" "/etc/edgemesh/swarm.key" }}
{{- end }}
{{- toYaml (mergeOverwrite $c (deepCopy ($v.agent.extraConfig | default dict))) }}
{{- end }}

{{/*
peers.yaml (StaticPeerDirectory in agent/tunnel/directory.ts).
*/}}
{{- define "edgemesh.agent.peers" -}}
{{- toYaml (dict "peers" (.Values.agent.peers | default (list))) }}
{{- end }}
