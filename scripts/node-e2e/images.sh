#!/bin/bash
# The test images of the node conformance run, built offline and pushed into
# a local registry under their upstream paths (registry.k8s.io/<path> is
# served as <registry>/<path>; the runtimes map registry.k8s.io to it).
#
# Each image is one layer: a root filesystem made from Debian packages
# (apt-get download, unpacked, never installed), binaries built by build.sh
# from the pinned Kubernetes module, and a static pause.c from that module.
# The busybox is Debian's regular (dynamic) build, not busybox-static, whose
# shell runs applets in-process and never execs /bin/<applet>; nmeter.c adds
# the one applet the suite uses that Debian builds without. The layers are
# cached in $CACHE/images and rebuilt when this script or versions.env change;
# the manifests are pushed each time, since the registry keeps them in memory.
#
# Usage: images.sh REGISTRY (host:port)
# Env:   NODE_E2E_CACHE (default /var/cache/husk-node-e2e)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$HERE/versions.env"
REG=${1:?usage: images.sh host:port}
CACHE=${NODE_E2E_CACHE:-/var/cache/husk-node-e2e}
BIN=$CACHE/bin/$K8S_VERSION
CRANE=$CACHE/bin/crane-$CRANE_VERSION/crane
K8S=$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION
IMG=$CACHE/images
DEBS=$CACHE/debs
MTIME=@946684800 # fixed times make the layers, and so the digests, repeatable

# What the runtimes pull (test/utils/image/manifest.go of K8S_VERSION); the
# busybox, agnhost and pause tags are read from it below and checked.
E2E=e2e-test-images

log() { echo "node-e2e images: $*"; }
die() { echo "node-e2e images: $*" >&2; exit 1; }

# The Debian packages of each image. Each list closes over the shared
# libraries its binaries need (the chroot checks below fail otherwise).
BASE_DEBS="libc6 libgcc-s1 busybox"
AGNHOST_DEBS="bash libtinfo6 curl libcurl4 libbrotli1 libgssapi-krb5-2 libcom-err2 libk5crypto3 libkrb5-3
 libkrb5support0 libkeyutils1 libidn2-0 libunistring2 libldap-2.5-0 libsasl2-2 libsasl2-modules-db libdb5.3
 libgnutls30 libgmp10 libhogweed6 libnettle8 libp11-kit0 libffi8 libtasn1-6 libnghttp2-14 libpsl5 librtmp1
 libssh2-1 libssl3 libzstd1 zlib1g netcat-openbsd libbsd0 libmd0"
NGINX_DEBS="nginx nginx-common libcrypt1 libpcre2-8-0 libssl3 zlib1g"
GLIBC_DNS_DEBS="hostname"

fetch_debs() {
	mkdir -p "$DEBS"
	local missing=""
	for p in $BASE_DEBS $AGNHOST_DEBS $NGINX_DEBS $GLIBC_DNS_DEBS; do
		compgen -G "$DEBS/${p}_*.deb" >/dev/null || missing="$missing $p"
	done
	[ -z "$missing" ] && return
	log "apt-get download$missing"
	# shellcheck disable=SC2086
	(cd "$DEBS" && apt-get download $missing 2>&1 | { grep -v '^W: Download is performed unsandboxed' || true; })
	for p in $missing; do compgen -G "$DEBS/${p}_*.deb" >/dev/null || die "apt-get download $p failed"; done
}

# unpack ROOT PKG...: extract the packages' files (no maintainer scripts). A
# file already there (a busybox applet link) is removed first: tar would
# write through the hard link into busybox itself.
unpack() {
	local r=$1 p deb f
	shift
	for p in "$@"; do
		deb=$(compgen -G "$DEBS/${p}_*.deb" | head -1)
		dpkg-deb --fsys-tarfile "$deb" | tar -t | while read -r f; do
			if [ -e "$r/$f" ] || [ -L "$r/$f" ]; then [ -d "$r/$f" ] || rm -f "$r/$f"; fi
		done
		dpkg-deb -x "$deb" "$r"
		# Its commands replace busybox's applets of the same name in any
		# bin dir, whichever comes first on PATH.
		dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -n 's#^\./\(usr/\)\{0,1\}s\{0,1\}bin/\([^/]\{1,\}\)$#\2#p' |
			while read -r f; do drop_applet "$r" "$f"; done
	done
}

