#!/bin/sh
# Make a private CA, a broker certificate and one client certificate per device / ingester.
#
#   examples/broker/make-certs.sh OUT_DIR BROKER_HOST CLIENT...
#
# BROKER_HOST is the name (or IP address) devices use to reach the broker; it goes into the
# broker certificate's subjectAltName. Each CLIENT is a device id (e.g. booth-01) or an ingester
# identity (ingest): it becomes the certificate's CN, which Mosquitto's use_identity_as_username
# turns into the MQTT username that the ACL patterns match. Keys never leave OUT_DIR: copy
# ca.crt + CLIENT.crt + CLIENT.key to each device (systemd LoadCredential=), and ca.crt +
# broker.crt + broker.key to the broker. Re-running adds clients and keeps the existing CA.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 OUT_DIR BROKER_HOST CLIENT..." >&2; exit 2; }
out=$1; host=$2; shift 2
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

for name in "$@"; do
    case "$name" in
        *[!A-Za-z0-9_.-]*|"") echo "$name: a client name may hold only letters, digits, '_', '.', '-'" >&2; exit 2 ;;
    esac
    [ -f "$name.key" ] && continue
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
        -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days $days \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
done
chmod 644 ca.crt broker.crt ./*.crt
echo "certificates in $out: ca.crt broker.crt/key $(printf '%s.crt/key ' "$@")"
