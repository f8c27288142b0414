{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, unless overridden. */}}
{{- define "receiver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-qualified name used for every object this chart creates. */}}
{{- define "receiver.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "receiver.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "receiver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "receiver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "receiver.labels" -}}
helm.sh/chart: {{ include "receiver.chart" . }}
{{ include "receiver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: posthog-incident-response
{{- end }}

{{- define "receiver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "receiver.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace of the PostHog integration the receiver watches and remediates. */}}
{{- define "receiver.targetNamespace" -}}
{{- default .Release.Namespace .Values.integration.namespace }}
{{- end }}

{{/* The Secret holding the receiver's own credentials (created here or brought by the user). */}}
{{- define "receiver.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "receiver.fullname" . }}
{{- end }}
{{- end }}

{{/* Fixed paths inside the container; the config file refers to them. */}}
{{- define "receiver.configDir" -}}/etc/posthog-receiver{{- end }}
{{- define "receiver.secretsDir" -}}/etc/posthog-receiver/secrets{{- end }}
{{- define "receiver.stateDir" -}}/var/lib/posthog-receiver{{- end }}
{{- define "receiver.killSwitchDir" -}}/etc/posthog-receiver/kill-switch{{- end }}
{{- define "receiver.postgresDir" -}}/etc/posthog-receiver/postgres{{- end }}

{{/*
Pods of the Deployment. Without HA one pod at most: replicas on their own SQLite files would
each page, notify and remediate alone. With HA ha.replicas (2 or more) on PostgreSQL, and the
connection URI from an existing Secret. The checks repeat values.schema.json's for renders
that skip the schema, with the reason spelled out.
*/}}
{{- define "receiver.replicas" -}}
{{- if .Values.ha.enabled }}
{{- if not .Values.ha.postgres.existingSecret }}
{{- fail "ha.enabled=true needs ha.postgres.existingSecret: the name of an existing Secret holding the PostgreSQL connection URI (key ha.postgres.key, default uri; CloudNativePG's <cluster>-app Secret has it). The replicas share their state through that database." }}
{{- end }}
{{- if lt (int .Values.ha.replicas) 2 }}
{{- fail (printf "ha.replicas=%d is refused: HA needs 2 or more replicas (one leads, the others take webhooks and stand by)." (int .Values.ha.replicas)) }}
{{- end }}
{{- .Values.ha.replicas }}
{{- else }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "replicaCount=%d is refused: without HA each replica would keep its own SQLite state and page, notify and remediate on its own. Run one replica, or set ha.enabled=true (several replicas on PostgreSQL, ha.replicas)." (int .Values.replicaCount)) }}
{{- end }}
{{- .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* The ReadWriteMany claim for the evidence bundles with HA (created here or brought). */}}
{{- define "receiver.evidenceClaimName" -}}
{{- default (printf "%s-evidence" (include "receiver.fullname" .)) .Values.ha.evidence.pvc.existingClaim }}
{{- end }}

{{- define "receiver.killSwitchName" -}}
{{- default (printf "%s-kill-switch" (include "receiver.fullname" .)) .Values.remediation.killSwitch.configMapName }}
{{- end }}

{{- define "receiver.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Which files the Secret volume provides: a list of {key, file} where "key" is the key in the
Secret and "file" the file name under the secrets directory. The webhook token is always
needed; each notification channel only when it is enabled.
*/}}
{{- define "receiver.secretItems" -}}
{{- $keys := .Values.secrets.keys }}
{{- $items := list (dict "key" $keys.webhookToken "file" "webhook-token") }}
{{- if .Values.notify.pagerduty.enabled }}
{{- $items = append $items (dict "key" $keys.pagerdutyRoutingKey "file" "pagerduty-routing-key") }}
{{- end }}
{{- if .Values.notify.statuspage.enabled }}
{{- $items = append $items (dict "key" $keys.statuspageApiKey "file" "statuspage-api-key") }}
{{- end }}
{{- if and .Values.notify.slack.enabled .Values.notify.slack.threads }}
{{- $items = append $items (dict "key" $keys.slackBotToken "file" "slack-bot-token") }}
{{- else if .Values.notify.slack.enabled }}
{{- $items = append $items (dict "key" $keys.slackWebhookUrl "file" "slack-webhook-url") }}
{{- end }}
{{- if .Values.notify.pagerduty.webhook }}
{{- $items = append $items (dict "key" $keys.pagerdutyWebhookSecret "file" "pagerduty-webhook-secret") }}
{{- end }}
{{- if .Values.notify.slack.interactive }}
{{- $items = append $items (dict "key" $keys.slackSigningSecret "file" "slack-signing-secret") }}
{{- end }}
{{- if .Values.ui.signedLinks }}
{{- $items = append $items (dict "key" $keys.uiLinkKey "file" "ui-link-key") }}
{{- end }}
{{- toJson $items }}
{{- end }}
