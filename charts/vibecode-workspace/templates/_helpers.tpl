{{/*
Names and labels for one workspace.

Everything is named after .Values.username, never the release name: the Ops flows
find a person's objects by name (ws-<username>) and by the vibecode.dev/user label,
whatever the release happened to be called.
*/}}

{{/* The username, or a render error. The schema checks its shape; this catches "". */}}
{{- define "workspace.username" -}}
{{- required "username is required (e.g. --set username=alice)" .Values.username -}}
{{- end -}}

{{/* ws-<username>: Deployment, Service, ServiceAccount, HTTPRoute, NetworkPolicy. */}}
{{- define "workspace.fullname" -}}
{{- printf "ws-%s" (include "workspace.username" .) -}}
{{- end -}}

{{- define "workspace.host" -}}
{{- printf "%s.%s" (include "workspace.username" .) .Values.domain -}}
{{- end -}}

{{- define "workspace.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels. Immutable on a Deployment once created, so keep them to the two
that identify a workspace and never add to them.
*/}}
{{- define "workspace.selectorLabels" -}}
app.kubernetes.io/name: code-server
vibecode.dev/user: {{ include "workspace.username" . | quote }}
{{- end -}}

{{/* Labels on every object the chart creates. */}}
{{- define "workspace.labels" -}}
{{ include "workspace.selectorLabels" . }}
app.kubernetes.io/part-of: vibecode
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ include "workspace.chart" . | quote }}
{{- end -}}

{{/*
Labels on the pod template: no chart/version labels, so a chart bump alone does not
restart someone's IDE (the Recreate strategy would mean downtime).
*/}}
{{- define "workspace.podLabels" -}}
{{ include "workspace.selectorLabels" . }}
app.kubernetes.io/part-of: vibecode
{{- end -}}
