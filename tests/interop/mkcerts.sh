#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Creates a throw-away mTLS PKI for the interop tests with certtool (gnutls-bin):
#   ca.pem ca-key.pem            private CA (ECDSA P-256)
#   server.pem server-key.pem    SAN localhost, 127.0.0.1, ::1; serverAuth
#   client.pem client-key.pem    clientAuth
# The same file names as the daemon's development PKI (include/amn/pki.h).
# Usage: mkcerts.sh DIR [CN-PREFIX]
set -eu
dir=${1:?usage: mkcerts.sh DIR [CN-PREFIX]}
prefix=${2:-amaters-interop}
command -v certtool >/dev/null || { echo "mkcerts.sh: certtool not found (apt-get install gnutls-bin)" >&2; exit 1; }
mkdir -p "$dir"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 --no-text --outfile "$1" 2>/dev/null; }

cat > "$tmp/ca.tmpl" <<T
cn = "$prefix CA"
serial = 1
expiration_days = 30
ca
cert_signing_key
crl_signing_key
T
cat > "$tmp/server.tmpl" <<T
cn = "localhost"
serial = 2
expiration_days = 30
dns_name = "localhost"
ip_address = "127.0.0.1"
ip_address = "::1"
tls_www_server
signing_key
digital_signature
T
cat > "$tmp/client.tmpl" <<T
cn = "$prefix client"
serial = 3
expiration_days = 30
tls_www_client
signing_key
digital_signature
T

key "$dir/ca-key.pem"
certtool --generate-self-signed --load-privkey "$dir/ca-key.pem" --template "$tmp/ca.tmpl" \
  --no-text --outfile "$dir/ca.pem" 2>/dev/null
for leaf in server client; do
  key "$dir/$leaf-key.pem"
  certtool --generate-certificate --load-privkey "$dir/$leaf-key.pem" \
    --load-ca-certificate "$dir/ca.pem" --load-ca-privkey "$dir/ca-key.pem" \
    --template "$tmp/$leaf.tmpl" --no-text --outfile "$dir/$leaf.pem" 2>/dev/null
done
chmod 0644 "$dir/ca.pem" "$dir/server.pem" "$dir/client.pem"
