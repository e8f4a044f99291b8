#!/usr/bin/env bash
# deps.sh installs and runs the real services capstream's tests and demo use:
# ClickHouse (Debian's package), versitygw (S3), etcd and kube-apiserver
# (built from deploy/dev/tools into a cache directory outside the repo).
# NATS is not started here: tests and `capstream-dev` embed nats-server.
#
#   deps.sh install   install/build whatever is missing, start nothing
#   deps.sh up        install, then start every service on free loopback ports
#                     and write their addresses to the env file
#   deps.sh down      stop exactly the processes `up` started, remove their data
#   deps.sh status    show what runs; exit 1 if anything is down
#   deps.sh env       print the env file path
#
# Environment:
#   CAPSTREAM_CACHE_DIR  where slow builds are kept   (default ~/.cache/capstream)
#   CAPSTREAM_DEV_DIR    state of the running services (default /tmp/capstream-dev)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${CAPSTREAM_CACHE_DIR:-${HOME:-/root}/.cache/capstream}"
DEV_DIR="${CAPSTREAM_DEV_DIR:-/tmp/capstream-dev}"
ENV_FILE="$DEV_DIR/env"
PID_DIR="$DEV_DIR/pids"

VERSITYGW_VERSION=v1.8.0
NATSCLI_VERSION=v0.5.0
APT_PACKAGES=(clickhouse-server clickhouse-client tcpdump tshark iproute2 openssl curl argus-server argus-client s3cmd)

log() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

# tools_key names the cache entry for the kube-apiserver/etcd build so a
# change of versions in deploy/dev/tools builds afresh instead of reusing.
tools_key() { cat "$HERE/tools/go.mod" "$HERE/tools/go.sum" | sha256sum | cut -c1-12; }
k8s_bin_dir() { echo "$CACHE_DIR/k8s-$(tools_key)"; }

install_apt() {
	local missing=()
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq "${missing[@]}" >/dev/null
}

# go_install_cached BIN WHAT PKG@VERSION MINUTES builds a tool into the
# cache unless BIN is there already.
go_install_cached() {
	local bin="$1" what="$2" pkg="$3" minutes="$4"
	[ -x "$bin" ] && return 0
	log "building $what into $(dirname "$bin") (about $minutes min cold)"
	mkdir -p "$(dirname "$bin")"
	GOBIN="$(dirname "$bin")" GOFLAGS=-mod=mod go install "$pkg"
}

install_versitygw() {
	go_install_cached "$CACHE_DIR/versitygw-$VERSITYGW_VERSION/versitygw" "versitygw $VERSITYGW_VERSION" \
		"github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" 2
}

# The nats CLI is what users monitor the streams with; a test runs it.
install_natscli() {
	go_install_cached "$CACHE_DIR/natscli-$NATSCLI_VERSION/nats" "the nats CLI $NATSCLI_VERSION" \
		"github.com/nats-io/natscli/nats@$NATSCLI_VERSION" 3
}

install_k8s() {
	local dir
	dir="$(k8s_bin_dir)"
	if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then return 0; fi
	log "building kube-apiserver and etcd into $dir (6-12 min cold on 2 cores; cached afterwards)"
	mkdir -p "$dir"
	(
		cd "$HERE/tools"
		[ -x "$dir/etcd" ] || { go build -trimpath -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$dir/etcd.tmp" "$dir/etcd"; }
		[ -x "$dir/kube-apiserver" ] || { go build -trimpath -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver && mv "$dir/kube-apiserver.tmp" "$dir/kube-apiserver"; }
	)
}

install_all() {
	command -v go >/dev/null || die "go is not on PATH"
	install_apt
	install_versitygw
	install_natscli
	install_k8s
}

# free_port prints a loopback TCP port nobody listens on. Ports are picked
# from a range outside the kernel's ephemeral range so that a port chosen
# now is not handed to an outgoing connection before the service binds it.
USED_PORTS=" "
free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 12000))
		case "$USED_PORTS" in *" $p "*) continue ;; esac
		if ! ss -Htan "sport = :$p" | grep -q .; then
			USED_PORTS="$USED_PORTS$p "
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# start NAME CMD... runs a service in its own session so `down` can stop the
# whole process group, and records its pid.
start() {
	local name=$1
	shift
	setsid "$@" >"$DEV_DIR/$name/out.log" 2>&1 </dev/null &
	echo $! >"$PID_DIR/$name.pid"
}