# drop_applet ROOT NAME: remove busybox's applet links named NAME.
drop_applet() {
	local d
	[ "$2" = busybox ] && return 0
	for d in bin sbin usr/bin usr/sbin; do
		[ "$1/$d/$2" -ef "$1/bin/busybox" ] && rm -f "$1/$d/$2"
	done
	return 0
}

# Known gap: the ash of Debian's busybox 1.35 drops environment variables
# whose names are not shell names ("data-1" from a Secret or a ConfigMap)
# before it runs a command; busybox 1.37's passes them on. No busybox newer
# than 1.35 is at hand offline, and another shell would change the messages
# the suite compares ("/bin/sh: can't create /file: Read-only file system").
base_root() {
	local r=$1 a
	mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,home,tmp,var/run,var/www,var/spool/mail,dev,proc,sys}
	chmod 1777 "$r/tmp"
	chmod 700 "$r/root"
	# shellcheck disable=SC2086
	unpack "$r" $BASE_DEBS
	# One hard link per applet in /bin, as in the busybox image (the suite
	# runs /bin/top); a file a package put there wins.
	for a in $(chroot "$r" /bin/busybox --list); do
		[ -e "$r/bin/$a" ] || ln "$r/bin/busybox" "$r/bin/$a"
	done
	# The applet Debian leaves out that the suite uses (see nmeter.c).
	install -m 0755 "$IMG/nmeter" "$r/usr/bin/nmeter"
	printf 'include /etc/ld.so.conf.d/*.conf\n' >"$r/etc/ld.so.conf"
	printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$r/etc/nsswitch.conf"
	cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
	cat >"$r/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
EOF
	chmod 644 "$r/etc/passwd" "$r/etc/group"
}

# agnhost as test/images/agnhost/Dockerfile makes it: /agnhost and an
# agnhost-2 link, the porter's certificate, /uploads, bash, curl and nc, and
# a user and group defined in the image (the supplemental groups tests).
agnhost_root() {
	local r=$1
	# shellcheck disable=SC2086
	unpack "$r" $AGNHOST_DEBS
	# What netcat-openbsd's alternative would link.
	drop_applet "$r" nc
	ln -s /bin/nc.openbsd "$r/bin/nc"
	install -m 0755 "$BIN/agnhost" "$r/agnhost"
	ln -s agnhost "$r/agnhost-2"
	install -m 0644 "$K8S/test/images/agnhost/porter/localhost.crt" "$r/localhost.crt"
	install -m 0600 "$K8S/test/images/agnhost/porter/localhost.key" "$r/localhost.key"
	mkdir -p "$r/uploads" "$r/home/user-defined-in-image"
	chown 1000:1000 "$r/home/user-defined-in-image"
	echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$r/etc/passwd"
	echo 'user-defined-in-image:x:1000:' >>"$r/etc/group"
	echo 'group-defined-in-image:x:50000:user-defined-in-image' >>"$r/etc/group"
}

# kitten is agnhost plus two files; the image volume tests read them and the
# os-release of the image (Alpine Linux upstream, the base it is built on).
kitten_root() {
	local r=$1
	agnhost_root "$r"
	install -m 0644 "$K8S/test/images/kitten/html/kitten.jpg" "$K8S/test/images/kitten/html/data.json" "$r/"
	printf 'NAME="Alpine Linux"\nID=alpine\nPRETTY_NAME="Alpine Linux (node-e2e stand-in)"\n' >"$r/etc/os-release"
}

