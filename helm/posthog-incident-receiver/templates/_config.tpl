{{/*
The receiver's config.yaml. The chart owns the parts that depend on how it deploys the pod:
listen address and port, where state and secrets are mounted, how Kubernetes is reached, and
which objects the Role grants access to (the remediation target, whose pods the evidence
reads too). Without HA the store is the SQLite file on the state volume; with HA it is
PostgreSQL, its connection URI read from the file mounted from ha.postgres.existingSecret.
Everything else comes from .Values.config, merged over these settings (values win). The test
suite runs `posthog-receiver check-config` on the result, so every key here exists in the
receiver's settings model.
*/}}
{{- define "receiver.config" -}}
{{- $secrets := include "receiver.secretsDir" . }}
{{- $state := include "receiver.stateDir" . }}
{{- $integration := .Values.integration }}
{{- $remediation := .Values.remediation }}
{{- $target := include "receiver.targetNamespace" . }}
{{- $publicUrl := default (printf "http://%s.%s.svc:%d" (include "receiver.fullname" .) .Release.Namespace (int .Values.service.port)) .Values.publicUrl }}
{{- $targetCfg := dict
  "namespace" $target
  "deployment" $integration.deployment
  "container" $integration.container
  "pod_selector" $integration.podSelector
  "api_key_secret" $integration.apiKeySecret.name
  "api_key_key" $integration.apiKeySecret.key }}
{{- if $remediation.copyApiKey.enabled }}
{{- $_ := set $targetCfg "source_secret" $remediation.copyApiKey.sourceSecret.name }}
{{- $_ := set $targetCfg "source_key" $remediation.copyApiKey.sourceSecret.key }}
{{- end }}
{{- $defaults := dict
  "server" (dict
    "host" "0.0.0.0"
    "port" (int .Values.service.port)
    "public_url" $publicUrl)
  "webhook" (dict
    "bearer_token" (dict "file" (printf "%s/webhook-token" $secrets)))
  "ui" (dict
    "users" (list (dict "username" "oncall" "password" (dict "file" (printf "%s/webhook-token" $secrets)))))
  "store" (dict
    "path" (printf "%s/receiver.sqlite3" $state))
  "logging" (dict
    "format" "json")
  "kubernetes" (dict
    "mode" "in_cluster")
  "remediation" (dict
    "enabled" $remediation.enabled
    "dry_run" $remediation.dryRun
    "target" $targetCfg)
  "evidence" (dict
    "directory" (printf "%s/evidence" $state))
}}
{{- if .Values.ha.enabled }}
{{- $_ := set $defaults "store" (dict
  "backend" "postgres"
  "postgres" (dict "dsn" (dict "file" (printf "%s/dsn" (include "receiver.postgresDir" .))))) }}
{{- end }}
{{- if $remediation.killSwitch.enabled }}
{{- $_ := set $defaults.remediation "kill_switch_file" (printf "%s/stop" (include "receiver.killSwitchDir" .)) }}
{{- end }}
{{- with .Values.prometheusUrl }}
{{- $_ := set $defaults "prometheus" (dict "url" .) }}
{{- end }}
{{- $notify := dict }}
{{- if .Values.notify.pagerduty.enabled }}
{{- $_ := set $notify "pagerduty" (dict "routing_key" (dict "file" (printf "%s/pagerduty-routing-key" $secrets))) }}
{{- end }}
{{- if .Values.notify.statuspage.enabled }}
{{- $_ := set $notify "statuspage" (dict "api_key" (dict "file" (printf "%s/statuspage-api-key" $secrets))) }}
{{- end }}
{{- if and .Values.notify.slack.enabled .Values.notify.slack.threads }}
{{- $_ := set $notify "slack" (dict "bot_token" (dict "file" (printf "%s/slack-bot-token" $secrets))) }}
{{- else if .Values.notify.slack.enabled }}
{{- $_ := set $notify "slack" (dict "webhook_url" (dict "file" (printf "%s/slack-webhook-url" $secrets))) }}
{{- end }}
{{- if .Values.notify.pagerduty.webhook }}
{{- if not .Values.notify.pagerduty.enabled }}
{{- fail "notify.pagerduty.webhook needs notify.pagerduty.enabled" }}
{{- end }}
{{- $_ := set $notify.pagerduty "webhook" (dict "secrets" (list (dict "file" (printf "%s/pagerduty-webhook-secret" $secrets)))) }}
{{- end }}
{{- if .Values.notify.slack.interactive }}
{{- if not .Values.notify.slack.enabled }}
{{- fail "notify.slack.interactive needs notify.slack.enabled" }}
{{- end }}
{{- $_ := set $notify.slack "signing_secret" (dict "file" (printf "%s/slack-signing-secret" $secrets)) }}
{{- end }}
{{- if $notify }}
{{- $_ := set $defaults "notify" $notify }}
{{- end }}
{{- if .Values.ui.signedLinks }}
{{- $_ := set $defaults.ui "link_key" (dict "file" (printf "%s/ui-link-key" $secrets)) }}
{{- end }}
{{- $merged := mustMergeOverwrite $defaults (deepCopy (default (dict) .Values.config)) }}
{{- if .Values.notify.statuspage.enabled }}
{{- $page := $merged.notify.statuspage }}
{{- if not (and $page.page_id $page.component_id) }}
{{- fail "notify.statuspage.enabled needs config.notify.statuspage.page_id and component_id" }}
{{- end }}
{{- end }}
{{- if and .Values.notify.slack.enabled .Values.notify.slack.threads }}
{{- if not $merged.notify.slack.channel }}
{{- fail "notify.slack.threads needs config.notify.slack.channel: the channel's ID (C...)" }}
{{- end }}
{{- end }}
{{- toYaml $merged }}
{{- end }}
