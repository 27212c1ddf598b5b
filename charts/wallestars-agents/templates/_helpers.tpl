{{- define "wallestars.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's name prefix for namespaced objects. */}}
{{- define "wallestars.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if or (contains (include "wallestars.name" .) .Release.Name) (hasPrefix "wallestars" .Release.Name) -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "wallestars.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Kubernetes' recommended labels. */}}
{{- define "wallestars.labels" -}}
app.kubernetes.io/name: {{ include "wallestars.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wallestars-agents
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: name, instance, component. */}}
{{- define "wallestars.selector" -}}
app.kubernetes.io/name: {{ include "wallestars.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "wallestars.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .name $tag -}}
{{- end -}}

{{- define "wallestars.masterKeySecret" -}}
{{- default (printf "%s-master-key" (include "wallestars.fullname" .)) .Values.masterKey.existingSecret -}}
{{- end -}}

{{- define "wallestars.webhooksService" -}}
{{- printf "%s-webhooks" (include "wallestars.fullname" .) -}}
{{- end -}}

{{- define "wallestars.webhooksURL" -}}
{{- printf "%s://%s.%s.svc:%v" (ternary "https" "http" .Values.webhooks.tls.enabled) (include "wallestars.webhooksService" .) .Release.Namespace .Values.webhooks.service.port -}}
{{- end -}}

{{- define "wallestars.cloudCallbackURL" -}}
{{- $w := .Values.webhooks -}}
{{- if .Values.operator.cloudCallbackBaseURL -}}{{ .Values.operator.cloudCallbackBaseURL }}
{{- else if and $w.ingress.enabled $w.ingress.host -}}{{ printf "https://%s" $w.ingress.host }}
{{- else if and $w.httpRoute.enabled $w.httpRoute.hostnames -}}{{ printf "https://%s" (first $w.httpRoute.hostnames) }}
{{- end -}}
{{- end -}}

{{- define "wallestars.webhooksTLSSecret" -}}
{{- printf "%s-webhooks-tls" (include "wallestars.fullname" .) -}}
{{- end -}}

{{/* Pod Security Standards "restricted" (DESIGN.md §7), for every pod of the chart. */}}
{{- define "wallestars.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "wallestars.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
