{{/*
A `helm test` pod: the chart's image runs files/helm-test.js with node -e; what it checks comes
from the environment (see that file). dict: root, name (suffix), env (list of name/value),
and optionally volumes, volumeMounts, runAsRoot.
Successful test pods are deleted (nothing is left behind for `helm uninstall`); failed ones stay
for `kubectl logs` until the next `helm test` replaces them.
*/}}
{{- define "edgemesh.test.pod" -}}
{{- $root := .root }}
{{- /* values reused from a release older than `tests` have none */}}
{{- $t := $root.Values.tests | default dict }}
apiVersion: v1
kind: Pod
metadata:
  name: {{ printf "%s-test-%s" (include "edgemesh.fullname" $root) .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "edgemesh.labels" $root | nindent 4 }}
    app.kubernetes.io/component: test
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $t.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $t.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: check
      image: {{ include "edgemesh.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: [node]
      args:
        - -e
        - {{ $root.Files.Get "files/helm-test.js" | toJson }}
      env:
        - name: EDGEMESH_TEST_NODE
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: EDGEMESH_TEST_TIMEOUT_SECONDS
          value: {{ $t.timeoutSeconds | default 60 | quote }}
        {{- range .env }}
        - name: {{ .name }}
          value: {{ .value | quote }}
        {{- end }}
      resources:
        requests:
          cpu: 10m
          memory: 32Mi
        limits:
          memory: 128Mi
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        {{- if not .runAsRoot }}
        runAsNonRoot: true
        runAsUser: 65534
        {{- end }}
        capabilities:
          drop:
            - ALL
      {{- with .volumeMounts }}
      volumeMounts:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- with .volumes }}
  volumes:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
