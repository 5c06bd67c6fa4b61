{{- define "gateway.name" -}}vibecode-gateway{{- end -}}

{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: vibecode-gateway
app.kubernetes.io/part-of: vibecode
{{- end -}}

{{- define "gateway.labels" -}}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}
