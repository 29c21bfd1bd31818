#!/usr/bin/env bash
# Smoke checks against a control plane started by run.sh:  smoke.sh DIR
set -euo pipefail
D=$1; . "$D/env"
k() { # k METHOD PATH [JSON]  -> prints "HTTP <code>" + body to stdout
  local m=$1 p=$2 body=${3:-}
  if [ -n "$body" ]; then
    curl -sk -X "$m" -H "Authorization: Bearer ${KTOKEN:-$TOKEN}" -H 'Content-Type: application/json' \
      -d "$body" -w '\nHTTP %{http_code}\n' "$API_URL$p"
  else
    curl -sk -X "$m" -H "Authorization: Bearer ${KTOKEN:-$TOKEN}" -w '\nHTTP %{http_code}\n' "$API_URL$p"
  fi
}
code() { tail -1 | awk '{print $2}'; }
check() { local name=$1 want=$2 got=$3; if [[ " $want " == *" $got "* ]]; then echo "PASS $name ($got)"; else echo "FAIL $name (got $got, want $want)"; FAILED=1; fi; }
FAILED=0

check readyz 200 "$(k GET /readyz | code)"
check version 200 "$(k GET /version | code)"
k GET /version | head -12 | tr -d '\n '; echo

check create-namespace "201 409" "$(k POST /api/v1/namespaces '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"mesh"}}' | code)"
check create-service "201 409" "$(k POST /api/v1/namespaces/mesh/services '{"apiVersion":"v1","kind":"Service","metadata":{"name":"echo"},"spec":{"selector":{"app":"echo"},"ports":[{"name":"http","port":80,"targetPort":8080,"protocol":"TCP"}]}}' | code)"
check create-endpointslice "201 409" "$(k POST /apis/discovery.k8s.io/v1/namespaces/mesh/endpointslices '{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"echo-abc","labels":{"kubernetes.io/service-name":"echo"}},"addressType":"IPv4","ports":[{"name":"http","port":8080,"protocol":"TCP"}],"endpoints":[{"addresses":["10.1.0.5"],"conditions":{"ready":true},"nodeName":"edge-1"}]}' | code)"
check get-endpointslices 200 "$(k GET '/apis/discovery.k8s.io/v1/namespaces/mesh/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Decho' | code)"
echo "service clusterIP: $(k GET /api/v1/namespaces/mesh/services/echo | python3 -c 'import sys,json; print(json.loads(sys.stdin.read().rsplit("\nHTTP",1)[0])["spec"]["clusterIP"])')"

# ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA in 1.30)
check vap-discovery 200 "$(k GET /apis/admissionregistration.k8s.io/v1 | code)"
k GET /apis/admissionregistration.k8s.io/v1 | grep -oE "\"name\": ?\"validatingadmissionpolic[a-z]*\"" | sort -u || true
check vap-create "201 409" "$(k POST /apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies '{"apiVersion":"admissionregistration.k8s.io/v1","kind":"ValidatingAdmissionPolicy","metadata":{"name":"svc-port-limit"},"spec":{"failurePolicy":"Fail","matchConstraints":{"resourceRules":[{"apiGroups":[""],"apiVersions":["v1"],"operations":["CREATE","UPDATE"],"resources":["services"]}]},"validations":[{"expression":"object.spec.ports.all(p, p.port != 6666)","message":"port 6666 is forbidden"}]}}' | code)"
check vap-binding-create "201 409" "$(k POST /apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings '{"apiVersion":"admissionregistration.k8s.io/v1","kind":"ValidatingAdmissionPolicyBinding","metadata":{"name":"svc-port-limit"},"spec":{"policyName":"svc-port-limit","validationActions":["Deny"],"matchResources":{"namespaceSelector":{}}}}' | code)"
# the policy is enforced asynchronously (type-checking + informer sync) -> retry for a few seconds
for i in $(seq 50); do
  out=$(k POST /api/v1/namespaces/mesh/services '{"apiVersion":"v1","kind":"Service","metadata":{"name":"bad"},"spec":{"ports":[{"port":6666}]}}')
  c=$(echo "$out" | code); [ "$c" = 422 ] && break
  [ "$c" = 201 ] && k DELETE /api/v1/namespaces/mesh/services/bad >/dev/null
  sleep 0.2
done
check vap-enforced 422 "$c"; echo "  after $i tries: $(echo "$out" | python3 -c 'import sys,json; print(json.loads(sys.stdin.read().rsplit("\nHTTP",1)[0]).get("message"))')"

# ---- ServiceAccount token with node claims ---------------------------------------
check create-sa "201 409" "$(k POST /api/v1/namespaces/mesh/serviceaccounts '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"edge-agent"}}' | code)"
check create-node "201 409" "$(k POST /api/v1/nodes '{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}' | code)"
check create-pod "201 409" "$(k POST /api/v1/namespaces/mesh/pods '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"agent-0"},"spec":{"serviceAccountName":"edge-agent","nodeName":"edge-1","containers":[{"name":"a","image":"example.invalid/agent:1"}]}}' | code)"
PODUID=$(k GET /api/v1/namespaces/mesh/pods/agent-0 | python3 -c 'import sys,json; print(json.loads(sys.stdin.read().rsplit("\nHTTP",1)[0])["metadata"]["uid"])')
TR=$(k POST /api/v1/namespaces/mesh/serviceaccounts/edge-agent/token "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\",\"spec\":{\"audiences\":[\"https://kubernetes.default.svc\"],\"expirationSeconds\":3600,\"boundObjectRef\":{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"name\":\"agent-0\",\"uid\":\"$PODUID\"}}}")
check token-request 201 "$(echo "$TR" | code)"
SATOKEN=$(echo "$TR" | python3 -c 'import sys,json; print(json.loads(sys.stdin.read().rsplit("\nHTTP",1)[0])["status"]["token"])')
echo "--- decoded SA token claims:"
echo "$SATOKEN" | python3 -c '
import sys,json,base64
p=sys.stdin.read().strip().split(".")[1]; p+="="*(-len(p)%4)
c=json.loads(base64.urlsafe_b64decode(p)); print(json.dumps(c,indent=1))
k=c.get("kubernetes.io",{})
print("CLAIM kubernetes.io.node.name =", k.get("node",{}).get("name"), " node.uid =", k.get("node",{}).get("uid"))'
echo "--- SelfSubjectReview with the SA token:"
SSR=$(KTOKEN=$SATOKEN k POST /apis/authentication.k8s.io/v1/selfsubjectreviews '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}')
check selfsubjectreview 201 "$(echo "$SSR" | code)"
echo "$SSR" | python3 -c '
import sys,json
r=json.loads(sys.stdin.read().rsplit("\nHTTP",1)[0]); u=r["status"]["userInfo"]; print(json.dumps(u,indent=1))
print("EXTRA node-name =", u.get("extra",{}).get("authentication.kubernetes.io/node-name"))'

echo "--- idle RSS (after smoke):"
for p in ETCD_PID API_PID; do printf "%s %s RSS=%s kB\n" $p ${!p} "$(awk '/VmRSS/{print $2}' /proc/${!p}/status)"; done
exit $FAILED