wait_for() {
	local name=$1 tries=$2
	shift 2
	for _ in $(seq 1 "$tries"); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		if ! kill -0 "$(cat "$PID_DIR/$name.pid")" 2>/dev/null; then
			tail -n 30 "$DEV_DIR/$name/out.log" >&2 || true
			die "$name exited during start-up (log: $DEV_DIR/$name/out.log)"
		fi
		sleep 0.2
	done
	tail -n 30 "$DEV_DIR/$name/out.log" >&2 || true
	die "$name not ready (log: $DEV_DIR/$name/out.log)"
}

start_clickhouse() {
	local d="$DEV_DIR/clickhouse" secure http inter tls="$DEV_DIR/tls" password hash
	mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/log"
	# The default user needs a password, made here at random: every client
	# (tests, capstream-dev, the demo) reads it from the env file, and
	# clickhouse-client from $d/client.xml.
	password="$(openssl rand -hex 16)"
	hash="$(printf '%s' "$password" | sha256sum | cut -d' ' -f1)"
	# capstream-reader is the access API's user: its profile is read-only
	# (readonly=1: no writes, no DDL, no table functions, and no setting a
	# query sends can change that; 18.16 ignores them) and carries its own
	# limits on time and result rows, a wall behind the API's LIMIT.
	local reader_password reader_hash
	reader_password="$(openssl rand -hex 16)"
	reader_hash="$(printf '%s' "$reader_password" | sha256sum | cut -d' ' -f1)"
	secure=$(free_port)
	http=$(free_port)
	inter=$(free_port)
	cat >"$d/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$d/log/server.log</log><errorlog>$d/log/error.log</errorlog><size>100M</size><count>2</count></logger>
    <listen_host>127.0.0.1</listen_host>
    <!-- The native protocol over TLS only, with the dev CA's certificate
         (certs.sh): there is no plain tcp_port. The HTTP ports below are
         needed by the server itself and take no queries from capstream. -->
    <tcp_port_secure>$secure</tcp_port_secure>
    <openSSL><server><certificateFile>$tls/server.pem</certificateFile><privateKeyFile>$tls/server-key.pem</privateKeyFile><verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile><cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols><preferServerCiphers>true</preferServerCiphers></server></openSSL>
    <http_port>$http</http_port>
    <interserver_http_port>$inter</interserver_http_port>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
EOF
	local lc=""
	# 18.x needs the experimental flag for LowCardinality; newer servers
	# reject the setting, so it is only written for 18.x.
	if /usr/bin/clickhouse-client --version 2>/dev/null | grep -q ' 18\.'; then
		lc="<allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>"
	fi
	cat >"$d/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default><max_memory_usage>4000000000</max_memory_usage>$lc</default>
        <capstream-reader><readonly>1</readonly><max_memory_usage>1000000000</max_memory_usage><max_execution_time>60</max_execution_time><max_result_rows>100000</max_result_rows>$lc</capstream-reader>
    </profiles>
    <users>
        <default><password_sha256_hex>$hash</password_sha256_hex><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>
        <capstream-reader><password_sha256_hex>$reader_hash</password_sha256_hex><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>capstream-reader</profile><quota>default</quota></capstream-reader>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
EOF
	# clickhouse-client --config-file client.xml: TLS verified against
	# the dev CA, and the password, which then never shows in ps.
	(umask 077 && cat >"$d/client.xml" <<EOF
<config>
    <host>127.0.0.1</host><port>$secure</port><secure>true</secure>
    <user>default</user><password>$password</password>
    <openSSL><client><loadDefaultCAFile>false</loadDefaultCAFile><caConfig>$tls/ca.pem</caConfig><verificationMode>strict</verificationMode><invalidCertificateHandler><name>RejectCertificateHandler</name></invalidCertificateHandler></client></openSSL>
</config>
EOF
	)
	start clickhouse /usr/sbin/clickhouse-server --config-file="$d/config.xml"
	wait_for clickhouse 150 /usr/bin/clickhouse-client --config-file "$d/client.xml" -q 'SELECT 1'
	{
		echo "CAPSTREAM_TEST_CLICKHOUSE_ADDR=127.0.0.1:$secure"
		echo "CAPSTREAM_TEST_CLICKHOUSE_SECURE=1"
		echo "CAPSTREAM_TEST_CLICKHOUSE_PASSWORD=$password"
		echo "CAPSTREAM_TEST_CLICKHOUSE_READER_USER=capstream-reader"
		echo "CAPSTREAM_TEST_CLICKHOUSE_READER_PASSWORD=$reader_password"
		echo "CAPSTREAM_TEST_CLICKHOUSE_CLIENT_CONFIG=$d/client.xml"
		echo "CAPSTREAM_TEST_CLICKHOUSE_SECURE_ADDR=127.0.0.1:$secure"
		echo "CAPSTREAM_TEST_TLS_CA=$tls/ca.pem"
	} >>"$ENV_FILE.tmp"
}

