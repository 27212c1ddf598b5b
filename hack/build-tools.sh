#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler), helm and smokescreen (the browser agent's egress proxy) from their published Go modules at the versions pinned in
# hack/gobuild/*/go.mod, into a cache outside the repository keyed by version.
# Prints the bin directory of each tool. Safe to run again: a built version is reused.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${WALLESTARS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wallestars}

# Versions come from the build modules, so go.mod is the only place they are pinned.
k8s_version=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/gobuild/kubernetes/go.mod")
etcd_version=$(awk '$1=="require" && $2=="go.etcd.io/etcd/server/v3" {print $3}' "$here/gobuild/etcd/go.mod")
helm_version=$(awk '$1=="require" && $2=="helm.sh/helm/v4" {print $3}' "$here/gobuild/helm/go.mod")
smokescreen_version=$(awk '$1=="require" && $2=="github.com/stripe/smokescreen" {print $3}' "$here/gobuild/smokescreen/go.mod")
prometheus_version=$(awk '$1=="require" && $2=="github.com/prometheus/prometheus" {print $3}' "$here/gobuild/prometheus/go.mod")

# The checksum database is not reachable from these machines; every module is pinned
# by the committed go.sum instead, and -mod=readonly refuses anything not in it.
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
export GONOSUMDB="*" GONOSUMCHECK=1 GOSUMDB=off
export GOTOOLCHAIN=local

# build NAME VERSION MODULE_DIR LDFLAGS PACKAGE...
# WALLESTARS_TOOLS="kubernetes etcd ...": only those (the demo needs no Prometheus).
build() {
  local name=$1 version=$2 dir=$3 ldflags=$4
  shift 4
  if [ -n "${WALLESTARS_TOOLS:-}" ] && [[ " $WALLESTARS_TOOLS " != *" $name "* ]]; then
    return 0
  fi
  local out="$cache/$name-$version"
  local missing=0 pkg
  for pkg in "$@"; do [ -x "$out/$(basename "$pkg")" ] || missing=1; done
  if [ "$missing" = 1 ]; then
    echo "building $name $version (first time only; cached in $out)" >&2
    local tmp
    tmp=$(mktemp -d "$cache/.build-$name-XXXXXX")
    (cd "$dir" && go build -ldflags "$ldflags" -o "$tmp/" "$@")
    rm -rf "$out" && mv "$tmp" "$out"
  fi
  echo "$out"
}

mkdir -p "$cache"
minor=${k8s_version#v1.}; minor=${minor%%.*}
k8s_ld="-s -w"
# Stamp the version the way Kubernetes' own build does, so /version, kubectl and helm see it.
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ld="$k8s_ld -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  k8s_ld="$k8s_ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
build kubernetes "$k8s_version" "$here/gobuild/kubernetes" "$k8s_ld" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy
build etcd "$etcd_version" "$here/gobuild/etcd" "-s -w" wallestars.local/gobuild/etcd
build helm "$helm_version" "$here/gobuild/helm" \
  "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version" helm.sh/helm/v4/cmd/helm
# The browser agent's egress proxy (agent_images/wallestars_browser/egress.py).
build smokescreen "$smokescreen_version" "$here/gobuild/smokescreen" "-s -w" github.com/stripe/smokescreen
# Prometheus (the chart's tests evaluate every dashboard and alert query against it). Its
# Go module is v0.MAJORMINOR.PATCH for release vMAJOR.MINOR.PATCH (v0.316.0 is 3.16.0).
prom_mm=${prometheus_version#v0.}; prom_mm=${prom_mm%%.*}
prom_release="${prom_mm:0:1}.$((10#${prom_mm:1})).${prometheus_version##*.}"
build prometheus "$prometheus_version" "$here/gobuild/prometheus" \
  "-s -w -X github.com/prometheus/common/version.Version=$prom_release" github.com/prometheus/prometheus/cmd/prometheus
# monitoringcheck (our own small tool: hack/gobuild/monitoringcheck): keyed by the
# prometheus-operator API version and by its source, so an edit rebuilds it.
promop_version=$(awk '$1=="github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring" {print $2}' "$here/gobuild/monitoringcheck/go.mod")
mc_src=$(cat "$here/gobuild/monitoringcheck/main.go" "$here/gobuild/monitoringcheck/go.sum" | sha256sum | cut -c1-12)
build monitoringcheck "$promop_version-$mc_src" "$here/gobuild/monitoringcheck" "-s -w" wallestars.local/gobuild/monitoringcheck
# The real node's add-ons (hack/realnode, docs/local-cluster.md): cluster DNS, the
# NetworkPolicy enforcer, the storage provisioner, and crictl to look at containers.
gomod_version() { awk -v m="$2" '$1=="require" && $2==m {print $3}' "$here/gobuild/$1/go.mod"; }
export CGO_ENABLED=0
build coredns "$(gomod_version coredns github.com/coredns/coredns)" "$here/gobuild/coredns" \
  "-s -w" wallestars.local/gobuild/coredns
build kube-router "$(gomod_version kube-router github.com/cloudnativelabs/kube-router/v2)" \
  "$here/gobuild/kube-router" "-s -w" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
build local-path-provisioner "$(gomod_version local-path-provisioner github.com/rancher/local-path-provisioner)" \
  "$here/gobuild/local-path-provisioner" "-s -w" github.com/rancher/local-path-provisioner
build crictl "$(gomod_version cri-tools sigs.k8s.io/cri-tools)" "$here/gobuild/cri-tools" \
  "-s -w" sigs.k8s.io/cri-tools/cmd/crictl
