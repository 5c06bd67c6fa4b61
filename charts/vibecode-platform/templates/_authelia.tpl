{{/*
Authelia's configuration.yml. No secret value is in it: each secret reaches Authelia through
a *_FILE environment variable naming a file mounted from the platform Secret (see
authelia.yaml), so this Secret can be read by the TOTP Job and shown in a diff without leaking.
*/}}
{{- define "platform.autheliaConfig" -}}
{{- $a := .Values.authelia -}}
{{- $portal := include "platform.portalHost" . -}}
{{- $domainRe := .Values.domain | replace "." "\\." -}}
theme: auto
default_2fa_method: totp
server:
  address: {{ printf "tcp://:%d/" (int $a.port) | quote }}
  endpoints:
    authz:
      # /api/authz/ext-authz/: Envoy Gateway's SecurityPolicy asks here about every workspace
      # request. Only the session cookie authenticates (no Basic: one factor is never enough).
      ext-authz:
        implementation: ExtAuthz
        authn_strategies:
          - name: CookieSession
log:
  level: {{ $a.logLevel }}
  format: json
totp:
  issuer: {{ $a.totpIssuer | quote }}
identity_validation:
  reset_password:
    jwt_lifespan: 5m
authentication_backend:
  file:
    # The Secret onboarding writes (mounted read-only); the flows roll this Deployment when it
    # changes, so the file is read at start and not watched.
    path: /users/users_database.yml
    watch: false
    password:
      # Authelia's defaults, stated: argon2id, t=3, m=64 MiB, p=4 (what tasks.people.identity hashes with).
      algorithm: argon2
      argon2:
        variant: argon2id
        iterations: 3
        memory: 65536
        parallelism: 4
        key_length: 32
        salt_length: 16
access_control:
  # Nothing is allowed unless a rule says so.
  default_policy: deny
  rules:
    # The portal itself (sign-in, second factor, password reset).
    - domain: {{ $portal | quote }}
      policy: bypass
    # Each workspace host <username>.<domain> is reachable by its owner only, with two factors:
    # Authelia requires the named group User to equal the signed-in username. One rule for
    # everyone, so no rule changes per hire, and no group (admins included) that opens someone
    # else's workspace. The pattern is tasks.core.names' username shape ([a-z0-9-], so not \w).
    - domain_regex: {{ printf "^(?P<User>[a-z][a-z0-9-]{0,30}[a-z0-9])\\.%s$" $domainRe | squote }}
      policy: two_factor
session:
  name: vibecode_session
  same_site: lax
  expiration: {{ $a.session.expiration }}
  inactivity: {{ $a.session.inactivity }}
  remember_me: {{ $a.session.rememberMe }}
  cookies:
    - domain: {{ .Values.domain | quote }}
      authelia_url: {{ include "platform.portalUrl" . | quote }}
  redis:
    host: {{ include "platform.redisHost" . | quote }}
    port: {{ .Values.redis.port }}
regulation:
  modes:
    - user
  max_retries: {{ $a.regulation.maxRetries }}
  find_time: {{ $a.regulation.findTime }}
  ban_time: {{ $a.regulation.banTime }}
storage:
  # Where the TOTP import Job writes too (tasks.people.totp).
  postgres:
    address: {{ printf "tcp://%s:%d" (include "platform.postgresHost" .) (int .Values.postgresql.port) | quote }}
    database: {{ .Values.postgresql.database | quote }}
    username: {{ .Values.postgresql.username | quote }}
notifier:
  {{- if $a.smtp.host }}
  smtp:
    address: {{ printf "%s://%s:%d" $a.smtp.scheme $a.smtp.host (int $a.smtp.port) | quote }}
    {{- with $a.smtp.username }}
    username: {{ . | quote }}
    {{- end }}
    sender: {{ $a.smtp.sender | quote }}
  {{- else }}
  # No SMTP server configured: notifications go to a file in the pod (a cluster without mail only).
  filesystem:
    filename: /tmp/notification.txt
  {{- end }}
ntp:
  # The NetworkPolicy lets Authelia reach its stores, SMTP and DNS only; the nodes keep time.
  disable_startup_check: true
{{- end -}}