start_s3() {
	local d="$DEV_DIR/s3" port key secret tls="$DEV_DIR/tls"
	mkdir -p "$d/data"
	port=$(free_port)
	key="capstream$(openssl rand -hex 4)"
	secret="$(openssl rand -hex 20)"
	# --keep-alive: without it versitygw answers every request with
	# "Connection: close", and every PUT pays a TLS handshake (most of the
	# pcap sink's CPU at 1000 interfaces); S3 servers in production keep
	# connections open.
	ROOT_ACCESS_KEY="$key" ROOT_SECRET_KEY="$secret" \
		start s3 "$CACHE_DIR/versitygw-$VERSITYGW_VERSION/versitygw" --port "127.0.0.1:$port" --keep-alive \
		--cert "$tls/server.pem" --key "$tls/server-key.pem" --health /health posix "$d/data"
	# HTTPS only, with the dev CA's certificate.
	wait_for s3 100 curl -sf --cacert "$tls/ca.pem" "https://127.0.0.1:$port/health"
	{
		echo "CAPSTREAM_TEST_S3_ENDPOINT=127.0.0.1:$port"
		echo "CAPSTREAM_TEST_S3_ACCESS_KEY=$key"
		echo "CAPSTREAM_TEST_S3_SECRET_KEY=$secret"
		echo "CAPSTREAM_TEST_S3_TLS=1"
	} >>"$ENV_FILE.tmp"
}

start_kube() {
	local bin d="$DEV_DIR/etcd" k="$DEV_DIR/kube-apiserver" client peer secure token user_token
	bin="$(k8s_bin_dir)"
	mkdir -p "$d/data" "$k/certs"
	client=$(free_port)
	peer=$(free_port)
	start etcd "$bin/etcd" --name capstream --data-dir "$d/data" \
		--listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
		--listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "capstream=http://127.0.0.1:$peer" --unsafe-no-fsync --log-level warn
	wait_for etcd 100 curl -sf "http://127.0.0.1:$client/health"

	secure=$(free_port)
	token="$(openssl rand -hex 16)"
	# capstream-dev-user is an ordinary user with no rights of its own
	# (group capstream-dev-users): tests grant it Roles, as a namespace
	# admin grants a developer, and call the access API with its token.
	user_token="$(openssl rand -hex 16)"
	{
		echo "$token,capstream-admin,capstream-admin,\"system:masters\""
		echo "$user_token,capstream-dev-user,capstream-dev-user-uid,\"capstream-dev-users\""
	} >"$k/tokens.csv"
	chmod 600 "$k/tokens.csv"
	openssl genrsa -out "$k/sa.key" 2048 2>/dev/null
	openssl rsa -in "$k/sa.key" -pubout -out "$k/sa.pub" 2>/dev/null
	start kube-apiserver "$bin/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$client" \
		--bind-address 127.0.0.1 --secure-port "$secure" --cert-dir "$k/certs" \
		--advertise-address 127.0.0.1 --endpoint-reconciler-type none \
		--service-cluster-ip-range 10.0.0.0/24 \
		--service-account-issuer https://kubernetes.default.svc \
		--service-account-key-file "$k/sa.pub" --service-account-signing-key-file "$k/sa.key" \
		--token-auth-file "$k/tokens.csv" --authorization-mode RBAC \
		--disable-admission-plugins ServiceAccount --allow-privileged=true
	wait_for kube-apiserver 300 curl -sfk -H "Authorization: Bearer $token" "https://127.0.0.1:$secure/readyz"
	cat >"$k/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: capstream-dev
  cluster:
    server: https://127.0.0.1:$secure
    insecure-skip-tls-verify: true
users:
- name: capstream-admin
  user:
    token: $token
contexts:
- name: capstream-dev
  context:
    cluster: capstream-dev
    user: capstream-admin
current-context: capstream-dev
EOF
	{
		echo "CAPSTREAM_TEST_KUBECONFIG=$k/kubeconfig"
		echo "CAPSTREAM_TEST_KUBE_USER=capstream-dev-user"
		echo "CAPSTREAM_TEST_KUBE_USER_TOKEN=$user_token"
	} >>"$ENV_FILE.tmp"
}

