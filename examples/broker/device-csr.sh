#!/bin/sh
# On the device (or ingester host): make its private key and a certificate signing request.
#
#   device-csr.sh NAME OUT_DIR
#
# NAME is the device id (or the ingester identity, e.g. ingest): it becomes the certificate's CN,
# which the broker turns into the MQTT username (use_identity_as_username) that the ACL matches.
# OUT_DIR/NAME.key stays on this machine (mode 0600; point [sync.tls] key_file or systemd
# LoadCredential= at it); send only OUT_DIR/NAME.csr to the CA host for sign-csr.sh.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 NAME OUT_DIR" >&2; exit 2; }
name=$1; out=$2
case "$name" in
    *[!A-Za-z0-9_.-]*|"") echo "$name: a name may hold only letters, digits, '_', '.', '-'" >&2; exit 2 ;;
esac
mkdir -p "$out"
umask 077
[ -f "$out/$name.key" ] && { echo "$out/$name.key exists; remove it to make a new key" >&2; exit 1; }
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -subj "/CN=$name" -keyout "$out/$name.key" -out "$out/$name.csr" 2>/dev/null
chmod 644 "$out/$name.csr"
echo "key $out/$name.key (keep here), request $out/$name.csr (send to the CA host)"
