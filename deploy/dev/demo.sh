#!/usr/bin/env bash
# demo.sh is `make demo`: the whole pipeline end to end on this machine.
#
#   1. starts ClickHouse, S3 (versitygw), etcd and kube-apiserver with
#      deps.sh unless they already run (and stops them at exit if it did);
#   2. builds bin/capstream and bin/capstream-dev and installs the PacketCapture CRD;
#   3. runs `capstream-dev --config deploy/dev/dev.yaml`: embedded JetStream,
#      router, producer, pcap sink and flow sink in one process, plus a
#      simulated node (network namespaces, Calico-style cali* veths, three
#      pods in sample-namespace, HTTP/HTTPS/DNS traffic every second);
#   4. applies the seed's sample PacketCapture (schemas/v3/testdata/sample.yaml);
#   5. waits (bounded) for data, then prints the capture's status, the top
#      flows from ClickHouse, the pcap objects' S3 keys, and a merged pcap
#      read by capinfos and tshark;
#   6. cleans up: the capture, the dev process, the simulated node, the
#      demo's database and objects, and the services it started.
#
# Needs root (network namespaces and AF_PACKET). Environment:
#   CAPSTREAM_DEMO_KEEP=1     keep the demo's database, objects, work dir and
#                             any services it started
#   CAPSTREAM_DEMO_TIMEOUT=N  seconds to wait for data (default 90)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$(pwd)"
DEPS="$ROOT/deploy/dev/deps.sh"
CONFIG="$ROOT/deploy/dev/dev.yaml"
SAMPLE="$ROOT/schemas/v3/testdata/sample.yaml"
NS=sample-namespace
CAPTURE=sample-capture
# These match deploy/dev/dev.yaml.
DATABASE=capstream_demo
BUCKET=capstream-demo
PREFIX=capstream
SIM_NETNS=capstream-demo
TIMEOUT="${CAPSTREAM_DEMO_TIMEOUT:-90}"

