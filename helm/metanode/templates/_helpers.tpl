{{/* Labels every object carries; the selector uses the first two. */}}
{{- define "metanode.selector" -}}
app.kubernetes.io/name: metanode
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- define "metanode.labels" -}}
{{ include "metanode.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
