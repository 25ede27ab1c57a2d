#!/usr/bin/env bash
# Starts Apache with mod_security2 and Debian's OWASP Core Rule Set on loopback, as a peer for
# bench/waf/run.sh and as the reference scripts/crs-corpus.py labels negatives with.
#
#   bench/waf/apache-crs.sh start PORT PARANOIA DIR    # installs the packages if missing
#   bench/waf/apache-crs.sh stop DIR
#
# Every request gets 200 from a static file unless the CRS blocks it (403), at the given
# paranoia level, in anomaly-scoring mode with the default inbound threshold of 5.
set -euo pipefail

action=${1:?start|stop}
if [[ $action == stop ]]; then
  dir=${2:?dir}
  [[ -f $dir/httpd.pid ]] && kill "$(cat "$dir/httpd.pid")" 2>/dev/null || true
  exit 0
fi
port=${2:?port}
paranoia=${3:-1}
dir=${4:?dir}

if [[ ! -f /usr/lib/apache2/modules/mod_security2.so || ! -d /usr/share/modsecurity-crs/rules ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q apache2 libapache2-mod-security2 modsecurity-crs >/dev/null
fi

mkdir -p "$dir/htdocs" "$dir/modsec" "$dir/logs"
# Apache serves as user daemon: the document root and the folders above it must be readable.
chmod a+rx "$dir" "$(dirname "$dir")"
echo ok > "$dir/htdocs/index.html"
modules=/usr/lib/apache2/modules
sed -e 's/^SecRuleEngine .*/SecRuleEngine On/' \
    -e 's|^SecAuditLog .*|SecAuditLog /dev/null|' \
    -e 's/^SecAuditEngine .*/SecAuditEngine Off/' \
    /etc/modsecurity/modsecurity.conf-recommended > "$dir/modsecurity.conf"
cp /etc/modsecurity/unicode.mapping "$dir/unicode.mapping"
cat > "$dir/httpd.conf" <<CONF
ServerRoot "$dir"
ServerName localhost
Listen 127.0.0.1:$port
PidFile "$dir/httpd.pid"
ErrorLog "$dir/logs/error.log"
LogLevel error
User daemon
Group daemon
LoadModule mpm_event_module $modules/mod_mpm_event.so
LoadModule authz_core_module $modules/mod_authz_core.so
LoadModule mime_module $modules/mod_mime.so
TypesConfig /etc/mime.types
LoadModule dir_module $modules/mod_dir.so
LoadModule rewrite_module $modules/mod_rewrite.so
LoadModule unique_id_module $modules/mod_unique_id.so
LoadModule security2_module $modules/mod_security2.so
StartServers 2
ThreadsPerChild 50
MaxRequestWorkers 100
KeepAliveTimeout 5
DocumentRoot "$dir/htdocs"
<Directory "$dir/htdocs">
  Require all granted
</Directory>
RewriteEngine On
RewriteRule ^ /index.html [L]
<IfModule security2_module>
  SecDataDir "$dir/modsec"
  Include "$dir/modsecurity.conf"
  Include /etc/modsecurity/crs/crs-setup.conf
  SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level=$paranoia"
  Include /usr/share/modsecurity-crs/rules/*.conf
</IfModule>
CONF
apache2 -f "$dir/httpd.conf" -k start
for _ in $(seq 50); do
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then exit 0; fi
  sleep 0.1
done
echo "apache did not start; see $dir/logs/error.log" >&2
exit 1
