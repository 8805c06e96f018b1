{{/* Names and labels of the web UI (kept apart from _helpers.tpl, which others edit). */}}

{{- define "ratline.uiSelectorLabels" -}}
{{ include "ratline.selectorLabels" . }}
app.kubernetes.io/component: ui
{{- end -}}

{{- define "ratline.uiServiceAccountName" -}}
{{- if .Values.ui.serviceAccount.create -}}
{{- default (include "ratline.suffixed" (list . "ui")) .Values.ui.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.ui.serviceAccount.name -}}
{{- end -}}
{{- end -}}