# nginx as the official image runs it: master and worker processes, the pid
# in /var/run/nginx.pid, the welcome page on port 80, logs on stdout/stderr.
nginx_root() {
	local r=$1
	# shellcheck disable=SC2086
	unpack "$r" $NGINX_DEBS
	echo 'nginx:x:101:101:nginx:/nonexistent:/bin/false' >>"$r/etc/passwd"
	echo 'nginx:x:101:' >>"$r/etc/group"
	mkdir -p "$r/usr/share/nginx/html" "$r/var/log/nginx" "$r/var/cache/nginx" "$r/var/lib/nginx"
	printf '<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n<body><h1>Welcome to nginx!</h1></body></html>\n' \
		>"$r/usr/share/nginx/html/index.html"
	ln -sf /dev/stdout "$r/var/log/nginx/access.log"
	ln -sf /dev/stderr "$r/var/log/nginx/error.log"
	cat >"$r/etc/nginx/nginx.conf" <<'EOF'
user nginx;
worker_processes 1;
error_log /var/log/nginx/error.log warn;
pid /var/run/nginx.pid;
events { worker_connections 1024; }
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	access_log /var/log/nginx/access.log;
	server {
		listen 80;
		server_name localhost;
		location / { root /usr/share/nginx/html; index index.html; }
	}
}
EOF
}

nonewprivs_root() { install -m 4755 "$BIN/nnp" "$1/usr/local/bin/nnp"; }

# glibc's `hostname -f` (getaddrinfo through nsswitch), in place of the applet.
glibc_dns_root() {
	# shellcheck disable=SC2086
	unpack "$1" $GLIBC_DNS_DEBS
}

pause_root() {
	mkdir -p "$1"
	gcc -Os -Wall -Werror -static "-DVERSION=v${PAUSE_VERSION}-$K8S_VERSION" -o "$1/pause" "$K8S/build/pause/linux/pause.c"
}

# layer NAME FUNC...: a fresh root with each FUNC applied, checked, as a tar.
layer() {
	local name=$1 r=$IMG/roots/$1
	shift
	rm -rf "$r"
	mkdir -p "$r"
	for f in "$@"; do "$f" "$r"; done
	[ -e "$r/etc/ld.so.conf" ] && ldconfig -r "$r"
	# Upper-level entries only: no leading "./", as image builders write them.
	(cd "$r" && tar --numeric-owner --sort=name --mtime="$MTIME" -cf "$IMG/layers/$name.tar" -- *)
}

# check ROOT-NAME COMMAND...: run a command of the image in a chroot of it.
check() {
	local name=$1 r=$IMG/roots/$1
	shift
	chroot "$r" "$@" >/dev/null 2>&1 || die "image $name: '$*' fails: $(chroot "$r" "$@" 2>&1 | tail -3)"
}

# shellcheck disable=SC2016 # the checks' $(...) run in the image
build_layers() {
	local stamp
	stamp="$(cat "$HERE/versions.env" "$0" "$HERE/nmeter.c" | sha256sum | cut -c1-16) $(sha256sum "$BIN/agnhost" "$BIN/nnp" | cut -c1-16 | tr '\n' ' ')"
	if [ -f "$IMG/stamp" ] && [ "$(cat "$IMG/stamp")" = "$stamp" ]; then
		log "layers cached in $IMG/layers"
		return
	fi
	if ! command -v gcc >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/libc.a ]; then
		die "need gcc and libc6-dev (static pause and nmeter)"
	fi
	fetch_debs
	rm -rf "$IMG"
	mkdir -p "$IMG/layers"
	gcc -Os -Wall -Werror -static -o "$IMG/nmeter" "$HERE/nmeter.c"
	layer busybox base_root
	check busybox /bin/sh -c 'ls / && id -u && wget --help && date -u +%FT$(nmeter -d0 %3t | head -n1)Z'
	check busybox /bin/top -b -n1
	layer agnhost base_root agnhost_root
	check agnhost /agnhost --version
	check agnhost /bin/bash -c 'curl --version && [ "$(readlink -f "$(command -v nc)")" = /bin/nc.openbsd ]'
	check agnhost id user-defined-in-image
	layer kitten base_root kitten_root
	layer nginx base_root nginx_root
	check nginx /usr/sbin/nginx -t
	layer nonroot base_root
	layer nonewprivs base_root nonewprivs_root
	check nonewprivs /usr/local/bin/nnp
	layer glibc-dns-testing base_root glibc_dns_root
	check glibc-dns-testing sh -c '[ "$(command -v hostname)" = /bin/hostname ] && hostname --version'
	layer pause pause_root
	check pause /pause -v
	rm -rf "$IMG/roots"
	echo "$stamp" >"$IMG/stamp"
	log "layers built in $IMG/layers: $(du -sh "$IMG/layers" | cut -f1)"
}

