#!/bin/sh
# Make a private CA and the broker certificate, on the CA host.
#
#   examples/broker/make-certs.sh OUT_DIR BROKER_HOST
#
# BROKER_HOST is the name (or IP address) devices use to reach the broker; it goes into the
# broker certificate's subjectAltName. Client keys are NOT made here: each device (and each
# ingester) makes its own key and a certificate request with device-csr.sh, and only the request
# comes here to be signed with sign-csr.sh -- a private key never leaves the machine that uses it.
# Copy ca.crt + broker.crt + broker.key to the broker; ca.key stays here (offline if you can).
# Re-running keeps the existing CA and broker certificate.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 OUT_DIR BROKER_HOST   (client certificates: device-csr.sh, sign-csr.sh)" >&2; exit 2; }
out=$1; host=$2
mkdir -p "$out"
cd "$out"
umask 077
days=825

if [ ! -f ca.key ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 3650 \
        -subj "/CN=fieldcap private CA" -keyout ca.key -out ca.crt 2>/dev/null
fi

case "$host" in
    *[!0-9.]*) san="DNS:$host" ;;
    *) san="IP:$host" ;;
esac
if [ ! -f broker.key ]; then
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
        -subj "/CN=$host" -keyout broker.key -out broker.csr 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > broker.ext
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days $days \
        -extfile broker.ext -out broker.crt 2>/dev/null
    rm -f broker.csr broker.ext
fi
chmod 644 ca.crt broker.crt
echo "CA and broker certificate in $out: ca.crt (give to every client), broker.crt/key (broker only), ca.key (keep here)"
