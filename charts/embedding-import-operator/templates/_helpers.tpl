{{/* Chart name, overridable with nameOverride. */}}
{{- define "eio.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Base name of every object: fullnameOverride, or <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "eio.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "eio.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "eio.labels" -}}
helm.sh/chart: {{ include "eio.chart" . }}
{{ include "eio.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: embedding-import
{{- end }}

{{/* Labels that select the operator pod (immutable in the Deployment selector). */}}
{{- define "eio.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eio.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "eio.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eio.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* true when the operator watches every namespace. */}}
{{- define "eio.clusterScoped" -}}
{{- if eq .Values.scope "cluster" }}true{{ end }}
{{- end }}

{{/* The namespace watched in namespace scope (empty in cluster scope). */}}
{{- define "eio.watchNamespace" -}}
{{- if eq .Values.scope "namespace" }}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- else if .Values.watchNamespace }}
{{- fail "watchNamespace is only used with scope=namespace; leave it empty with scope=cluster" }}
{{- end }}
{{- end }}

{{/* Image reference from {registry, repository, tag, digest}; tag defaults to appVersion. Call with (list $image $). */}}
{{- define "eio.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- with $image.registry }}{{ trimSuffix "/" . }}/{{ end }}
{{- $image.repository }}
{{- if $image.digest }}@{{ $image.digest }}{{ else }}:{{ default $root.Chart.AppVersion $image.tag }}{{ end }}
{{- end }}
