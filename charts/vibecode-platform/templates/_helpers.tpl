{{/*
Names, labels and small shared pieces of the platform chart.

Objects are named from values (authelia, authelia-postgresql, ...), never from the release
name: the flows and health checks find them by these names (settings identity.authelia_deployment,
health.components), whatever the release is called. Every object names its namespace explicitly
(from `namespaces`), because the chart spans three.
*/}}

{{- define "platform.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object; pass (dict "root" $ "component" "authelia"). */}}
{{- define "platform.labels" -}}
app.kubernetes.io/part-of: vibecode
app.kubernetes.io/instance: {{ .root.Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service | quote }}
helm.sh/chart: {{ include "platform.chart" .root | quote }}
{{- with .component }}
app.kubernetes.io/component: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component's pods (immutable on a StatefulSet: keep to two). */}}
{{- define "platform.selector" -}}
app.kubernetes.io/part-of: vibecode
app.kubernetes.io/name: {{ . | quote }}
{{- end -}}

{{- define "platform.portalHost" -}}
{{- default (printf "auth.%s" .Values.domain) .Values.portal.host -}}
{{- end -}}

{{/* The HR gateway's public host (deployments/gateway attaches to the hr listener with it). */}}
{{- define "platform.hrHost" -}}
{{- default (printf "hr.%s" .Values.domain) .Values.hr.host -}}
{{- end -}}

{{- define "platform.portalUrl" -}}
{{- printf "https://%s" (include "platform.portalHost" .) -}}
{{- end -}}

{{/*
An image reference from {repository, tag, digest}: repository@digest; with images.allowUnpinned
and no digest, repository:tag (a locally built image). Pass (dict "root" $ "image" .Values.x.image "what" "x").
*/}}
{{- define "platform.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else if .root.Values.images.allowUnpinned -}}
{{- printf "%s:%s" .image.repository (required (printf "%s.image.tag is required when it has no digest" .what) .image.tag) -}}
{{- else -}}
{{- fail (printf "%s.image has no digest: every image is pinned by digest (set images.allowUnpinned only for images built on the node)" .what) -}}
{{- end -}}
{{- end -}}

{{/* In-cluster DNS name of a Service in the platform namespace. */}}
{{- define "platform.svc" -}}
{{- printf "%s.%s.svc.cluster.local" .name .root.Values.namespaces.platform -}}
{{- end -}}

{{- define "platform.postgresHost" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "platform.svc" (dict "root" . "name" .Values.postgresql.name) -}}
{{- else -}}
{{- required "postgresql.host is required when postgresql.enabled is false" .Values.postgresql.host -}}
{{- end -}}
{{- end -}}

{{- define "platform.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{- include "platform.svc" (dict "root" . "name" .Values.redis.name) -}}
{{- else -}}
{{- required "redis.host is required when redis.enabled is false" .Values.redis.host -}}
{{- end -}}
{{- end -}}

{{/* The restricted container security context every container of ours gets. */}}
{{- define "platform.containerSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The pod-level security context (Pod Security "restricted"). Pass (dict "uid" 1 "gid" 1 "fsGroup" 1). */}}
{{- define "platform.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .gid }}
{{- with .fsGroup }}
fsGroup: {{ . }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Every address range inside the cluster (pods, Services, nodes) plus the denied extras. */}}
{{- define "platform.clusterCIDRs" -}}
{{- $n := .Values.networkPolicies -}}
{{- toJson (concat $n.podCIDRs $n.serviceCIDRs $n.nodeCIDRs $n.deniedCIDRs) -}}
{{- end -}}

{{/* A NetworkPolicy peer: "anywhere outside the cluster" (IPv4). */}}
{{- define "platform.outsideCluster" -}}
- ipBlock:
    cidr: 0.0.0.0/0
    except: {{ include "platform.clusterCIDRs" . }}
{{- end -}}

{{/* The egress rule to the cluster DNS (UDP and TCP). */}}
{{- define "platform.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.namespaces.dns | quote }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicies.dnsPodLabels | nindent 10 }}
  ports:
    - {protocol: UDP, port: {{ .Values.networkPolicies.dnsPort }}}
    - {protocol: TCP, port: {{ .Values.networkPolicies.dnsPort }}}
{{- end -}}

{{/* A peer: every pod of the ops namespace (the flows, the prober, the Prefect worker). */}}
{{- define "platform.opsPeer" -}}
- namespaceSelector:
    matchLabels:
      vibecode.dev/ops: "true"
{{- end -}}

{{/* A peer: Envoy Gateway's proxy pods in their namespace. */}}
{{- define "platform.proxyPeer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Values.namespaces.gatewaySystem | quote }}
  podSelector:
    matchLabels:
      {{- toYaml .Values.gateway.proxyPodLabels | nindent 6 }}
{{- end -}}

{{/* The backup and restore Jobs' pods (tasks/backup/jobs.py labels them). */}}
{{- define "platform.backupJobSelector" -}}
matchLabels:
  app.kubernetes.io/part-of: vibecode
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: [backup, prerestore, restore]
{{- end -}}

{{/* The TOTP provisioning Jobs' pods (tasks/people/totp.py labels them). */}}
{{- define "platform.totpJobSelector" -}}
matchLabels:
  app.kubernetes.io/part-of: vibecode
  app.kubernetes.io/component: totp-provision
{{- end -}}

{{/* The Kubernetes-wide name label of a namespace (set by Kubernetes >= 1.21; the chart sets it too). */}}
{{- define "platform.nsPeer" -}}
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ . | quote }}
{{- end -}}