running() {
	local f
	[ -d "$PID_DIR" ] || return 1
	for f in "$PID_DIR"/*.pid; do
		[ -e "$f" ] || return 1
		kill -0 "$(cat "$f")" 2>/dev/null || return 1
	done
	return 0
}

cmd_up() {
	# Services started by an earlier version of this script, without TLS
	# on S3, or with a plain ClickHouse port or no password, or without
	# the test user and the read-only ClickHouse user, are restarted.
	if running && [ -f "$ENV_FILE" ] && grep -q '^CAPSTREAM_TEST_S3_TLS=1' "$ENV_FILE" &&
		grep -q '^CAPSTREAM_TEST_CLICKHOUSE_SECURE=1' "$ENV_FILE" &&
		grep -q '^CAPSTREAM_TEST_CLICKHOUSE_READER_PASSWORD=.' "$ENV_FILE" &&
		grep -q '^CAPSTREAM_TEST_KUBE_USER_TOKEN=.' "$ENV_FILE"; then
		log "already running; env file $ENV_FILE"
		return 0
	fi
	[ -d "$PID_DIR" ] && cmd_down
	install_all
	mkdir -p "$PID_DIR" "$DEV_DIR/clickhouse" "$DEV_DIR/s3" "$DEV_DIR/etcd" "$DEV_DIR/kube-apiserver"
	: >"$ENV_FILE.tmp"
	# The dev CA and certificates: ClickHouse's secure port and
	# capstream-dev's NATS use them.
	bash "$(dirname "${BASH_SOURCE[0]}")/certs.sh" "$DEV_DIR/tls" >&2
	# Anything that fails after this point stops what was started.
	trap 'cmd_down >/dev/null 2>&1 || true' ERR
	start_clickhouse
	start_s3
	start_kube
	echo "CAPSTREAM_TEST_NATS_CLI=$CACHE_DIR/natscli-$NATSCLI_VERSION/nats" >>"$ENV_FILE.tmp"
	trap - ERR
	mv "$ENV_FILE.tmp" "$ENV_FILE"
	log "services up; env file $ENV_FILE"
	cat "$ENV_FILE" >&2
}

# stop_one NAME stops one recorded service: TERM to its process group, up
# to 10 s for a clean exit, then KILL.
stop_one() {
	local f="$PID_DIR/$1.pid" pid
	[ -e "$f" ] || return 0
	pid="$(cat "$f")"
	# Each service leads its own process group (setsid); signal the group.
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		log "$1 did not stop within 10s of TERM; killing"
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$f"
}

cmd_down() {
	[ -d "$PID_DIR" ] || { rm -rf "$DEV_DIR"; return 0; }
	# Reverse start order: the API server before the etcd it talks to.
	stop_one kube-apiserver &
	stop_one s3 &
	stop_one clickhouse &
	wait
	stop_one etcd
	rm -rf "$DEV_DIR"
	log "services stopped"
}

cmd_status() {
	local f ok=0
	if [ ! -d "$PID_DIR" ]; then
		echo "not running"
		return 1
	fi
	for f in "$PID_DIR"/*.pid; do
		if kill -0 "$(cat "$f")" 2>/dev/null; then
			echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
		else
			echo "$(basename "$f" .pid): stopped"
			ok=1
		fi
	done
	[ -f "$ENV_FILE" ] && cat "$ENV_FILE"
	return $ok
}

case "${1:-}" in
install) install_all ;;
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) echo "$ENV_FILE" ;;
*)
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
