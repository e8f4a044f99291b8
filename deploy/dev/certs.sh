#!/usr/bin/env bash
# Makes the TLS material of the dev pipeline and the tests with openssl:
#   ca.pem, ca-key.pem          the dev CA
#   server.pem, server-key.pem  a server certificate for localhost, 127.0.0.1
#                               and ::1 (plus the names in $CAPSTREAM_TLS_SANS,
#                               comma-separated DNS names), signed by the CA
#   client.pem, client-key.pem  a client certificate (CN capstream-client),
#                               signed by the CA
#   other-ca.pem                a second CA that signs nothing: the wrong CA
#                               of the tests
# into the directory given (default /tmp/capstream-dev/tls). Existing files
# are kept while the server certificate is valid for another day, so it is
# cheap to call before every start. Keys are EC P-256, mode 0600.
set -euo pipefail

dir=${1:-/tmp/capstream-dev/tls}
mkdir -p "$dir"
cd "$dir"

if [[ -s ca.pem && -s server.pem && -s client.pem && -s other-ca.pem ]] &&
	openssl x509 -in server.pem -noout -checkend 86400 >/dev/null 2>&1; then
	exit 0
fi

umask 077
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days 365 -subj "/CN=capstream dev CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out ca.pem 2>/dev/null

key other-key.pem
openssl req -x509 -new -key other-key.pem -sha256 -days 365 -subj "/CN=capstream other CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out other-ca.pem 2>/dev/null
rm -f other-key.pem

sans="DNS:localhost,IP:127.0.0.1,IP:::1"
IFS=',' read -ra extra <<<"${CAPSTREAM_TLS_SANS:-}"
for n in "${extra[@]}"; do
	[[ -n "$n" ]] && sans="$sans,DNS:$n"
done

sign() { # name cn extendedKeyUsage [subjectAltName]
	local name=$1 cn=$2 eku=$3 san=${4:-}
	key "$name-key.pem"
	openssl req -new -key "$name-key.pem" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$eku"
		[[ -n "$san" ]] && echo "subjectAltName=$san"
	} >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 -days 30 \
		-extfile "$name.ext" -out "$name.pem" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}
sign server "capstream dev server" serverAuth "$sans"
sign client capstream-client clientAuth
rm -f ca.srl
chmod 0600 ./*-key.pem
chmod 0644 ca.pem other-ca.pem server.pem client.pem
echo "certs: TLS material in $dir"
