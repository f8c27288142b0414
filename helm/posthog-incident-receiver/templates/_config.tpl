{{/*
The receiver's config.yaml. The chart owns the parts that depend on how it deploys the pod
(listen address and port, where state and secrets are mounted, how Kubernetes is reached);
everything else comes from .Values.config, merged over these defaults (values win).
*/}}
{{- define "receiver.config" -}}
{{- $secrets := include "receiver.secretsDir" . }}
{{- $publicUrl := default (printf "http://%s.%s.svc:%d" (include "receiver.fullname" .) .Release.Namespace (int .Values.service.port)) .Values.publicUrl }}
{{- $defaults := dict
  "server" (dict
    "host" "0.0.0.0"
    "port" (int .Values.service.port)
    "public_url" $publicUrl)
  "webhook" (dict
    "bearer_token" (dict "file" (printf "%s/webhook-token" $secrets)))
  "store" (dict
    "path" (printf "%s/receiver.sqlite3" (include "receiver.stateDir" .)))
  "logging" (dict
    "format" "json")
}}
{{- $merged := mustMergeOverwrite $defaults (deepCopy (default (dict) .Values.config)) }}
{{- toYaml $merged }}
{{- end }}
