{{/*
Names, labels and small helpers shared by every template. Names are cut to 63
characters (the DNS label limit) and never end in "-".
*/}}

{{- define "ratline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ratline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>", still at most 63 characters. */}}
{{- define "ratline.suffixed" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s" (include "ratline.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}

{{- define "ratline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ratline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ratline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ratline.labels" -}}
helm.sh/chart: {{ include "ratline.chart" . }}
{{ include "ratline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ratline
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ratline.operatorSelectorLabels" -}}
{{ include "ratline.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "ratline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ratline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ratline.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches: an empty list means every namespace. */}}
{{- define "ratline.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- toJson .Values.operator.watchNamespaces -}}
{{- else if eq .Values.rbac.scope "namespace" -}}
{{- toJson (list .Release.Namespace) -}}
{{- else -}}
{{- toJson (list) -}}
{{- end -}}
{{- end -}}

{{/* Secret and key holding the operator's DSN. */}}
{{- define "ratline.dsnSecretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "ratline.suffixed" (list . "db") -}}
{{- else -}}
{{- .Values.database.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "ratline.dsnSecretKey" -}}
{{- if .Values.postgresql.enabled -}}dsn{{- else -}}{{- .Values.database.existingSecretKey -}}{{- end -}}
{{- end -}}

{{- define "ratline.postgresqlName" -}}
{{- include "ratline.suffixed" (list . "postgresql") -}}
{{- end -}}

{{/* The bundled Postgres password: the values', else the one already stored, else a new one. */}}
{{- define "ratline.postgresqlPassword" -}}
{{- if .Values.postgresql.auth.password -}}
{{- .Values.postgresql.auth.password -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "ratline.suffixed" (list . "db")) -}}
{{- if and $existing $existing.data (hasKey $existing.data "password") -}}
{{- index $existing.data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's container command and flags (mirrors ratline/controller/config.py). */}}
{{- define "ratline.operatorArgs" -}}
{{- $op := .Values.operator -}}
{{- $args := list "python" "-m" "ratline.controller" -}}
{{- $namespaces := include "ratline.watchNamespaces" . | fromJsonArray -}}
{{- if $namespaces -}}
{{- range $namespaces }}{{ $args = append $args (printf "--namespace=%s" .) }}{{ end -}}
{{- else -}}
{{- $args = append $args "--all-namespaces" -}}
{{- end -}}
{{- $args = append $args (printf "--worker-dsn-secret=%s" .Values.database.workerSecret.name) -}}
{{- $args = append $args (printf "--worker-dsn-key=%s" .Values.database.workerSecret.key) -}}
{{- $args = append $args (printf "--metrics-port=%d" (ternary (int .Values.metrics.port) 0 .Values.metrics.enabled)) -}}
{{- if .Values.health.enabled -}}
{{- $args = append $args (printf "--liveness=http://0.0.0.0:%d/healthz" (int .Values.health.port)) -}}
{{- end -}}
{{- $args = append $args (printf "--status-interval=%v" $op.statusInterval) -}}
{{- $args = append $args (printf "--idle-threshold=%v" $op.idleThreshold) -}}
{{- $args = append $args (printf "--max-retries=%d" (int $op.maxRetries)) -}}
{{- $args = append $args (printf "--backoff-initial=%v" $op.backoffInitial) -}}
{{- $args = append $args (printf "--backoff-max=%v" $op.backoffMax) -}}
{{- $args = append $args (printf "--wake-poll=%v" $op.wakePoll) -}}
{{- if $op.peering.enabled -}}
{{- $args = append $args (printf "--peering=%s" $op.peering.name) -}}
{{- else -}}
{{- $args = append $args "--standalone" -}}
{{- end -}}
{{- if $op.deleteFinishedPods }}{{ $args = append $args "--delete-finished-pods" }}{{ end -}}
{{- if $op.retention.keep -}}
{{- $args = append $args (printf "--retention=%s" $op.retention.keep) -}}
{{- $args = append $args (printf "--retention-batch=%d" (int $op.retention.batch)) -}}
{{- end -}}
{{- if $op.verbose }}{{ $args = append $args "--verbose" }}{{ end -}}
{{- range $op.extraArgs }}{{ $args = append $args . }}{{ end -}}
{{- toJson $args -}}
{{- end -}}

{{/* The operator's RBAC rules on its own resources (see templates/rbac.yaml). */}}
{{- define "ratline.rbacRules" -}}
- apiGroups: ["ratline.dev"]
  resources: ["workflowruns"]
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
- apiGroups: ["ratline.dev"]
  resources: ["workflowruns/status"]
  verbs: ["get", "patch"]
- apiGroups: ["ratline.dev"]
  resources: ["workflowruns/finalizers"]
  verbs: ["update"]
- apiGroups: ["ratline.dev"]
  resources: ["workflows"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ratline.dev"]
  resources: ["workflows/status"]
  verbs: ["get", "patch"]
- apiGroups: ["ratline.dev"]
  resources: ["workflowschedules"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["ratline.dev"]
  resources: ["workflowschedules/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