log() { printf '\ndemo: %s\n' "$*" >&2; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
heading() { printf '\n==== %s ====\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
	echo "demo: make demo needs root: it builds network namespaces and veths and captures with AF_PACKET." >&2
	echo "demo: run it as root (for example: sudo make demo)." >&2
	exit 1
fi
start=$(date +%s)

started_deps=0
dev_pid=""
WORK=""
cleanup() {
	local rc=$?
	set +e
	log "cleaning up"
	if [ -n "${KUBECONFIG:-}" ] && command -v kubectl >/dev/null; then
		kubectl delete packetcapture "$CAPTURE" -n "$NS" --ignore-not-found --wait=false >/dev/null 2>&1
	fi
	if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
		# TERM lets capstream-dev stop in order: traffic and producers,
		# then sinks (open objects completed) and router; it removes the
		# simulated node and its pods itself.
		kill -TERM "$dev_pid"
		for _ in $(seq 1 600); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$dev_pid" 2>/dev/null; then
			echo "demo: capstream-dev did not stop within 60s; killing it" >&2
			kill -KILL "$dev_pid"
		fi
		wait "$dev_pid" 2>/dev/null
	fi
	# Only if dev was killed: its namespaces, by their own names.
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${SIM_NETNS}(-p[0-9]+)?$"); do
		ip netns del "$ns"
	done
	if [ "${CAPSTREAM_DEMO_KEEP:-0}" != 1 ] && [ "$started_deps" = 0 ] && [ -n "${CAPSTREAM_S3_ENDPOINT:-}" ]; then
		# The services are someone else's: leave them as they were.
		"$ROOT/bin/capstream" captured-packets clean --direct "$CAPTURE" -n "$NS" >/dev/null 2>&1
		ch -q "DROP DATABASE IF EXISTS $DATABASE" >/dev/null 2>&1
	fi
	if [ "$started_deps" = 1 ] && [ "${CAPSTREAM_DEMO_KEEP:-0}" != 1 ]; then
		"$DEPS" down
	fi
	if [ -n "$WORK" ] && [ "${CAPSTREAM_DEMO_KEEP:-0}" != 1 ]; then
		rm -rf "$WORK"
	elif [ -n "$WORK" ]; then
		echo "demo: kept $WORK" >&2
	fi
	echo "demo: done in $(($(date +%s) - start))s (exit $rc)" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. services
if "$DEPS" status >/dev/null 2>&1; then
	log "services already running; using them (they stay up)"
else
	log "starting services (deps.sh up)"
	started_deps=1
	"$DEPS" up
fi
ENV_FILE="$("$DEPS" env)"
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
command -v kubectl >/dev/null || die "kubectl not found (apt-get install kubectl)"

export KUBECONFIG="$CAPSTREAM_TEST_KUBECONFIG"
# The user commands' settings (capstream get, flows, captured-packets).
export CAPSTREAM_S3_ENDPOINT="$CAPSTREAM_TEST_S3_ENDPOINT"
export CAPSTREAM_S3_SECURE=true CAPSTREAM_S3_TLS_CAFILE="$CAPSTREAM_TEST_TLS_CA"   # versitygw serves HTTPS only
export CAPSTREAM_S3_ACCESSKEY="$CAPSTREAM_TEST_S3_ACCESS_KEY"
export CAPSTREAM_S3_SECRETKEY="$CAPSTREAM_TEST_S3_SECRET_KEY"
export CAPSTREAM_S3_BUCKET="$BUCKET" CAPSTREAM_PCAP_PREFIX="$PREFIX"
# capstream (the user commands), capstream-dev and clickhouse-client reach
# ClickHouse on its TLS port (it has no other), verifying it against the
# dev CA, with the password deps.sh made; clickhouse-client reads both
# from the config file deps.sh wrote.
export CAPSTREAM_CLICKHOUSE_ADDR="$CAPSTREAM_TEST_CLICKHOUSE_SECURE_ADDR" CAPSTREAM_CLICKHOUSE_DATABASE="$DATABASE"
export CAPSTREAM_CLICKHOUSE_SECURE=true CAPSTREAM_CLICKHOUSE_TLS_CAFILE="$CAPSTREAM_TEST_TLS_CA"
export CAPSTREAM_CLICKHOUSE_PASSWORD="$CAPSTREAM_TEST_CLICKHOUSE_PASSWORD"
ch() { clickhouse-client --config-file "$CAPSTREAM_TEST_CLICKHOUSE_CLIENT_CONFIG" "$@"; }

WORK="$(mktemp -d -t capstream-demo.XXXXXX)"
log "services ready after $(($(date +%s) - start))s"

# 2. binary and CRD
log "building bin/capstream and bin/capstream-dev"
make -s build build-dev
log "built after $(($(date +%s) - start))s"
# The API server warns when the CRD was first created without kubectl
# (tests install it with client-go); only failures are worth showing.
kubectl apply -f schemas/v3/crd.yaml >/dev/null 2>"$WORK/kubectl.err" || { cat "$WORK/kubectl.err" >&2; die "cannot install the CRD"; }
kubectl wait --for=condition=Established crd/packetcaptures.projectcalico.org --timeout=30s >/dev/null

# A previous run that was killed may have left these behind.
kubectl delete packetcapture "$CAPTURE" -n "$NS" --ignore-not-found >/dev/null 2>&1 || true
ch -q "DROP DATABASE IF EXISTS $DATABASE" >/dev/null 2>&1 || true
bin/capstream captured-packets clean --direct "$CAPTURE" -n "$NS" >/dev/null 2>&1 || true

# 3. the pipeline
http_port=""
for _ in $(seq 1 100); do
	p=$((32000 + RANDOM % 8000))
	if ! ss -Htan "sport = :$p" | grep -q .; then http_port=$p; break; fi
done
[ -n "$http_port" ] || die "no free port for the health listener"
api_port=""
for _ in $(seq 1 100); do
	p=$((32000 + RANDOM % 8000))
	if [ "$p" != "$http_port" ] && ! ss -Htan "sport = :$p" | grep -q .; then api_port=$p; break; fi
done
[ -n "$api_port" ] || die "no free port for the access API"
# capstream-dev serves the access API (TokenReview + SubjectAccessReview
# against the dev API server) with the dev CA's certificate; the user
# commands below go through it with the kubeconfig's token, as a
# developer's would.
export CAPSTREAM_DEV_ACCESS_LISTEN="127.0.0.1:$api_port"
export CAPSTREAM_ACCESS_URL="https://127.0.0.1:$api_port" CAPSTREAM_ACCESS_CA="$CAPSTREAM_TEST_TLS_CA"
export CAPSTREAM_DEV_KUBE_KUBECONFIG="$KUBECONFIG"
export CAPSTREAM_DEV_CLICKHOUSE_ADDR="$CAPSTREAM_CLICKHOUSE_ADDR"
export CAPSTREAM_DEV_CLICKHOUSE_SECURE=true CAPSTREAM_DEV_CLICKHOUSE_TLS_CAFILE="$CAPSTREAM_TEST_TLS_CA"
export CAPSTREAM_DEV_CLICKHOUSE_PASSWORD="$CAPSTREAM_CLICKHOUSE_PASSWORD"
export CAPSTREAM_DEV_S3_ENDPOINT="$CAPSTREAM_S3_ENDPOINT"
export CAPSTREAM_DEV_S3_SECURE=true CAPSTREAM_DEV_S3_TLS_CAFILE="$CAPSTREAM_TEST_TLS_CA"
export CAPSTREAM_DEV_S3_ACCESSKEY="$CAPSTREAM_S3_ACCESSKEY"
export CAPSTREAM_DEV_S3_SECRETKEY="$CAPSTREAM_S3_SECRETKEY"
export CAPSTREAM_DEV_NATS_STOREDIR="$WORK/nats"
# The embedded NATS server speaks TLS only, with the dev CA's certificate.
tls_dir="$WORK/tls"
bash "$ROOT/deploy/dev/certs.sh" "$tls_dir" >/dev/null
export CAPSTREAM_DEV_NATS_TLS_CERTFILE="$tls_dir/server.pem"
export CAPSTREAM_DEV_NATS_TLS_KEYFILE="$tls_dir/server-key.pem"
export CAPSTREAM_DEV_NATS_TLS_CAFILE="$tls_dir/ca.pem"
export CAPSTREAM_DEV_HTTP_LISTEN="127.0.0.1:$http_port"
export CAPSTREAM_DEV_LOG_FORMAT=text
log "starting capstream-dev (log: $WORK/dev.log, health: http://127.0.0.1:$http_port/readyz)"
bin/capstream-dev --config "$CONFIG" >"$WORK/dev.log" 2>&1 &
dev_pid=$!
dev_start=$(date +%s)
ready=0
for _ in $(seq 1 300); do
	if curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1; then ready=1; break; fi
	kill -0 "$dev_pid" 2>/dev/null || { tail -n 40 "$WORK/dev.log" >&2; die "capstream-dev exited"; }
	sleep 0.2
done
if [ "$ready" != 1 ]; then
	curl -sS "http://127.0.0.1:$http_port/readyz" >&2 || true
	tail -n 40 "$WORK/dev.log" >&2
	die "capstream-dev not ready after 60s"
fi
log "pipeline ready $(($(date +%s) - dev_start))s after start ($(($(date +%s) - start))s in all)"
ip netns list | grep -E "^${SIM_NETNS}" | sed 's/^/  netns /' >&2 || true
kubectl get pods -n "$NS" -o wide >&2

# 4. the capture
kubectl apply -f "$SAMPLE"
applied=$(date +%s)

# 5. wait for data: completed objects in the status and flow rows
log "waiting up to ${TIMEOUT}s for pcap objects and flows"
have_data=0
for _ in $(seq 1 "$TIMEOUT"); do
	objects=$(bin/capstream get packetcaptures "$CAPTURE" -n "$NS" -o json 2>/dev/null | grep -Eo '"objects": [0-9]+' | head -1 | grep -Eo '[0-9]+$' || true)
	flows=$(ch --database "$DATABASE" -q "SELECT count() FROM flows WHERE namespace = '$NS' AND capture = '$CAPTURE'" 2>/dev/null || echo 0)
	if [ "${objects:-0}" -ge 2 ] && [ "${flows:-0}" -gt 0 ]; then have_data=1; break; fi
	kill -0 "$dev_pid" 2>/dev/null || { tail -n 40 "$WORK/dev.log" >&2; die "capstream-dev exited"; }
	sleep 1
done
[ "$have_data" = 1 ] || { tail -n 40 "$WORK/dev.log" >&2; die "no data after ${TIMEOUT}s (objects: ${objects:-0}, flows: ${flows:-0})"; }
log "data after $(($(date +%s) - applied))s"

heading "capstream get packetcaptures -n $NS"
bin/capstream get packetcaptures -n "$NS"

heading "top flows (ClickHouse, database $DATABASE)"
# The README's example query, verbatim, so the two cannot drift apart.
SQL="$(awk '/^```sql$/{on=1; next} /^```$/{if(on) exit} on' README.md)"
[ -n "$SQL" ] || die "no \`\`\`sql block in README.md"
SQL="${SQL//sample-namespace/$NS}"
SQL="${SQL//sample-capture/$CAPTURE}"
echo "$SQL;"
echo "-- a connection between two selected pods is captured on both pods' veths, so it has a row for each"
ch --database "$DATABASE" --format PrettyCompact -q "$SQL"

heading "capstream flows $CAPTURE -n $NS --limit 12 (through the access API, $CAPSTREAM_ACCESS_URL)"
bin/capstream flows "$CAPTURE" -n "$NS" --limit 12

heading "pcap objects on S3 (s3://$BUCKET/...)"
ch --database "$DATABASE" --format PrettyCompact -q "SELECT key, packets, size FROM pcap_objects FINAL
WHERE namespace = '$NS' AND capture = '$CAPTURE' ORDER BY first_time, key"

heading "capstream captured-packets copy $CAPTURE -n $NS --merge -d $WORK/pcaps (through the access API)"
bin/capstream captured-packets copy "$CAPTURE" -n "$NS" --merge -q -d "$WORK/pcaps"
PCAP="$WORK/pcaps/${NS}_${CAPTURE}.pcap"
capinfos -c -u -i -d "$PCAP" || true
heading "tshark -r $(basename "$PCAP") -q -z conv,ip"
tshark -r "$PCAP" -q -z conv,ip 2>/dev/null
heading "tshark: the L7 names in the capture"
tshark -r "$PCAP" -Y 'http.host or tls.handshake.extensions_server_name or dns.flags.response == 0' \
	-T fields -e frame.protocols -e http.host -e tls.handshake.extensions_server_name -e dns.qry.name 2>/dev/null |
	awk -F'\t' '{n=split($1,p,":"); print p[n] "\t" $2 $3 $4}' | sort | uniq -c | sort -rn | head -8
log "demo finished in $(($(date +%s) - start))s; stopping"
