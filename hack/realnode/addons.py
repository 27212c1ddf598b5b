"""The real node's add-ons: cluster DNS, the NetworkPolicy enforcer, the storage provisioner.

- CoreDNS runs as a Deployment behind the cluster DNS Service, from an image holding only
  its static binary (built from its Go module, hack/gobuild/coredns).
- kube-router runs on the host in firewall-only mode (it programs the host's iptables
  and ipsets, as its DaemonSet does with hostNetwork): NetworkPolicy ingress and egress.
- local-path-provisioner runs on the host and binds PVCs to directories under the node's
  root, creating them through helper pods from a busybox image made here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from realnode.config import CLUSTER_DNS, CLUSTER_DOMAIN

Obj = dict[str, Any]
COREDNS_UID = 65532
LOCAL_PATH_NS = "local-path-storage"
LOCAL_PATH_SA = "local-path-provisioner-service-account"
PROVISIONER = "rancher.io/local-path"

# No upstream resolver exists here, so there is no `forward`: names outside the cluster
# get NXDOMAIN from the catch-all block at once (one block with nothing after the
# kubernetes plugin would answer SERVFAIL, which resolvers retry).
COREFILE = f"""\
{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        ttl 30
    }}
    prometheus :9153
    cache 30 {{
        disable success {CLUSTER_DOMAIN}
        disable denial {CLUSTER_DOMAIN}
    }}
    loadbalance
}}
.:53 {{
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def _cluster_role(name: str, rules: list[Obj], subject: Obj) -> list[Obj]:
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules},
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [subject],
        },
    ]


def coredns(image: str) -> list[Obj]:
    """kubeadm's CoreDNS objects, adapted: non-root on port 53 through the namespaced
    ip_unprivileged_port_start sysctl (a safe sysctl) instead of NET_BIND_SERVICE."""
    labels = {"k8s-app": "kube-dns"}
    ns = "kube-system"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}},
        *_cluster_role(
            "system:coredns",
            [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
            {"kind": "ServiceAccount", "name": "coredns", "namespace": ns},
        ),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": ns},
         "data": {"Corefile": COREFILE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": COREDNS_UID,
                            "runAsGroup": COREDNS_UID,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}],
                        },
                        "containers": [{
                            "name": "coredns",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [
                                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                            ],
                            "resources": {"requests": {"cpu": "50m", "memory": "70Mi"},
                                          "limits": {"memory": "170Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns",
                                              "readOnly": True}],
                            "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                              "periodSeconds": 10, "failureThreshold": 5},
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                               "periodSeconds": 2},
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153, "protocol": "TCP"},
                ],
            },
        },
    ]  # fmt: skip


def kubelet_api_access(user: str) -> list[Obj]:
    """The API server's client certificate may use the kubelet's API (logs, exec, port
    forwarding): the kubelet authorizes by webhook, so it needs the role, as kubeadm gives."""
    return [{
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "wallestars:apiserver-kubelet-api"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:kubelet-api-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }]  # fmt: skip


def kube_router_rbac(user: str) -> list[Obj]:
    """What kube-router's firewall reads (it waits for each of these at start)."""
    return _cluster_role(
        "wallestars:kube-router",
        [
            {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
             "verbs": ["get", "list", "watch"]},
        ],
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user},
    )  # fmt: skip


def local_path(helper_image: str, user: str) -> list[Obj]:
    """local-path-provisioner's objects: its namespace (helper pods mount hostPath, so it
    is privileged), the helper pods' account, its RBAC, config and the default class."""
    ns = LOCAL_PATH_NS
    helper_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "priorityClassName": "system-node-critical",
            "containers": [{"name": "helper-pod", "image": helper_image,
                            "imagePullPolicy": "Never"}],
        },
    }  # fmt: skip
    role_rules = [
        {"apiGroups": [""], "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods",
                                          "pods/log"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumes"],
         "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"],
         "verbs": ["get", "list", "watch"]},
    ]  # fmt: skip
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {
            "pod-security.kubernetes.io/enforce": "privileged"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": LOCAL_PATH_SA, "namespace": ns}},
        *_cluster_role("wallestars:local-path-provisioner", role_rules,
                       {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "local-path-provisioner", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["pods"],
                    "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "local-path-provisioner", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "local-path-provisioner"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local-path-config", "namespace": ns},
         "data": {
             "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
             "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
             "helperPod.yaml": json.dumps(helper_pod),
         }},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": "local-path",
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": PROVISIONER,
         # It provisions on the node the pod was scheduled to, so binding waits for that.
         "volumeBindingMode": "WaitForFirstConsumer",
         "reclaimPolicy": "Delete"},
    ]  # fmt: skip


def local_path_config(volumes: Path) -> str:
    return json.dumps(
        {
            "nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(volumes)]}],
            "cmdTimeoutSeconds": 120,
        }
    )
