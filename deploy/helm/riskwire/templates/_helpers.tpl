{{/*
Names, labels and the gateway's config.yaml. Paths inside the container are fixed here
and nowhere else: the image (deploy/Dockerfile) makes /var/lib/riskwire and /tmp the
only writable places, and these are mounted as volumes.
*/}}

{{- define "riskwire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "riskwire.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "riskwire.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "riskwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "riskwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "riskwire.labels" -}}
helm.sh/chart: {{ include "riskwire.chart" . }}
{{ include "riskwire.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: riskwire
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "riskwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "riskwire.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "riskwire.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the admin token and the audit key. */}}
{{- define "riskwire.secretName" -}}
{{- if eq .Values.secrets.source "existing" -}}
{{- required "secrets.existingSecret is required when secrets.source is existing" .Values.secrets.existingSecret -}}
{{- else -}}
{{- printf "%s-secrets" (include "riskwire.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "riskwire.routesConfigMap" -}}
{{- default (printf "%s-routes" (include "riskwire.fullname" .)) .Values.routes.existingConfigMap -}}
{{- end -}}

{{- define "riskwire.auditClaimName" -}}
{{- default (printf "%s-audit" (include "riskwire.fullname" .)) .Values.audit.persistence.existingClaim -}}
{{- end -}}

{{/* SIGTERM to exit: preStop sleep, data-plane drain, shadow drain, closing margin. */}}
{{- define "riskwire.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown -}}
{{- add (int (ceil $s.preStopSleepSeconds)) (int (ceil $s.drainGraceSeconds)) (int (ceil $s.shadowDrainGraceSeconds)) (int (ceil $s.marginSeconds)) -}}
{{- end -}}

{{/*
The gateway's settings file (gateway/settings.py). The keys below are derived from the
chart's values and win over .Values.config, which supplies everything else.
*/}}
{{- define "riskwire.gatewayConfig" -}}
{{- $admin := dict "enabled" .Values.admin.enabled "host" "0.0.0.0" "port" .Values.ports.admin -}}
{{- if .Values.admin.enabled -}}
{{- $_ := set $admin "token_file" "/etc/riskwire/secrets/admin/token" -}}
{{- if .Values.admin.tls.enabled -}}
{{- $_ := set $admin "tls_cert_file" "/etc/riskwire/tls/tls.crt" -}}
{{- $_ := set $admin "tls_key_file" "/etc/riskwire/tls/tls.key" -}}
{{- $_ := set $admin "tls_client_ca_file" "/etc/riskwire/tls/ca.crt" -}}
{{- end -}}
{{- end -}}
{{- $audit := dict "enabled" .Values.audit.enabled -}}
{{- if .Values.audit.enabled -}}
{{- $_ := set $audit "directory" "/var/lib/riskwire/audit" -}}
{{- $_ := set $audit "key_file" "/etc/riskwire/secrets/audit/key" -}}
{{- $_ := set $audit "create_key" false -}}
{{- end -}}
{{- $managed := dict
  "grpc" (dict "host" "0.0.0.0" "port" .Values.ports.data)
  "admin" $admin
  "metrics" (dict "enabled" true "host" "0.0.0.0" "port" .Values.ports.metrics)
  "models" (dict "repository" .Values.models.repository "require_approval" .Values.gateway.requireApproval)
  "shadow" (dict "drain_grace_s" .Values.shutdown.shadowDrainGraceSeconds)
  "audit" $audit
  "routes_file" "/etc/riskwire/routes/routes.yaml"
  "routes_poll_s" .Values.gateway.routesPollSeconds
  "state_dir" "/var/lib/riskwire/state"
  "workers" .Values.gateway.workers
  "drain_grace_s" .Values.shutdown.drainGraceSeconds
-}}
{{- toYaml (mustMergeOverwrite (deepCopy .Values.config) $managed) -}}
{{- end -}}