# image LAYER REF [crane mutate flags...]: push a one-layer image under REF.
# Its tag is a label too: two tags of one layer (agnhost 2.55 and 2.63.0) are
# two images, as upstream, not one image with two tags.
image() {
	local layer=$1 ref=$REG/$2
	shift 2
	set -- --set-platform linux/amd64 --label "org.opencontainers.image.version=${ref##*:}" -t "$ref" "$@"
	"$CRANE" append --oci-empty-base -f "$IMG/layers/$layer.tar" -t "$ref" >/dev/null 2>&1
	"$CRANE" mutate "$ref" "$@" >/dev/null 2>&1 || die "crane mutate $ref failed: $("$CRANE" mutate "$ref" "$@" 2>&1 | tail -2)"
	echo "  $ref"
}

# The references the suite asks for must be the ones this script serves.
manifest_tag() { sed -n "s/.*configs\[$1\] = Config{list\.[A-Za-z0-9]*, \"[^\"]*\", \"\([^\"]*\)\"}.*/\1/p" "$K8S/test/utils/image/manifest.go"; }
for want in "BusyBox 1.37.0-1" "Agnhost $AGNHOST_VERSION" "AgnhostPrev 2.55" "Pause $PAUSE_VERSION" "Nginx 1.15-4" \
	"NonRoot 1.5" "Nonewprivs 1.4" "GlibcDnsTesting 2.0.0" "Kitten 1.8"; do
	# shellcheck disable=SC2086 # two words
	set -- $want
	[ "$(manifest_tag "$1")" = "$2" ] || die "manifest.go of $K8S_VERSION wants $1:$(manifest_tag "$1"), this script builds $2"
done

[ -x "$CRANE" ] || die "no crane in $CRANE (run build.sh)"
build_layers
log "pushing to $REG"
PATHENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
image busybox "$E2E/busybox:1.37.0-1" --env "$PATHENV" --cmd sh
image agnhost "$E2E/agnhost:$AGNHOST_VERSION" --env "$PATHENV" --entrypoint /agnhost --cmd pause \
	--exposed-ports 80/tcp,8080/tcp,8081/tcp,9376/tcp,5000/tcp
image agnhost "$E2E/agnhost:2.55" --env "$PATHENV" --entrypoint /agnhost --cmd pause \
	--exposed-ports 80/tcp,8080/tcp,8081/tcp,9376/tcp,5000/tcp
image kitten "$E2E/kitten:1.8" --env "$PATHENV" --entrypoint /agnhost --cmd test-webserver
image nginx "$E2E/nginx:1.15-4" --env "$PATHENV" --cmd nginx,-g,'daemon off;' --exposed-ports 80/tcp
image nonroot "$E2E/nonroot:1.5" --env "$PATHENV" --cmd sh --user 1234
image nonewprivs "$E2E/nonewprivs:1.4" --env "$PATHENV" --cmd nnp
image glibc-dns-testing "$E2E/glibc-dns-testing:2.0.0" --env "$PATHENV" --cmd sh
image pause "pause:$PAUSE_VERSION" --entrypoint /pause --user 65535:65535
