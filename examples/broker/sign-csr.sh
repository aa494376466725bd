#!/bin/sh
# On the CA host: sign a client's certificate request, for client authentication only.
#
#   sign-csr.sh CA_DIR REQUEST.csr EXPECTED_NAME
#
# EXPECTED_NAME is the device id (or ingester identity) you are issuing for; the request's CN
# must equal it, so a request cannot smuggle in another device's identity. Writes NAME.crt beside
# the request; send it (and CA_DIR/ca.crt) back to the device.
set -eu
[ $# -eq 3 ] || { echo "usage: $0 CA_DIR REQUEST.csr EXPECTED_NAME" >&2; exit 2; }
ca=$1; csr=$2; name=$3
days=825
openssl req -in "$csr" -noout -verify 2>/dev/null || { echo "$csr: not a valid, self-signed request" >&2; exit 1; }
subject=$(openssl req -in "$csr" -noout -subject -nameopt RFC2253)
[ "$subject" = "subject=CN=$name" ] || { echo "$csr: subject is '$subject', expected 'subject=CN=$name'" >&2; exit 1; }
ext=$(mktemp)
trap 'rm -f "$ext"' EXIT
printf 'extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n' > "$ext"
crt="$(dirname "$csr")/$name.crt"
openssl x509 -req -in "$csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAcreateserial -sha256 -days $days \
    -extfile "$ext" -out "$crt" 2>/dev/null
chmod 644 "$crt"
echo "signed $crt (CN=$name, client authentication, $days days)"
