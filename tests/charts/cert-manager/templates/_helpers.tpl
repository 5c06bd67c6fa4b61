{{/* repository@digest, else repository:tag (default: the app version), as cert-manager's "image" helper */}}
{{- define "image" -}}
{{- $img := index . 0 -}}{{- $default := index . 1 -}}
{{- $img.repository -}}{{- if $img.digest -}}@{{ $img.digest }}{{- else -}}:{{ $img.tag | default $default }}{{- end -}}
{{- end -}}
