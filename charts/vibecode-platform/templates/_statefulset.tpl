{{/*
The shape the platform's three stores share: a one-replica StatefulSet under Pod Security
"restricted" with one kept volume, and its ClusterIP Service. Pass
(dict "root" $ "c" .Values.x "what" "x" "port" 5432 "containers" "<yaml>" "initContainers" "<yaml>" "volumes" "<yaml>").
*/}}
{{- define "platform.store" -}}
{{- $root := .root -}}
{{- $c := .c -}}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $c.name }}
  namespace: {{ $root.Values.namespaces.platform }}
  labels:
    {{- include "platform.labels" (dict "root" $root "component" .what) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "platform.selector" $c.name | nindent 4 }}
  ports:
    - name: {{ .portName }}
      port: {{ .port }}
      targetPort: {{ .portName }}
      protocol: TCP
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $c.name }}
  namespace: {{ $root.Values.namespaces.platform }}
  labels:
    {{- include "platform.labels" (dict "root" $root "component" .what) | nindent 4 }}
    {{- include "platform.selector" $c.name | nindent 4 }}
spec:
  replicas: 1
  serviceName: {{ $c.name }}
  selector:
    matchLabels:
      {{- include "platform.selector" $c.name | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "platform.selector" $c.name | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- include "platform.podSecurity" (dict "uid" $c.runAsUser "gid" $c.fsGroup "fsGroup" $c.fsGroup) | nindent 8 }}
      {{- with .initContainers }}
      initContainers:
        {{- . | trim | nindent 8 }}
      {{- end }}
      containers:
        {{- .containers | trim | nindent 8 }}
      volumes:
        {{- .volumes | trim | nindent 8 }}
  # The data outlives the release: StatefulSet claims are never deleted by helm.
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "platform.selector" $c.name | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        {{- with $c.storage.storageClass }}
        storageClassName: {{ . | quote }}
        {{- end }}
        resources:
          requests:
            storage: {{ $c.storage.size | quote }}
{{- end -}}
