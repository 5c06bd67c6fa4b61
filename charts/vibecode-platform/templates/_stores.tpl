{{/* Volumes of a store's pod: the listed keys of the platform Secret, and emptyDirs. */}}
{{- define "platform.storeVolumes" -}}
{{- if .keys }}
- name: secrets
  secret:
    secretName: {{ .root.Values.secrets.platform }}
    defaultMode: 0440
    items:
      {{- range .keys }}
      - {key: {{ . }}, path: {{ . }}}
      {{- end }}
{{- end }}
{{- range .extra }}
- name: {{ . }}
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
{{- end -}}

{{/* PostgreSQL (official image), run directly as its postgres user; the password from a file. */}}
{{- define "platform.postgresContainers" -}}
{{- $p := .Values.postgresql -}}
- name: postgres
  image: {{ include "platform.image" (dict "root" . "image" $p.image "what" "postgresql") | quote }}
  imagePullPolicy: {{ .Values.images.pullPolicy }}
  env:
    - {name: POSTGRES_USER, value: {{ $p.username | quote }}}
    - {name: POSTGRES_DB, value: {{ $p.database | quote }}}
    - {name: POSTGRES_PASSWORD_FILE, value: /secrets/postgres-password}
    # A subdirectory: initdb refuses a mount point that is not empty (lost+found).
    - {name: PGDATA, value: /var/lib/postgresql/data/pgdata}
  ports:
    - {name: postgres, containerPort: {{ $p.port }}, protocol: TCP}
  readinessProbe:
    exec:
      command: [pg_isready, -h, 127.0.0.1, -p, {{ $p.port | quote }}, -U, {{ $p.username | quote }}, -d, {{ $p.database | quote }}]
    periodSeconds: 5
  livenessProbe:
    tcpSocket: {port: postgres}
    initialDelaySeconds: 30
    periodSeconds: 30
  resources:
    {{- toYaml $p.resources | nindent 4 }}
  securityContext:
    {{- include "platform.containerSecurity" (dict "uid" $p.runAsUser) | nindent 4 }}
  volumeMounts:
    - {name: data, mountPath: /var/lib/postgresql/data}
    - {name: secrets, mountPath: /secrets, readOnly: true}
    - {name: run, mountPath: /var/run/postgresql}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/*
Redis reads no password file, and a password in argv is readable by anyone listing the node's
processes: an init container writes a config file (shell builtins only: the password is in
no process's argv) and redis-server reads it.
*/}}
{{- define "platform.redisInit" -}}
{{- $r := .Values.redis -}}
- name: config
  image: {{ include "platform.image" (dict "root" . "image" $r.image "what" "redis") | quote }}
  imagePullPolicy: {{ .Values.images.pullPolicy }}
  command: [/bin/sh, -c]
  args:
    - umask 077; { printf 'requirepass '; read -r pw < /secrets/redis-password; printf '%s\n' "$pw"; } > /run/redis/redis.conf
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {cpu: 100m, memory: 32Mi}
  securityContext:
    {{- include "platform.containerSecurity" (dict "uid" $r.runAsUser) | nindent 4 }}
  volumeMounts:
    - {name: secrets, mountPath: /secrets, readOnly: true}
    - {name: run, mountPath: /run/redis}
{{- end -}}

{{- define "platform.redisContainers" -}}
{{- $r := .Values.redis -}}
- name: redis
  image: {{ include "platform.image" (dict "root" . "image" $r.image "what" "redis") | quote }}
  imagePullPolicy: {{ .Values.images.pullPolicy }}
  command: [redis-server]
  args: [/run/redis/redis.conf, --port, {{ $r.port | quote }}, --dir, /data, --appendonly, "yes"]
  ports:
    - {name: redis, containerPort: {{ $r.port }}, protocol: TCP}
  readinessProbe:
    tcpSocket: {port: redis}
    periodSeconds: 5
  livenessProbe:
    tcpSocket: {port: redis}
    initialDelaySeconds: 15
    periodSeconds: 30
  resources:
    {{- toYaml $r.resources | nindent 4 }}
  securityContext:
    {{- include "platform.containerSecurity" (dict "uid" $r.runAsUser) | nindent 4 }}
  volumeMounts:
    - {name: data, mountPath: /data}
    - {name: run, mountPath: /run/redis, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/*
SeaweedFS: one `weed mini` process (master, volume, filer and S3) on the data volume. Its
internal components talk over loopback (-ip); S3 listens on the pod's addresses (-ip.bind), and
the NetworkPolicy admits port {{ "s3" }} only. Credentials: the platform Secret's S3 keys, as the
AWS_* variables weed reads for its admin identity.
*/}}
{{- define "platform.seaweedContainers" -}}
{{- $s := .Values.seaweedfs -}}
- name: seaweedfs
  image: {{ include "platform.image" (dict "root" . "image" $s.image "what" "seaweedfs") | quote }}
  imagePullPolicy: {{ .Values.images.pullPolicy }}
  command: {{ toJson $s.command }}
  args:
    - mini
    - -dir=/data
    - -ip=127.0.0.1
    - -ip.bind=0.0.0.0
    - {{ printf "-s3.port=%d" (int $s.port) }}
    - {{ printf "-bucket=%s" $s.bucket }}
    - -admin.ui=false
    - -webdav=false
  env:
    - name: AWS_ACCESS_KEY_ID
      valueFrom:
        secretKeyRef: {name: {{ .Values.secrets.platform }}, key: s3-access-key-id}
    - name: AWS_SECRET_ACCESS_KEY
      valueFrom:
        secretKeyRef: {name: {{ .Values.secrets.platform }}, key: s3-secret-access-key}
  ports:
    - {name: s3, containerPort: {{ $s.port }}, protocol: TCP}
  readinessProbe:
    tcpSocket: {port: s3}
    periodSeconds: 5
  livenessProbe:
    tcpSocket: {port: s3}
    initialDelaySeconds: 30
    periodSeconds: 30
  resources:
    {{- toYaml $s.resources | nindent 4 }}
  securityContext:
    {{- include "platform.containerSecurity" (dict "uid" $s.runAsUser) | nindent 4 }}
  volumeMounts:
    - {name: data, mountPath: /data}
    - {name: tmp, mountPath: /tmp}
{{- end -}}
