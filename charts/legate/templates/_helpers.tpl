{{/* Common labels. */}}
{{- define "legate.labels" -}}
app.kubernetes.io/name: legate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "legate.selector" -}}
app.kubernetes.io/name: legate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "legate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "legate.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}
