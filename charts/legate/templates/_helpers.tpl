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

{{/* The image of a component: (list $ "controller") or (list $ "proxy").
controller.image and proxy.image override image field by field. */}}
{{- define "legate.imageValues" -}}
{{- $root := index . 0 -}}
{{- $c := index $root.Values (index . 1) -}}
{{- toYaml (merge (deepCopy ($c.image | default dict)) $root.Values.image) -}}
{{- end -}}

{{- define "legate.image" -}}
{{- $i := include "legate.imageValues" . | fromYaml -}}
{{ $i.repository }}:{{ $i.tag }}
{{- end -}}

{{- define "legate.pullPolicy" -}}
{{- $i := include "legate.imageValues" . | fromYaml -}}
{{ $i.pullPolicy }}
{{- end -}}

{{/* Pod spec fields shared by the controller and the proxy: (list $
"controller") or (list $ "proxy"). Empty when nothing is set, so the
default render does not change. imagePullSecrets items are Secret names
or {name: ...} (both shapes are in use: Bitnami's pullSecrets are names,
Kubernetes' own field is objects). */}}
{{- define "legate.podSpecExtras" -}}
{{- $root := index . 0 -}}
{{- $c := index $root.Values (index . 1) -}}
{{- include "legate.imagePullSecrets" $root }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* imagePullSecrets alone (the certgen Job, which has no scheduling
values of its own). */}}
{{- define "legate.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
- name: {{ if kindIs "string" . }}{{ . }}{{ else }}{{ .name }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "legate.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}
